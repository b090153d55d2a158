"""Reading people's answers to an exported study (`xbench.human.study`) back, and scoring the metrics against them.

Answers come from an MTurk batch results file (the platform's own columns: `WorkerId`, `HITId`, `Input.<variable>`,
`Answer.<field>`; the stimulus is the file name in an `Input.` column) or from the offline study page's download
(`worker, stimulus, answer, milliseconds`). The design comes from the manifest's columns.

Statistics (scipy.stats and the `krippendorff` package):
- pairwise: per pair of variants, the answers for each side and "equal"; the headline `p` (Holm-corrected over the
  study's pairs as `p_holm`) tests the mean preference (+1 for a, -1 for b, 0 for "equal") with workers and images as
  crossed random effects (`stats.clustered_mean`), so 600 answers of 20 workers count as what they are; the
  chi-squared and binomial tests over the answers that chose a side stay beside it (`chi2_p`, `binom_p`), labelled
  as the seed paper computed them: they treat every answer as independent;
- identify: accuracy per variant ("don't know" counts as not naming the class, the seed paper's convention; the
  accuracy over the answers that named a class beside it), each pair of variants' difference in accuracy with the same
  crossed-effects `p` (Holm over the pairs), and the seed paper's chi-squared test of independence across variants;
- Krippendorff's alpha (nominal) across workers per stimulus, with "equal" and "don't know" counted as answers, as the
  seed counted them;
- per worker: answers and attention-check accuracy; workers below a check accuracy can be excluded.

Humans against metrics: per automated metric, on the same images and pairs, how often the metric prefers the variant
most people preferred (with a bootstrap interval), and whether the variant rankings agree (Kendall tau).

Over 450 lines, and not of one purpose: parsing answer files, crowd statistics, the report and pseudonyms live
together until #43 moves the statistics to `analyse` and the report to its own module.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from xbench.analyse.stats import CrossedMean, clustered_mean, holm
from xbench.core.errors import XbenchInputError
from xbench.core.results import CellResult
from xbench.core.spreadsheet import csv_safe, csv_unsafe
from xbench.human.study import DONT_KNOW, MANIFEST_COLUMNS, PAIRWISE_ANSWERS, STUDY_COLUMN

DEFAULT_PAIRWISE_COLUMNS = {answer: f"Answer.{answer}{{k}}.on" for answer in PAIRWISE_ANSWERS}
DEFAULT_CLASS_PREFIX = "Answer.class_"
DEFAULT_DONT_KNOW_COLUMN = f"Answer.{DONT_KNOW}{{k}}.on"
ALPHA_NOTE = 'Krippendorff\'s alpha (nominal) across workers per stimulus; "equal" and "don\'t know" count as answers.'


@dataclass(frozen=True)
class Manifest:
    design: str
    rows: dict[str, dict[str, str]]  # stimulus -> its manifest row
    options: frozenset[str] = frozenset()  # identify: the classes people could choose (the export's study.json)
    study_id: str | None = None  # the export's id, which every stimulus name carries (None: an older export)

    @functools.cached_property
    def real(self) -> dict[str, dict[str, str]]:
        """The stimuli that are tasks, not attention checks."""
        return {name: row for name, row in self.rows.items() if not row.get("expected")}

    @functools.cached_property
    def classes(self) -> set[str]:
        """The class names an identify answer can give (the manifest's classes and its checks' expected answers)."""
        names = {row["class"] for row in self.rows.values() if row.get("class")} | set(self.options)
        return names | {row["expected"] for row in self.rows.values() if row.get("expected")} - {DONT_KNOW}


@dataclass(frozen=True)
class Answer:
    worker: str
    stimulus: str
    answer: str  # pairwise: left | right | equal; identify: a class name or dont_know
    milliseconds: float | None


def read_csv(path: Path, field: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file that came from outside: anything but UTF-8 text, a field over csv's limit or a
    malformed line is an input error naming the file (and line), not a traceback."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or ())
            rows = [{k: csv_unsafe(v) if isinstance(v, str) else v for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as exc:
        raise XbenchInputError(
            f"{path} is not UTF-8 text (byte {exc.start}): save it as a UTF-8 CSV and try again", field=field
        ) from None
    except csv.Error as exc:
        raise XbenchInputError(f"{path} is not a readable CSV: {exc}", field=field) from None
    return header, rows


def read_manifest(path: Path) -> Manifest:
    if not path.is_file():
        raise XbenchInputError(f"no manifest at {path}", field="--manifest")
    header, listed = read_csv(path, "--manifest")
    columns = set(header)
    rows: dict[str, dict[str, str]] = {}
    if "stimulus" in columns:
        for number, row in enumerate(listed, start=2):
            if row["stimulus"] in rows:
                raise XbenchInputError(
                    f"{path} line {number} lists stimulus {row['stimulus']!r} again: each stimulus once",
                    field="--manifest",
                )
            rows[row["stimulus"]] = row
    description = load_description(path)
    options = frozenset(str(name) for name in description.get("classes", []))
    ids = {str(row[STUDY_COLUMN]) for row in rows.values() if row.get(STUDY_COLUMN)}
    if len(ids) > 1:
        raise XbenchInputError(f"{path} mixes stimuli of studies {', '.join(sorted(ids))}", field="--manifest")
    study_id = next(iter(ids), None) or description.get("study_id")
    for design, needed in MANIFEST_COLUMNS.items():
        if set(needed) - {"expected"} <= columns:
            return Manifest(design, rows, options, study_id)
    raise XbenchInputError(
        f"{path} is not a study manifest: a pairwise one has columns {', '.join(MANIFEST_COLUMNS['pairwise'])}, an "
        f"identify one {', '.join(MANIFEST_COLUMNS['identify'])}; it has {', '.join(sorted(columns))}",
        field="--manifest",
    )


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "on")


def _milliseconds(value: str | None, path: Path, line: int) -> float | None:
    number = _number(value)
    if number is not None and not (math.isfinite(number) and number >= 0):
        raise XbenchInputError(
            f"{path} line {line}: milliseconds must be a finite number >= 0, got {value!r}", field="RESULTS"
        )
    return number


def _once_each(
    answers: list[Answer], path: Path, first_answer_only: bool, unusable: int, counts: dict[str, int] | None
) -> tuple[list[Answer], int]:
    """One answer per worker and stimulus: a worker who answered a stimulus again is an error (each repeat would
    count as another person's answer), or with `first_answer_only` the first is kept and the rest counted."""
    seen: set[tuple[str, str]] = set()
    kept: list[Answer] = []
    repeated: list[Answer] = []
    for answer in answers:
        key = (answer.worker, answer.stimulus)
        (repeated if key in seen else kept).append(answer)
        seen.add(key)
    if repeated and not first_answer_only:
        first = repeated[0]
        raise XbenchInputError(
            f"{path}: {len(repeated)} repeated answers (worker {first.worker!r} answered {first.stimulus!r} more "
            "than once, and others): each would count as another person's; pass --first-answer-only to keep each "
            "worker's first answer to a stimulus",
            field="RESULTS",
        )
    if counts is not None:
        counts["repeated_answers"] = len(repeated)
    return kept, unusable


def read_answers(
    path: Path,
    manifest: Manifest,
    columns: Mapping[str, str] | None = None,
    class_prefix: str | None = None,
    first_answer_only: bool = False,
    counts: dict[str, int] | None = None,
) -> tuple[list[Answer], int]:
    """(answers, rows without a usable answer) from an MTurk batch results file or the study page's CSV. A worker's
    repeated answer to a stimulus is an error, or with `first_answer_only` left out (`counts["repeated_answers"]`
    says how many).

    `columns` maps answers to result columns (`{k}` is the position suffix of a HIT with several stimuli: "" or "_2"):
    pairwise left/right/equal (boolean columns), identify `label` (one column holding the class name) or `dont_know`
    (a boolean column, with one-hot class columns `class_prefix<class>`, optionally ending in MTurk's `.on`)."""
    if not path.is_file():
        raise XbenchInputError(f"no results file at {path}", field="RESULTS")
    header, rows = read_csv(path, "RESULTS")
    if "WorkerId" in header:
        found = _mturk_answers(rows, header, manifest, dict(columns or {}), class_prefix or DEFAULT_CLASS_PREFIX, path)
        return _once_each(found[0], path, first_answer_only, found[1], counts)
    if {"worker", "stimulus", "answer"} <= set(header):
        check_same_study({row["stimulus"] for row in rows if row.get("stimulus")}, manifest, path)
        answers = []
        for number, row in enumerate(rows, start=2):  # line numbers as a spreadsheet shows them, the header line 1
            if row["stimulus"] in manifest.rows and row["answer"]:
                value = _checked_answer(row["answer"], manifest, path, "answer", number)
                milliseconds = _milliseconds(row.get("milliseconds"), path, number)
                answers.append(Answer(row["worker"], row["stimulus"], value, milliseconds))
        return _once_each(answers, path, first_answer_only, len(rows) - len(answers), counts)
    raise XbenchInputError(
        f"{path} is neither an MTurk batch results file (WorkerId, Input.*, Answer.* columns) nor a study page's "
        "answers (worker, stimulus, answer columns)",
        field="RESULTS",
    )


DONT_KNOW_NAMES = {"dont_know", "dontknow", "don't know", "dont know", "none", "unknown", "not_sure", "idk", "?"}


def _is_dont_know(name: str) -> bool:
    return re.sub(r"^\d+[-_.]", "", name.strip().lower()) in DONT_KNOW_NAMES


def _class_name(name: str, classes: set[str]) -> str:
    """A class as an answer column or value names it: MTurk layouts number them (`0-fish`, `3_church`)."""
    if name in classes:
        return name
    stripped = re.sub(r"^\d+[-_.]", "", name)
    return stripped if stripped in classes else name


def _checked_answer(value: str, manifest: Manifest, path: Path, column: str, row: int) -> str:
    """An answer in the design's vocabulary, or an input error naming the column, the row and the value (an
    unknown value must not count as "equal" or as a wrong class)."""
    value = value.strip()
    if manifest.design == "pairwise":
        if value in PAIRWISE_ANSWERS:
            return value
        allowed = ", ".join(PAIRWISE_ANSWERS)
    else:
        classes = manifest.classes
        if value == DONT_KNOW or _is_dont_know(value):
            return DONT_KNOW
        if (name := _class_name(value, classes)) in classes:
            return name
        allowed = ", ".join(sorted(classes)) + f" or {DONT_KNOW}"
    raise XbenchInputError(
        f"{path}, row {row}, column {column!r}: answer {value!r} is not one of {allowed}", field="RESULTS"
    )


STUDY_STIMULUS = re.compile(r"^(?:([0-9a-f]{8})-)?s\d{4}\.png$")


def check_same_study(names: set[str], manifest: Manifest, path: Path) -> None:
    """An input error when the answers name stimuli of another export than the manifest's (its study id differs,
    or the answers are to an export that had none): positional names alone would match the wrong stimuli."""
    foreign = set()
    for name in names - set(manifest.rows):
        match = STUDY_STIMULUS.match(name)
        if match and match.group(1) != manifest.study_id:
            foreign.add(match.group(1) or "an export without a study id")
    if foreign:
        raise XbenchInputError(
            f"{path} answers stimuli of study {', '.join(sorted(foreign))}, but {manifest.study_id or 'this manifest'} "
            "is another export: analyse answers with the manifest of the export people saw",
            field="--manifest",
        )


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _stimulus(value: str) -> str:
    """A stimulus name from an input value: a file name or a URL ending in one."""
    return value.rstrip("/").rsplit("/", 1)[-1]


def _mturk_answers(
    rows: list[dict[str, str]],
    header: list[str],
    manifest: Manifest,
    columns: dict[str, str],
    prefix: str,
    path: Path,
) -> tuple[list[Answer], int]:
    named = {_stimulus(row[c]) for c in header if c.startswith("Input.") for row in rows if row.get(c)}
    check_same_study(named, manifest, path)
    inputs = [c for c in header if c.startswith("Input.") and any(_stimulus(r[c]) in manifest.rows for r in rows)]
    if not inputs:
        raise XbenchInputError(f"no Input.* column of {path} names the manifest's stimuli", field="RESULTS")
    answers, unusable = [], 0
    for number, row in enumerate(rows, start=2):
        seconds = _number(row.get("WorkTimeInSeconds"))
        in_this_hit: set[str] = set()
        for column in inputs:
            suffix = re.search(r"(_\d+)?$", column).group(0)  # type: ignore[union-attr]
            stimulus = _stimulus(row[column])
            if stimulus in in_this_hit:
                continue  # the export fills the last HIT by repeating its last stimulus: one answer is the worker's
            in_this_hit.add(stimulus)
            if stimulus not in manifest.rows:
                unusable += 1
                continue
            answer = _mturk_answer(row, number, header, manifest, columns, prefix, suffix, path)
            if answer is None:
                unusable += 1
                continue
            if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
                raise XbenchInputError(
                    f"{path} line {number}: WorkTimeInSeconds must be a finite number >= 0, got {seconds}",
                    field="RESULTS",
                )
            milliseconds = None if seconds is None else 1000 * seconds / len(inputs)
            answers.append(Answer(row["WorkerId"], stimulus, answer, milliseconds))
    return answers, unusable


def _mturk_answer(
    row: dict[str, str],
    number: int,
    header: list[str],
    manifest: Manifest,
    columns: dict[str, str],
    prefix: str,
    suffix: str,
    path: Path,
) -> str | None:
    """The one answer a row gives for the stimulus at position `suffix`, or None (none or several chosen)."""

    def column(template: str, role: str) -> str:
        name = template.replace("{k}", suffix)
        if name not in header:
            raise XbenchInputError(
                f"{path} has no column {name!r} for {role} (map it with --answer {role}=COLUMN)", field="--answer"
            )
        return name

    if manifest.design == "pairwise":
        chosen = [a for a in PAIRWISE_ANSWERS if _true(row[column(columns.get(a, DEFAULT_PAIRWISE_COLUMNS[a]), a)])]
        return chosen[0] if len(chosen) == 1 else None
    if "label" in columns:
        name = column(columns["label"], "label")
        label = row[name].strip()
        return _checked_answer(label, manifest, path, name, number) if label else None
    dont_know = columns.get("dont_know", DEFAULT_DONT_KNOW_COLUMN).replace("{k}", suffix)
    chosen = []
    for name in header:  # one-hot class columns: PREFIX<class>, MTurk's radio buttons add .on
        if name == dont_know or not name.startswith(prefix):
            continue  # the don't-know column is never a class, whatever its name
        for tail in (f"{suffix}.on", suffix):
            if name.endswith(tail) and len(name) > len(prefix) + len(tail):
                part = name[len(prefix) : len(name) - len(tail)] if tail else name[len(prefix) :]
                if not suffix and re.search(r"_\d+$", part) and _known(re.sub(r"_\d+$", "", part), manifest):
                    break  # a later stimulus' column (`_2`) of a HIT with several
                if _true(row[name]):  # the header offers this option; a numbered one (`0-fish`) names its class
                    chosen.append(DONT_KNOW if _is_dont_know(part) else _class_name(part, manifest.classes))
                break
    if dont_know in header and _true(row[dont_know]):
        chosen.append(DONT_KNOW)
    if not chosen and not any(name.startswith(prefix) for name in header):
        raise XbenchInputError(
            f"{path} has no one-hot class columns {prefix}<class> (set --answer-prefix, or --answer label=COLUMN)",
            field="--answer-prefix",
        )
    return chosen[0] if len(chosen) == 1 else None


def _known(name: str, manifest: Manifest) -> bool:
    return _is_dont_know(name) or _class_name(name, manifest.classes) in manifest.classes


# --------------------------------------------------------------------------------------------------------------------
# Statistics


def worker_table(answers: Sequence[Answer], manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Per worker: answers, attention checks seen and passed, their accuracy and the median time per answer."""
    table: dict[str, dict[str, Any]] = {}
    for worker in sorted({a.worker for a in answers}):
        own = [a for a in answers if a.worker == worker]
        checks = [a for a in own if manifest.rows[a.stimulus].get("expected")]
        passed = sum(a.answer == manifest.rows[a.stimulus]["expected"] for a in checks)
        times = [a.milliseconds for a in own if a.milliseconds is not None]
        table[worker] = {
            "answers": len(own),
            "checks": len(checks),
            "checks_passed": passed,
            "check_accuracy": passed / len(checks) if checks else None,
            "median_seconds": float(np.median(times)) / 1000 if times else None,
        }
    return table


def krippendorff_alpha(answers: Sequence[Answer], stimuli: Sequence[str]) -> float | None:
    """Nominal alpha over a workers x stimuli table of answers (every answer value its own category); None when no
    stimulus has two answers or everyone gave the same answer (alpha is undefined)."""
    import krippendorff

    workers = sorted({a.worker for a in answers})
    values = sorted({a.answer for a in answers})
    if not workers or len(values) < 2:
        return None
    table = np.full((len(workers), len(stimuli)), np.nan)
    column = {name: index for index, name in enumerate(stimuli)}
    for answer in answers:
        if answer.stimulus in column:
            table[workers.index(answer.worker), column[answer.stimulus]] = values.index(answer.answer)
    if not ((~np.isnan(table)).sum(axis=0) >= 2).any():
        return None
    alpha = float(krippendorff.alpha(reliability_data=table, level_of_measurement="nominal"))
    return alpha if math.isfinite(alpha) else None


def _rate_key(label: str) -> tuple[float, str]:
    match = re.fullmatch(r"CR ([0-9.eE+-]+)", label)
    return (float(match.group(1)) if match else math.inf, label)


def pair_key(left: str, right: str) -> tuple[str, str]:
    """A pair of variant labels in a fixed order: the less compressed first."""
    a, b = sorted((left, right), key=_rate_key)
    return a, b


def winner(answer: Answer, row: Mapping[str, str]) -> str:
    """The variant a pairwise answer preferred, or "equal"."""
    return row["left"] if answer.answer == "left" else row["right"] if answer.answer == "right" else "equal"


PAIRWISE_P_NOTE = (
    "p: the mean preference (+1 a, -1 b, 0 equal) against 0, workers and images crossed random effects (two-way "
    "cluster-robust t), Holm over the pairs as p_holm; chi2_p and binom_p as the seed paper computed them, over the "
    "answers that chose a side, each answer independent"
)
IDENTIFY_P_NOTE = (
    "p: each pair of variants' accuracy difference against 0, workers and images crossed random effects (two-way "
    "cluster-robust t), Holm over the pairs as p_holm; chi2_p as the seed paper computed it, each answer independent"
)


def _crowd_figures(estimate: CrossedMean) -> dict[str, Any]:
    low, high = estimate.interval()
    finite = math.isfinite(estimate.se)
    return {
        "ci_low": low if finite else None,
        "ci_high": high if finite else None,
        "p": estimate.p if finite else None,
        "df": estimate.df if finite else None,
        "workers_in_test": estimate.n_replicates,
        "images_in_test": estimate.n_images,
    }


def _corrected(rows: list[dict[str, Any]], key: str = "p") -> list[float | None]:
    adjusted = holm([math.nan if row[key] is None else row[key] for row in rows])
    return [None if math.isnan(value) else float(value) for value in adjusted]


def pairwise_stats(answers: Sequence[Answer], manifest: Manifest) -> list[dict[str, Any]]:
    from scipy import stats

    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    scored: dict[tuple[str, str], list[tuple[float, str, str]]] = defaultdict(list)  # (score, worker, image)
    for answer in answers:
        row = manifest.real.get(answer.stimulus)
        if row is not None:
            pair = pair_key(row["left"], row["right"])
            chosen = winner(answer, row)
            counts[pair][chosen] += 1
            score = 1.0 if chosen == pair[0] else -1.0 if chosen == pair[1] else 0.0
            scored[pair].append((score, answer.worker, row.get("image_id") or answer.stimulus))
    pairs = []
    for (a, b), count in sorted(counts.items(), key=lambda item: (_rate_key(item[0][0]), _rate_key(item[0][1]))):
        a_count, b_count, equal = count[a], count[b], count["equal"]
        sided = a_count + b_count
        scores, workers, images = zip(*scored[(a, b)], strict=True)
        estimate = clustered_mean(np.asarray(scores), workers, images)
        pairs.append(
            {
                "a": a,
                "b": b,
                "a_count": a_count,
                "b_count": b_count,
                "equal_count": equal,
                "equal_rate": equal / (sided + equal) if sided + equal else None,
                "a_rate": a_count / sided if sided else None,
                "preference": estimate.mean,
                **_crowd_figures(estimate),
                "chi2_p": float(stats.chisquare([a_count, b_count]).pvalue) if sided else None,
                "binom_p": float(stats.binomtest(a_count, sided, 0.5).pvalue) if sided else None,
            }
        )
    # Several pairs are several tests: Holm's correction over the headline p is what "significant" reads.
    for figures, value, binomial in zip(pairs, _corrected(pairs), _corrected(pairs, "binom_p"), strict=True):
        figures["p_holm"] = value
        figures["binom_p_holm"] = binomial
    return pairs


def identify_stats(
    answers: Sequence[Answer], manifest: Manifest
) -> tuple[list[dict[str, Any]], float | None, list[dict[str, Any]]]:
    """(per variant accuracy, the seed paper's chi-squared p across variants, per pair of variants the accuracy
    difference with its crossed-effects p)."""
    from scipy import stats

    by_variant: dict[str, list[tuple[float, str, str]]] = defaultdict(list)  # (correct, worker, image)
    dont_know: Counter[str] = Counter()
    for answer in answers:
        row = manifest.real.get(answer.stimulus)
        if row is not None:
            correct = float(answer.answer == row["class"])
            by_variant[row["variant"]].append((correct, answer.worker, row.get("image_id") or answer.stimulus))
            dont_know[row["variant"]] += answer.answer == DONT_KNOW
    variants: list[dict[str, Any]] = []
    for name, hits in sorted(by_variant.items(), key=lambda item: _rate_key(item[0])):
        correct, known = int(sum(h[0] for h in hits)), len(hits) - dont_know[name]
        variants.append(
            {
                "variant": name,
                "answers": len(hits),
                "correct": correct,
                "dont_know": dont_know[name],
                "accuracy": correct / len(hits),
                "known_accuracy": correct / known if known else None,
            }
        )
    table = np.array([[v["correct"], v["answers"] - v["correct"]] for v in variants])
    chi2_p = None
    if len(variants) >= 2 and (table.sum(axis=0) > 0).all():
        chi2_p = float(stats.chi2_contingency(table).pvalue)
    contrasts = []
    for first, second in itertools.combinations([v["variant"] for v in variants], 2):
        estimate = accuracy_difference(by_variant[second], by_variant[first])
        contrasts.append({"a": first, "b": second, "difference": estimate.mean, **_crowd_figures(estimate)})
    for contrast, value in zip(contrasts, _corrected(contrasts), strict=True):
        contrast["p_holm"] = value
    return variants, chi2_p, contrasts


def accuracy_difference(
    variant: Sequence[tuple[float, str, str]], reference: Sequence[tuple[float, str, str]]
) -> CrossedMean:
    """Accuracy of `variant` minus that of `reference` from (correct, worker, image) answers, with workers and images
    crossed random effects: the two-way cluster-robust variance of the difference's influence scores (each answer's
    deviation from its side's accuracy over its side's share of the answers), whatever the pattern of who saw what."""
    both = [*variant, *reference]
    if not variant or not reference:
        return CrossedMean(math.nan, math.nan, math.nan, 0, 0, math.nan, math.nan, math.nan)
    accuracy_variant = float(np.mean([c for c, _, _ in variant]))
    accuracy_reference = float(np.mean([c for c, _, _ in reference]))
    share_variant, share_reference = len(variant) / len(both), len(reference) / len(both)
    influence = [(c - accuracy_variant) / share_variant for c, _, _ in variant]
    influence += [-(c - accuracy_reference) / share_reference for c, _, _ in reference]
    spread = clustered_mean(np.asarray(influence), [w for _, w, _ in both], [i for _, _, i in both])
    return replace(spread, mean=accuracy_variant - accuracy_reference)


def analyse(
    answers: Sequence[Answer], manifest: Manifest, min_check_accuracy: float | None = None, unusable: int = 0
) -> dict[str, Any]:
    """The study's report (the `--format json` of `xbench human analyse`): design, workers, answers, alpha and the
    design's statistics; workers whose attention-check accuracy is below `min_check_accuracy` are left out."""
    workers = worker_table(answers, manifest)
    excluded = sorted(
        worker
        for worker, row in workers.items()
        if min_check_accuracy is not None
        and row["check_accuracy"] is not None
        and row["check_accuracy"] < min_check_accuracy
    )
    kept = [a for a in answers if a.worker not in excluded]
    real = [a for a in kept if a.stimulus in manifest.real]
    report: dict[str, Any] = {
        "design": manifest.design,
        "workers": len({a.worker for a in kept}),
        "answers": len(real),
        "attention_check_answers": len(kept) - len(real),
        "unusable_rows": unusable,
        "alpha": krippendorff_alpha(real, sorted(manifest.real)),
        "alpha_note": ALPHA_NOTE,
        "excluded_workers": excluded,
        "min_check_accuracy": min_check_accuracy,
        "per_worker": workers,
    }
    if manifest.design == "pairwise":
        report["pairs"] = pairwise_stats(real, manifest)
        report["p_note"] = PAIRWISE_P_NOTE
    else:
        report["variants"], report["chi2_p"], report["contrasts"] = identify_stats(real, manifest)
        report["p_note"] = IDENTIFY_P_NOTE
    return report


# --------------------------------------------------------------------------------------------------------------------
# Humans against metrics


def metric_agreement(
    answers: Sequence[Answer], manifest: Manifest, variants: Mapping[str, CellResult], seed: int = 0
) -> list[dict[str, Any]]:
    """Per metric of the cell results: on each pairwise stimulus with a human majority for one side, whether the
    metric's per-image scores prefer the same variant (a tie in the scores counts as not agreeing), with a 95 %
    percentile-bootstrap interval over stimuli; and Kendall tau between the variants' human win rates and their mean
    scores. Ranked by agreement."""
    from scipy import stats

    if manifest.design != "pairwise":
        return []
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    wins: Counter[str] = Counter()
    losses: Counter[str] = Counter()
    for answer in answers:
        row = manifest.real.get(answer.stimulus)
        if row is None:
            continue
        chosen = winner(answer, row)
        votes[answer.stimulus][chosen] += 1
        if chosen != "equal":
            wins[chosen] += 1
            losses[row["right"] if chosen == row["left"] else row["left"]] += 1
    majorities = {}
    for stimulus, count in votes.items():
        row = manifest.real[stimulus]
        left, right = count[row["left"]], count[row["right"]]
        if left != right:
            majorities[stimulus] = row["left"] if left > right else row["right"]
    missing = {label for name in majorities for label in (manifest.real[name]["left"], manifest.real[name]["right"])}
    missing -= set(variants)
    if missing:
        raise XbenchInputError(f"the suite's results have no variant {', '.join(sorted(missing))} of this study")
    any_result = next(iter(variants.values()))
    labels = sorted(set(wins) | set(losses), key=_rate_key)
    human = [wins[v] / (wins[v] + losses[v]) for v in labels]
    image_ids = sorted({int(manifest.real[s]["image_id"]) for s in majorities})
    rows = []
    for metric, first in any_result.metrics.items():
        sign = 1.0 if first.higher_is_better else -1.0

        def score(label: str, image_id: int, metric: str = metric, sign: float = sign) -> float | None:
            result = variants[label]
            value = result.metrics[metric].per_image[result.scored_images.index(image_id)]
            return None if value is None or not math.isfinite(value) else sign * value

        agree = []
        for stimulus, preferred in majorities.items():
            row = manifest.real[stimulus]
            image_id = int(row["image_id"])
            left_score, right_score = score(row["left"], image_id), score(row["right"], image_id)
            if left_score is None or right_score is None:
                continue
            metric_choice = (
                row["left"] if left_score > right_score else row["right"] if right_score > left_score else None
            )
            agree.append(float(metric_choice == preferred))
        if not agree:
            continue
        values = np.asarray(agree)
        low = high = float(values.mean())
        if len(values) >= 2 and values.min() != values.max():
            interval = stats.bootstrap(
                (values,), np.mean, method="percentile", n_resamples=2000, random_state=np.random.default_rng(seed)
            ).confidence_interval
            low, high = float(interval.low), float(interval.high)
        means = []
        for label in labels:
            scored = [score(label, image_id) for image_id in image_ids]
            finite = [s for s in scored if s is not None]
            means.append(float(np.mean(finite)) if finite else math.nan)
        tau = None
        if len(labels) >= 2 and all(math.isfinite(m) for m in means):
            value = stats.kendalltau(human, means).statistic
            tau = float(value) if math.isfinite(value) else None
        rows.append(
            {
                "metric": metric,
                "higher_is_better": first.higher_is_better,
                "stimuli": len(agree),
                "agreement": float(values.mean()),
                "ci_low": low,
                "ci_high": high,
                "kendall_tau": tau,
                "variants": len(labels),
            }
        )
    return sorted(rows, key=lambda r: -r["agreement"])


def variants_of_study(description: Mapping[str, Any], cells: Sequence[tuple[Any, CellResult]]) -> dict[str, CellResult]:
    """The cell results a study was exported from (its study.json names their MLflow runs), by variant label."""
    by_run = {run.run_id: result for run, result in cells}
    found = {label: by_run[run_id] for label, run_id in description.get("variants", {}).items() if run_id in by_run}
    if len(found) < len(description.get("variants", {})):
        raise XbenchInputError(
            "the suite's store no longer has every cell run the study was exported from (study.json names them)"
        )
    return found


def text_report(report: Mapping[str, Any]) -> str:
    """The report as people read it."""
    lines = [
        f"design: {report['design']}; {report['workers']} workers, {report['answers']} answers "
        f"(+{report['attention_check_answers']} attention checks, {report['unusable_rows']} unusable)",
        "alpha: "
        + ("undefined (no stimulus has two answers)" if report["alpha"] is None else f"{report['alpha']:.3f}")
        + f"  ({report['alpha_note']})",
    ]
    if report["excluded_workers"]:
        lines.append(
            f"excluded (attention checks below {report['min_check_accuracy']:.0%}): "
            + ", ".join(report["excluded_workers"])
        )
    if report["design"] == "pairwise":
        lines.append(
            f"{'pair (a vs b)':<20} prefer a  prefer b  equal  preference [95 % CI]    p        Holm p    "
            "chi2 p    binom p"
        )
        for p in report["pairs"]:
            interval = f"[{_fmt(p['ci_low'], '.2f')}, {_fmt(p['ci_high'], '.2f')}]"
            lines.append(
                f"{p['a'] + ' vs ' + p['b']:<20} {p['a_count']:>8}  {p['b_count']:>8}  {p['equal_count']:>5}  "
                f"{p['preference']:>+10.3f} {interval:<13} {_fmt(p['p'], '.2g'):<8} {_fmt(p['p_holm'], '.2g'):<9} "
                f"{_fmt(p['chi2_p'], '.2g'):<9} {_fmt(p['binom_p'], '.2g')}"
            )
        lines.append(f"({report['p_note']}; significant: Holm p < 0.05)")
    else:
        for v in report["variants"]:
            lines.append(
                f"{v['variant']:<10} accuracy {v['accuracy']:.3f} ({v['correct']}/{v['answers']}; "
                f"{v['dont_know']} don't know; {_fmt(v['known_accuracy'])} of the answers naming a class)"
            )
        for c in report["contrasts"]:
            lines.append(
                f"{c['b'] + ' - ' + c['a']:<20} accuracy {c['difference']:+.3f} [{_fmt(c['ci_low'])}, "
                f"{_fmt(c['ci_high'])}]  p {_fmt(c['p'], '.2g')}  Holm p {_fmt(c['p_holm'], '.2g')}"
            )
        lines.append(
            f"chi2 test across variants (answers independent, as the seed paper): p = {_fmt(report['chi2_p'], '.2g')}"
        )
        lines.append(f"({report['p_note']})")
    if report.get("agreement"):
        lines.append("metric agreement with the human majority (95 % bootstrap CI), Kendall tau of variant rankings:")
        for row in report["agreement"]:
            lines.append(
                f"  {row['metric']:<28} {row['agreement']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}] "
                f"on {row['stimuli']} stimuli; tau {_fmt(row['kendall_tau'], '.2f')} over {row['variants']} variants"
            )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


# --------------------------------------------------------------------------------------------------------------------
# Pseudonyms: what leaves this machine (MLflow) names workers by a keyed hash, never by their platform id


def pseudonym_key(results: Path) -> bytes:
    """The study's pseudonym key, kept beside the raw results file (`<file>.pseudonym-key`, readable by its owner
    only) and made on first use: with it the owner can map a pseudonym back; without it nobody can."""
    import secrets

    path = results.with_name(results.name + ".pseudonym-key")
    if not path.is_file():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return bytes.fromhex(path.read_text().strip())


def pseudonym(worker: str, key: bytes) -> str:
    """HMAC-SHA256 of a worker id under the study's key: stable within a study, unlinkable without the key."""
    import hashlib
    import hmac

    return "w-" + hmac.new(key, worker.encode(), hashlib.sha256).hexdigest()[:16]


def pseudonymised_report(report: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    out = dict(report)
    out["per_worker"] = {pseudonym(w, key): row for w, row in report["per_worker"].items()}
    out["excluded_workers"] = sorted(pseudonym(w, key) for w in report["excluded_workers"])
    return out


def pseudonymised_answers(results: Path, key: bytes, out: Path) -> Path:
    """A copy of the results file with its worker column (MTurk's `WorkerId`, the study page's `worker`) replaced by
    pseudonyms: the file that is logged instead of the raw one."""
    header, rows = read_csv(results, "RESULTS")
    target = out / results.name
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for row in rows:
            for column in ("WorkerId", "worker"):
                if row.get(column):
                    row[column] = pseudonym(row[column], key)
            writer.writerow({column: csv_safe(value) for column, value in row.items()})
    return target


def load_description(manifest_path: Path) -> dict[str, Any]:
    """The export's study.json beside the manifest, or {} when there is none."""
    path = manifest_path.parent / "study.json"
    if not path.is_file():
        return {}
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise XbenchInputError(f"{path} is damaged: {exc}", field="--manifest") from None
    if not isinstance(description, dict):
        raise XbenchInputError(f"{path} is not a study description (a JSON object)", field="--manifest")
    return description
