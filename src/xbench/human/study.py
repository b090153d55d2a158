"""Human studies of a finished suite: the seed paper's crowd experiments, exported for people to answer.

Two designs, as Merkle et al. (2025) ran them:

- `pairwise` (their experiment 1): one image, the explanations of two variants (compression rates) side by side, sides
  randomised; people answer "left", "right" or "equally reasonable".
- `identify` (their experiment 2): one occlusion map (only the top pixels of an explanation shown); people name the
  class, or "don't know".

Stimuli are drawn here, on the presentation side, from the raw arrays each cell result keeps (its first
`gallery_images` explained images and their attributions); nothing here runs a model. An export writes:

    stimuli/*.png        one picture per task; the names say nothing about the answer
    manifest.csv         one row per stimulus: what it shows (and, for attention checks, the known answer)
    study.html           a self-contained study page (no server, no CDN): tasks, answers with timings, CSV download
    mturk/input.csv      an MTurk batch input file (stimulus URLs, `per_task` per HIT)
    mturk/template.html  the crowd-html HIT template whose answer fields `xbench human analyse` reads by default
    instructions.txt     what participants are told (the seed's instructions, adapted)
    study.json           how the study was made (suite, cells, design, pairs, view, top share, seed)

Just over 450 lines, one purpose: exporting a study (stimuli, manifest, study page, MTurk files) from cell results,
in the formats `human.answers` reads back.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xbench.analyse.crowd import DONT_KNOW
from xbench.core.errors import XbenchInputError
from xbench.core.results import CellResult
from xbench.core.spreadsheet import csv_safe
from xbench.present import drawing

Design = Literal["pairwise", "identify"]
View = Literal["heatmap", "occlusion"]
PAIRWISE_ANSWERS = ("left", "right", "equal")  # the template's radio buttons, and the offline page's answers
CHECK_VARIANT = "check"  # the variant label of an attention check's planted side (pairwise) or original image
MANIFEST_COLUMNS: dict[str, tuple[str, ...]] = {
    "pairwise": ("stimulus", "image_id", "class", "left", "right", "view", "expected"),
    "identify": ("stimulus", "image_id", "class", "variant", "view", "expected"),
}
STUDY_COLUMN = "study"  # the manifest's column of the study id (a digest of what the study shows)
STIMULUS_SIZE = 224  # small images are enlarged to this many pixels a side, so people can see them


@dataclass(frozen=True)
class Variant:
    """One compared model variant: its label in the manifest, its cell result and its MLflow run."""

    label: str
    compression_rate: float
    run_id: str
    result: CellResult


@dataclass
class Stimulus:
    name: str
    image_id: int
    class_name: str
    view: str
    pixels: np.ndarray  # (H, W, 3) in [0, 1]
    left: str = ""
    right: str = ""
    variant: str = ""
    expected: str = ""  # the known answer of an attention check; empty for a real task

    def row(self, design: Design) -> dict[str, Any]:
        row = {"stimulus": self.name, "image_id": self.image_id, "class": self.class_name, "view": self.view}
        row |= {"left": self.left, "right": self.right} if design == "pairwise" else {"variant": self.variant}
        return row | {"expected": self.expected}


@dataclass
class StudyExport:
    design: Design
    stimuli: list[Stimulus]
    variants: list[Variant]
    pairs: list[tuple[str, str]]
    class_names: tuple[str, ...]
    description: dict[str, Any] = field(default_factory=dict)


def variant_label(compression_rate: float) -> str:
    return f"CR {compression_rate:g}"


def parse_pairs(text: str | None) -> list[tuple[float, float]] | None:
    """ "1:2,1:32" -> [(1, 2), (1, 32)]; None when not given."""
    if text is None:
        return None
    pairs = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            a, b = (float(part) for part in parts)
        except ValueError:
            raise XbenchInputError(f"{item!r} is not a pair of compression rates like 1:32", field="--pairs") from None
        if a == b:
            raise XbenchInputError(f"{item!r} compares a variant with itself", field="--pairs")
        pairs.append((a, b))
    return pairs


def choose_variants(
    cells: Sequence[tuple[Any, CellResult]],
    model: str | None,
    explainer: str | None,
    seed: int | None,
    pruning: str | None,
) -> dict[float, Variant]:
    """The variants of one model, explainer, seed and pruning method, by compression rate (the unpruned model is CR 1).
    Defaults: the suite's first model, explainer and pruning method, and its lowest seed."""

    def pick(values: list[str], chosen: str | None, option: str) -> str:
        if chosen is None:
            return values[0]
        if chosen not in values:
            raise XbenchInputError(f"{chosen!r} is not in the suite; it has: {', '.join(values)}", field=option)
        return chosen

    def unique(items: list[Any]) -> list[Any]:
        return list(dict.fromkeys(items))

    if not cells:
        raise XbenchInputError("the suite has no cell results")
    model = pick(unique([r.cell.model.name for _, r in cells]), model, "--model")
    explainer = pick(unique([r.cell.explainer.name for _, r in cells]), explainer, "--explainer")
    seeds = sorted({r.cell.seed for _, r in cells})
    if seed is not None and seed not in seeds:
        raise XbenchInputError(f"seed {seed} is not in the suite; it has: {seeds}", field="--seed")
    chosen_seed = seeds[0] if seed is None else seed
    methods = unique([r.cell.pruning.method for _, r in cells if r.cell.pruning is not None])
    method = pick(methods, pruning, "--pruning") if methods else None
    variants: dict[float, Variant] = {}
    for run, result in cells:
        cell = result.cell
        if (cell.model.name, cell.explainer.name, cell.seed) != (model, explainer, chosen_seed):
            continue
        if cell.pruning is not None and cell.pruning.method != method:
            continue
        rate = float(cell.compression_rate)
        variants.setdefault(rate, Variant(variant_label(rate), rate, run.run_id, result))
    if len(variants) < 2:
        raise XbenchInputError(f"{model} / {explainer} / seed {chosen_seed} has fewer than two variants to compare")
    return dict(sorted(variants.items()))


def resolve_pairs(requested: list[tuple[float, float]] | None, rates: list[float]) -> list[tuple[float, float]]:
    """The compared pairs; default: the least pruned variant against each other one."""
    if requested is None:
        return [(rates[0], rate) for rate in rates[1:]]
    for pair in requested:
        for rate in pair:
            if rate not in rates:
                raise XbenchInputError(
                    f"no variant with compression rate {rate:g}; the suite has {', '.join(f'{r:g}' for r in rates)}",
                    field="--pairs",
                )
    return requested


def enlarged(pixels: np.ndarray, size: int = STIMULUS_SIZE) -> np.ndarray:
    """An (H, W, 3) picture in [0, 1] scaled up to `size` pixels a side (nearest neighbour keeps the map's cells)."""
    from PIL import Image

    if pixels.shape[0] >= size:
        return pixels
    picture = Image.fromarray((pixels.clip(0, 1) * 255).round().astype(np.uint8))
    return np.asarray(picture.resize((size, size), Image.Resampling.NEAREST), dtype=np.float64) / 255


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 12) -> np.ndarray:
    spacer = np.ones((left.shape[0], gap, 3))
    return np.concatenate([left, spacer, right], axis=1)


def render(image: np.ndarray, heat: np.ndarray, view: str, top_fraction: float) -> np.ndarray:
    if view == "heatmap":
        return enlarged(drawing.overlay(image, heat))
    return enlarged(drawing.occlusion(image, heat, top_fraction))


def gallery(store: Any, variant: Variant) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(eval image ids, images (N, H, W, 3) in [0, 1], attributions (N, 1, H, W)) a variant's cell result kept."""
    arrays = store.arrays(variant.run_id, ("gallery_images", "gallery_attributions"))
    if {"gallery_images", "gallery_attributions"} - set(arrays):
        raise XbenchInputError(f"cell run {variant.run_id} ({variant.result.cell.label}) kept no gallery arrays")
    images = arrays["gallery_images"].astype(np.float64) / 255
    ids = variant.result.scored_images[: len(images)]
    return ids, images, arrays["gallery_attributions"]


def build_study(
    store: Any,
    suite: str,
    design: Design,
    pairs: list[tuple[float, float]] | None,
    views: Sequence[View],
    images: int | None,
    top_fraction: float,
    checks: int,
    seed: int,
    model: str | None = None,
    explainer: str | None = None,
    model_seed: int | None = None,
    pruning: str | None = None,
) -> StudyExport:
    """The stimuli of a study of `suite` (read from `store`), in a random order, with `checks` attention checks
    (negative: one per ten tasks)."""
    if not 0 < top_fraction < 1:
        raise XbenchInputError(f"must be between 0 and 1, got {top_fraction}", field="--top-fraction")
    variants = choose_variants(store.load_cell_results(suite), model, explainer, model_seed, pruning)
    rates = list(variants)
    compared = resolve_pairs(pairs, rates)
    used = sorted({rate for pair in compared for rate in pair}) if pairs is not None or design == "pairwise" else rates
    galleries = {rate: gallery(store, variants[rate]) for rate in used}
    common = [i for i in galleries[used[0]][0] if all(i in galleries[rate][0] for rate in used)]
    if images is not None:
        if images > len(common):
            raise XbenchInputError(
                f"the variants share {len(common)} explained images with kept attributions; asked for {images} (run "
                "the suite with a larger `gallery_images` for more)",
                field="--images",
            )
        common = common[:images]
    if not common:
        raise XbenchInputError("the compared variants share no explained image with kept attributions")
    result = variants[used[0]].result
    class_names = result.class_names

    def picture(rate: float, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        ids, pictures, heats = galleries[rate]
        row = ids.index(image_id)
        return pictures[row], heats[row, 0]

    rng = np.random.default_rng(seed)
    stimuli: list[Stimulus] = []
    for image_id in common:
        class_name = class_names[result.labels[image_id]]
        for view in views:
            if design == "pairwise":
                for a, b in compared:
                    (image, heat_a), (_, heat_b) = picture(a, image_id), picture(b, image_id)
                    panels = [
                        (variant_label(a), render(image, heat_a, view, top_fraction)),
                        (variant_label(b), render(image, heat_b, view, top_fraction)),
                    ]
                    if rng.random() < 0.5:
                        panels.reverse()
                    stimuli.append(
                        Stimulus(
                            "",
                            image_id,
                            class_name,
                            view,
                            side_by_side(panels[0][1], panels[1][1]),
                            left=panels[0][0],
                            right=panels[1][0],
                        )
                    )
            else:
                for rate in used:
                    image, heat = picture(rate, image_id)
                    stimuli.append(
                        Stimulus(
                            "",
                            image_id,
                            class_name,
                            view,
                            render(image, heat, view, top_fraction),
                            variant=variant_label(rate),
                        )
                    )
    count = max(1, len(stimuli) // 10) if checks < 0 else checks  # default: one check per ten tasks
    stimuli += attention_checks(stimuli, design, count, rng, galleries, common, class_names, result)
    order = rng.permutation(len(stimuli))
    stimuli = [stimuli[i] for i in order]
    description = {
        "suite": suite,
        "design": design,
        "views": list(views),
        "top_fraction": top_fraction,
        "seed": seed,
        "model": result.cell.model.name,
        "explainer": result.cell.explainer.name,
        "model_seed": result.cell.seed,
        "pruning": next((v.result.cell.pruning.method for v in variants.values() if v.result.cell.pruning), None),
        "variants": {variant_label(rate): variants[rate].run_id for rate in used},
        "pairs": [[variant_label(a), variant_label(b)] for a, b in compared] if design == "pairwise" else [],
        "images": len(common),
        "stimuli": len(stimuli),
        "attention_checks": sum(1 for s in stimuli if s.expected),
        "classes": list(class_names),  # the identify answers people can give; `human analyse` checks them
    }
    # The study's id is a digest of what it shows; every stimulus name carries it, so answers to another export (even
    # of the same suite) cannot be read against this manifest by accident.
    shown = [(s.image_id, s.view, s.left, s.right, s.variant, s.expected) for s in stimuli]
    study_id = hashlib.sha256(json.dumps([description, shown], sort_keys=True, default=str).encode()).hexdigest()[:8]
    description["study_id"] = study_id
    for number, stimulus in enumerate(stimuli, start=1):  # names in task order: they say nothing about the answer
        stimulus.name = f"{study_id}-s{number:04d}.png"
    labelled = [(variant_label(a), variant_label(b)) for a, b in compared]
    return StudyExport(design, stimuli, [variants[rate] for rate in used], labelled, class_names, description)


def attention_checks(
    stimuli: list[Stimulus],
    design: Design,
    count: int,
    rng: np.random.Generator,
    galleries: dict[float, tuple[list[int], np.ndarray, np.ndarray]],
    images: list[int],
    class_names: tuple[str, ...],
    result: CellResult,
) -> list[Stimulus]:
    """Tasks with a known answer. Pairwise: a real explanation beside a blank grey panel (the explanation is the
    reasonable side). Identify: the whole image, not occluded (its class is plain to see)."""
    checks = []
    rate = next(iter(galleries))
    ids, pictures, _ = galleries[rate]
    for number in range(count):
        image_id = images[int(rng.integers(len(images)))]
        class_name = class_names[result.labels[image_id]]
        if design == "pairwise":
            real = stimuli[int(rng.integers(len(stimuli)))]
            panel = real.pixels[:, : (real.pixels.shape[1] - 12) // 2]  # its left explanation (the gap is 12 px)
            blank = np.full_like(panel, 0.5)
            real_label = real.left
            if number % 2 == 0:
                checks.append(
                    Stimulus(
                        "",
                        real.image_id,
                        real.class_name,
                        real.view,
                        side_by_side(panel, blank),
                        left=real_label,
                        right=CHECK_VARIANT,
                        expected="left",
                    )
                )
            else:
                checks.append(
                    Stimulus(
                        "",
                        real.image_id,
                        real.class_name,
                        real.view,
                        side_by_side(blank, panel),
                        left=CHECK_VARIANT,
                        right=real_label,
                        expected="right",
                    )
                )
        else:
            pixels = enlarged(pictures[ids.index(image_id)])
            checks.append(
                Stimulus("", image_id, class_name, "original", pixels, variant=CHECK_VARIANT, expected=class_name)
            )
    return checks


# --------------------------------------------------------------------------------------------------------------------
# Files


def instructions(design: Design, class_names: Sequence[str], top_fraction: float) -> str:
    """What participants read: the seed paper's instructions, adapted."""
    if design == "pairwise":
        return (
            "Each task shows one photo twice, each time with a heatmap (or with only some pixels left visible) that an "
            "image classifier produced to explain its decision. Red and yellow areas mattered most to the classifier, "
            "blue areas least.\n\nWhich of the two explanations is more reasonable: which one highlights the parts of "
            "the image that a person would use to recognise what it shows? Choose 'left', 'right', or 'equally "
            "reasonable' if you cannot tell them apart.\n\nSome tasks have a clear answer and check that you are "
            "paying attention."
        )
    return (
        f"Each task shows an image of which only the {top_fraction:.0%} of pixels an image classifier found most "
        "important are visible; the rest is grey.\n\nWhich of these classes does the image show: "
        f"{', '.join(class_names)}? Choose 'don't know' if you cannot tell.\n\nSome tasks have a clear answer and "
        "check that you are paying attention."
    )


def answer_choices(design: Design, class_names: Sequence[str]) -> list[dict[str, str]]:
    """The buttons of a task: their value (what the answers CSV records) and their text."""
    if design == "pairwise":
        return [
            {"value": "left", "text": "Left is more reasonable"},
            {"value": "equal", "text": "Equally reasonable"},
            {"value": "right", "text": "Right is more reasonable"},
        ]
    return [{"value": name, "text": name} for name in class_names] + [{"value": DONT_KNOW, "text": "Don't know"}]


def write_study(study: StudyExport, out: Path, per_task: int, base_url: str | None) -> dict[str, Path]:
    """Write the study's files under `out` (see the module docstring); returns them by role."""

    if per_task < 1:
        raise XbenchInputError(f"must be >= 1, got {per_task}", field="--per-task")
    (out / "stimuli").mkdir(parents=True, exist_ok=True)
    (out / "mturk").mkdir(exist_ok=True)
    encoded: dict[str, str] = {}
    for stimulus in study.stimuli:
        data = drawing.png(stimulus.pixels)
        (out / "stimuli" / stimulus.name).write_bytes(data)
        encoded[stimulus.name] = base64.b64encode(data).decode()
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*MANIFEST_COLUMNS[study.design], STUDY_COLUMN])
        writer.writeheader()
        study_id = study.description["study_id"]
        # class names come from the data set's folders: neutralised, since people open manifest.csv in spreadsheets
        writer.writerows(
            {k: csv_safe(v) for k, v in (stimulus.row(study.design) | {STUDY_COLUMN: study_id}).items()}
            for stimulus in study.stimuli
        )
    text = instructions(study.design, study.class_names, study.description["top_fraction"])
    (out / "instructions.txt").write_text(text + "\n")
    (out / "study.json").write_text(json.dumps(study.description, indent=1) + "\n")
    # MTurk: one HIT per `per_task` stimuli; the k-th stimulus of a HIT is the input `stimulus_k`, its answer fields are
    # suffixed _k (with one stimulus per HIT, `stimulus` and no suffix).
    suffixes = [""] if per_task == 1 else [f"_{k}" for k in range(1, per_task + 1)]
    prefix = "" if base_url is None else base_url.rstrip("/") + "/"
    input_csv = out / "mturk" / "input.csv"
    with input_csv.open("w", newline="") as handle:
        hits = csv.writer(handle)
        hits.writerow([f"stimulus{suffix}" for suffix in suffixes])
        names = [s.name for s in study.stimuli]
        for start in range(0, len(names), per_task):
            chunk = names[start : start + per_task]
            chunk += chunk[-1:] * (per_task - len(chunk))  # the last HIT repeats its last stimulus to stay full
            hits.writerow([prefix + name for name in chunk])
    from xbench.present.jinja import environment as jinja_environment

    environment = jinja_environment("xbench.human")
    choices = answer_choices(study.design, study.class_names)
    template = out / "mturk" / "template.html"
    template.write_text(
        environment.get_template("human_mturk.html.j2").render(
            design=study.design, suffixes=suffixes, choices=choices, instructions=text
        )
    )
    tasks = [{"stimulus": s.name, "image": encoded[s.name]} for s in study.stimuli]
    page = out / "study.html"
    page.write_text(
        environment.get_template("human_study.html.j2").render(
            design=study.design, tasks=tasks, choices=choices, instructions=text, suite=study.description["suite"]
        )
    )
    return {
        "manifest": manifest,
        "page": page,
        "mturk_input": input_csv,
        "mturk_template": template,
        "instructions": out / "instructions.txt",
        "description": out / "study.json",
    }
