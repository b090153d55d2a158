"""Suite files: YAML that maps one to one onto the pydantic models below (unknown keys are errors).

About 500 lines, one purpose: the suite schema, its validators and its loading (with the error messages that name
the YAML path) belong together, since each validator's message names the field the model declares.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from xbench.core.errors import XbenchInputError

# The built-in suites ship inside the package, so an installed wheel knows them too.
SUITES_DIR = Path(str(resources.files("xbench") / "suites"))
# Eval images whose attributions a cell keeps as raw arrays unless the suite says otherwise (`gallery_images`); the
# leaderboard's gallery strips show this many.
DEFAULT_GALLERY_IMAGES = 4


MAX_SEED = 2**63 - 1  # torch and numpy take seeds below 2^64; one below 2^63 also fits a signed 64-bit integer
MAX_COMPRESSION_RATE = 10_000.0  # 99.99 % of the scope pruned; the iterative chain then has at most 14 steps
MAX_IMAGES = 10_000_000


class _Strict(BaseModel):
    # no inf or NaN anywhere a number is asked for: a rate, a learning rate or a margin that is not finite validates
    # as a float but cannot be right
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Preprocessing(_Strict):
    """How real images become tensors (timm's data config). Default: the suite's first model's pretrained config."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    crop_pct: float = Field(0.875, gt=0, le=1, description="Resize to image_size / crop_pct, then centre-crop.")


class Augmentation(_Strict):
    """Training augmentation of real images (the seed paper: flips both ways and rotations up to 10 degrees)."""

    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    rotation: float = Field(0.0, ge=0, le=180, description="Random rotation up to this many degrees either way.")


_OPTIONAL_DATASET_FIELDS = (
    "variant",
    "masks",
    "preprocessing",
    "augment",
    "loader_workers",
    "validation_size",
    "options",
    "explain_size",
)


class DatasetConfig(_Strict):
    name: str = "shapes"
    image_size: int = Field(64, ge=16, le=1024)
    train_size: int = Field(2000, ge=1, le=MAX_IMAGES)
    eval_size: int = Field(
        64,
        ge=1,
        le=1_000_000,
        description="Eval images: accuracy and its per-image `correct` come from all of them.",
    )
    explain_size: int | None = Field(
        None,
        ge=2,
        le=1_000_000,
        description="How many of the eval images (the first, in the data set's drawn order) are explained and scored "
        "by the metrics; unset: all of them. Accuracy is decided on many more images than explanations need.",
    )
    path: str | None = Field(None, description="Root folder for imagefolder/imagenette (train/ and val/ inside).")
    variant: Literal["full", "320", "160"] | None = Field(
        None, description="imagenette: full-size, 320 px or 160 px (default) images."
    )
    masks: str | None = Field(
        None,
        description=(
            "Ground-truth masks mirroring the eval split: <class>/<image stem>.png (nonzero = object), or Pascal VOC /"
            " ImageNet bounding-box XML as <class>/<stem>.xml or <stem>.xml (boxes become box masks)."
        ),
    )
    preprocessing: Preprocessing | None = None
    augment: Augmentation | None = None
    options: dict[str, Any] | None = Field(
        None,
        description="The dataset plug-in's own options, checked against the options model it declares (a dataset "
        "from a plug-in keeps its settings here).",
    )
    loader_workers: int | None = Field(None, ge=0, description="DataLoader worker processes for training (default 2).")
    validation_size: int | None = Field(
        None,
        ge=1,
        description=(
            "Image folders: images of the eval split, disjoint from the eval images, that early stopping validates on"
            " (the seed paper's 1,125) instead of a fraction of the training images."
        ),
    )

    @model_serializer(mode="wrap")
    def _without_unset_additions(self, handler: Any) -> dict[str, Any]:
        return _drop_unset(handler(self), _OPTIONAL_DATASET_FIELDS)


def _drop_unset(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Leave fields added after suites were first keyed out of the serialisation while unset, so every existing cell
    key, data fingerprint and cached model stays what it was."""
    return {k: v for k, v in data.items() if k not in names or v is not None}


class TrainConfig(_Strict):
    epochs: int = Field(3, ge=0, description="Epochs; with early_stop_patience, the most epochs.")
    lr: float = Field(1e-3, gt=0, le=10, description="Peak learning rate.")
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["onecycle", "constant"] = "onecycle"
    optimizer: Literal["adamw", "sgd"] | None = Field(None, description="Default adamw; sgd: momentum 0.9, Nesterov.")
    early_stop_patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without a gain in validation accuracy (best kept)."
    )
    validation_fraction: float | None = Field(
        None, gt=0, lt=1, description="Training images held out for early stopping (default 0.1)."
    )

    @model_serializer(mode="wrap")
    def _without_unset_additions(self, handler: Any) -> dict[str, Any]:
        return _drop_unset(handler(self), ("optimizer", "early_stop_patience", "validation_fraction"))


class ModelConfig(_Strict):
    name: str
    pretrained: bool | str = Field(False, description="false, true (timm hub) or a path to a local weights file")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for timm.create_model, e.g. {output_stride: 8} for finer CAMs (dilated stages).",
    )
    train: TrainConfig = TrainConfig()


class FinetuneConfig(_Strict):
    epochs: int = Field(1, ge=0)
    steps: int | None = Field(None, ge=1, description="Optimiser steps instead of epochs, when set.")
    lr: float = Field(5e-4, gt=0, le=10)
    batch_size: int | None = Field(None, ge=1, description="Default: the model's training batch size.")
    optimizer: Literal["adamw", "sgd"] = "adamw"
    early_stop_patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without a gain in validation accuracy (best kept)."
    )
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Training images held out for early stopping.")


class PruningConfig(_Strict):
    method: str
    scope: Literal["conv", "conv_linear", "all"] = "conv"
    granularity: Literal["layerwise", "global"] = "layerwise"
    schedule: Literal["oneshot", "iterative"] = "oneshot"
    compression_rates: list[float] = Field(min_length=1)
    finetune: FinetuneConfig = FinetuneConfig()

    @model_validator(mode="after")
    def _rates_at_least_one(self) -> PruningConfig:
        for index, rate in enumerate(self.compression_rates):
            if rate < 1:
                raise _FieldError(f"compression_rates[{index}]", f"must be >= 1 (1 = unpruned), got {rate}")
            if rate > MAX_COMPRESSION_RATE:
                raise _FieldError(
                    f"compression_rates[{index}]",
                    f"must be <= {MAX_COMPRESSION_RATE:g} (99.99 % of the scope pruned), got {rate:g}",
                )
        return self


class QuantizationConfig(_Strict):
    """One quantization method, applied to CR 1 and to every pruned variant after pruning (Deep Compression's order):
    a bare method name in YAML, or {method: ..., <params>}. `none` is the fp32 model, which every suite has anyway."""

    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    calibration_images: int = Field(
        64, ge=1, le=MAX_IMAGES, description="Training images that fix activation ranges (methods that calibrate)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name_or_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"method": value}
        if isinstance(value, dict) and "method" in value and "params" not in value:
            fixed = {"method", "calibration_images"}
            return {
                **{k: v for k, v in value.items() if k in fixed},
                "params": {k: v for k, v in value.items() if k not in fixed},
            }
        return value


class ComponentSpec(_Strict):
    """An explainer or metric: a bare name in YAML, or {name: ..., <params>}."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name_or_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value, "params": {}}
        if isinstance(value, dict) and "name" in value and "params" not in value:
            return {"name": value["name"], "params": {k: v for k, v in value.items() if k != "name"}}
        return value


class PerfConfig(_Strict):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32], min_length=1)
    warmup: int = Field(5, ge=0)
    repeats: int = Field(20, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="bf16/fp16 run under torch.autocast.")
    channels_last: bool = False
    compile: bool = Field(False, description="Time torch.compile(model); compilation happens during warm-up.")


class EvalSelection(_Strict):
    """Which eval images are explained and scored. `random`: the data set's eval images. `correct_under_all` (the seed
    paper's protocol): of those, the ones every compared variant of a model (every CR, pruning config and seed)
    classifies correctly, `per_class` from each class (balanced; all that qualify when unset), chosen once every
    variant exists and the same for all of them. Accuracy is still measured on all eval images."""

    method: Literal["random", "correct_under_all"] = "random"
    per_class: int | None = Field(None, ge=1)


class MetaEvaluation(_Strict):
    """Meta-evaluation of the suite's metrics (MetaQuantus; Hedstrom et al., TMLR 2023): each cell is scored again
    under `draws` random draws of each perturbation, with fresh explanations. Minor perturbations (noise on the
    weights, noise on the inputs) should not move a trustworthy metric (noise resilience); a disruptive one (the last
    layers re-initialised, as in model-randomisation tests) should (adversary reactivity)."""

    draws: int = Field(3, ge=1, le=50, description="Random draws of each perturbation per cell.")
    weight_noise: float = Field(
        0.001, gt=0, description="Minor: every weight multiplied by N(1, weight_noise) (MetaQuantus's model noise)."
    )
    input_noise: float = Field(0.01, gt=0, description="Minor: N(0, input_noise) added to the (normalised) inputs.")
    randomised_layers: int = Field(
        1, ge=1, description="Disruptive: the last this-many layers with weights are re-initialised (top down)."
    )


class Suite(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    plugins: list[str] = Field(
        default_factory=list,
        description="Modules to import before planning, whose registrations add datasets, pruners, explainers or "
        "metrics (e.g. my_package.my_explainers); see xbench.core.plugins.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="One training seed (shorthand for seeds: [seed]).")
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="Replicates: each seed is an independent training run (initialisation, data order, random "
        "pruning, fine-tuning, explainer and metric randomness); the statistics compare CRs across them.",
    )
    data_seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Draws the data set (and so the eval images), the same for all seeds."
    )
    tie_draws: int = Field(
        1, ge=1, le=100, description="Score ordering metrics with this many random tie orders; logs their spread."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dataset: DatasetConfig = DatasetConfig()
    models: list[ModelConfig] = Field(min_length=1)
    pruning: list[PruningConfig] = Field(default_factory=list)
    quantization: list[QuantizationConfig] = Field(
        default_factory=list,
        description="Quantization methods (`xbench list quantizers`), each applied to CR 1 and every pruned variant: "
        "[none, int8_static, {method: int4_weight, group_size: 32}, fp16]. Default: none (fp32 only).",
    )
    explainers: list[ComponentSpec] = Field(min_length=1)
    metrics: list[ComponentSpec] = Field(default_factory=list)
    # torch: xbench's batched engine for the metrics it implements (Quantus for the rest); quantus: Quantus for all.
    engine: Literal["torch", "quantus"] = "torch"
    # Leave out (model, explainer) pairs the explainer cannot explain (e.g. Grad-CAM-style CNN-only ones on a ViT)
    # instead of refusing the suite; the plan lists what it left out.
    skip_unsupported: bool = False
    perf: PerfConfig = PerfConfig()
    eval_selection: EvalSelection = EvalSelection()
    reference: str | None = Field(
        None, description="Published results to compare with: a name `xbench list references` knows, or a JSON file."
    )
    equivalence: dict[str, float] = Field(
        default_factory=dict,
        description="Equivalence margins, in each figure's own units ({accuracy: 0.01, sparseness: 0.02}): a "
        "difference to CR 1 inside ±margin counts as no meaningful change. Default: accuracy the allowed accuracy "
        "drop (0.01), a metric 0.2 × its SD across images at CR 1.",
    )
    meta_evaluation: MetaEvaluation | None = Field(
        None,
        description="Score each cell again under minor and disruptive perturbations and report each metric's noise "
        "resilience and adversary reactivity (MetaQuantus); unset: no meta-evaluation.",
    )
    gallery_images: int | None = Field(
        None,
        ge=1,
        le=5000,
        description=f"Eval images whose attributions each cell keeps as raw arrays (default {DEFAULT_GALLERY_IMAGES}): "
        "the leaderboard's"
        " gallery, and the stimuli `xbench human export` can draw from.",
    )

    @model_validator(mode="after")
    def _seeds_distinct(self) -> Suite:
        if self.seeds is not None:
            if "seed" in self.model_fields_set:
                raise _FieldError("seeds", "give seed (one) or seeds (replicates), not both")
            seen: set[int] = set()
            for index, seed in enumerate(self.seeds):
                if seed < 0:
                    raise _FieldError(f"seeds[{index}]", f"must be >= 0, got {seed}")
                if seed > MAX_SEED:
                    raise _FieldError(f"seeds[{index}]", f"must be < 2^63, got {seed}")
                if seed in seen:
                    raise _FieldError(f"seeds[{index}]", f"seed {seed} is listed twice")
                seen.add(seed)
        return self

    @model_validator(mode="after")
    def _name_is_a_name(self) -> Suite:
        if set(self.name) == {"."}:  # `.` or `..` would put the suite's artifacts beside (or above) the database
            raise _FieldError("name", f"must contain a letter, digit, '_' or '-', got {self.name!r}")
        return self

    @model_validator(mode="after")
    def _explain_size_fits(self) -> Suite:
        explain = self.dataset.explain_size
        if explain is not None and explain > self.dataset.eval_size:
            raise _FieldError(
                "dataset.explain_size", f"must be at most dataset.eval_size ({self.dataset.eval_size}), got {explain}"
            )
        if explain is not None and self.eval_selection.method != "random":
            raise _FieldError(
                "dataset.explain_size",
                f"eval_selection {self.eval_selection.method!r} chooses the explained images itself; leave "
                "explain_size unset, or use eval_selection: {method: random}",
            )
        return self

    @model_validator(mode="after")
    def _quantizations_distinct(self) -> Suite:
        seen: list[QuantizationConfig] = []
        for index, config in enumerate(self.quantization):
            if config in seen:
                raise _FieldError(f"quantization[{index}]", f"{config.method!r} with these settings is listed twice")
            seen.append(config)
        return self

    @property
    def quantized(self) -> list[QuantizationConfig]:
        """The quantization methods other than `none` (fp32, which every suite has)."""
        return [config for config in self.quantization if config.method != "none"]

    @model_validator(mode="after")
    def _margins_named(self) -> Suite:
        allowed = ["accuracy", *(spec.name for spec in self.metrics)]
        for name, margin in self.equivalence.items():
            if name not in allowed:
                raise _FieldError(f"equivalence.{name}", f"not a figure of this suite; allowed: {', '.join(allowed)}")
            if not margin > 0:
                raise _FieldError(f"equivalence.{name}", f"must be > 0 (a margin in the figure's units), got {margin}")
        return self

    @property
    def replicate_seeds(self) -> list[int]:
        """The training seeds of the suite's replicates: `seeds`, or the one `seed`."""
        return list(self.seeds) if self.seeds is not None else [self.seed]


def with_seeds(suite: Suite, seeds: list[int]) -> Suite:
    """The suite with other training seeds (`xbench run suite --seeds`), validated as if written in its YAML."""
    fields = suite.model_dump(exclude={"seed", "seeds"}, exclude_unset=False)
    return Suite.model_validate({**fields, "seeds": seeds})


class _FieldError(ValueError):
    """Raised inside validators so the message can name a nested field path."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def _yaml_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("function-before[_from_name_or_mapping(), ComponentSpec]",):
            path += f".{part}" if path else str(part)
    return path


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    field = _yaml_path(tuple(p for p in error["loc"] if not str(p).startswith("function-")))
    context = error.get("ctx", {})
    inner = context.get("error")
    if isinstance(inner, _FieldError):
        return (f"{field}.{inner.field}" if field else inner.field), inner.message
    if error["type"] == "extra_forbidden":
        parents = [str(p) for p in error["loc"][:-1] if not isinstance(p, int) and not str(p).startswith("function-")]
        return field, f"unknown key (allowed keys: {', '.join(_allowed_keys(parents))})"
    return field, error["msg"].removeprefix("Value error, ")


def _allowed_keys(parents: list[str]) -> list[str]:
    """The keys the model at `parents` (field names from the suite down, as the error's location gives them) allows;
    a name that is no field (a key that itself holds dots or brackets) stops the walk where it is."""
    model: type[BaseModel] = Suite
    for part in parents:
        if part not in model.model_fields:
            break
        annotation = model.model_fields[part].annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return list(model.model_fields)


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    """Validate already-parsed YAML; raises XbenchInputError naming the first bad field."""
    if not isinstance(data, dict):
        raise XbenchInputError(f"{source}: a suite must be a YAML mapping, got {type(data).__name__}")
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        lines = [f"{field}: {message}" for field, message in (_describe(dict(e)) for e in exc.errors())]
        raise XbenchInputError(f"{source}: invalid suite\n  " + "\n  ".join(lines)) from None


def find_suite(name_or_path: str) -> Path:
    """A path to a YAML file, or a suite name looked up in ./suites, then in the suites shipped with xbench."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise XbenchInputError(f"suite file {name_or_path!r} does not exist")
        return candidate
    for folder in dict.fromkeys((Path.cwd() / "suites", SUITES_DIR)):
        path = folder / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    known = ", ".join(list_suites()) or "none"
    raise XbenchInputError(f"unknown suite {name_or_path!r}; known suites: {known} (or give a path to a YAML file)")


def list_suites() -> list[str]:
    names: set[str] = set()
    for folder in (Path.cwd() / "suites", SUITES_DIR):
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


class _UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} is given twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_suite(name_or_path: str) -> tuple[Suite, Path]:
    path = find_suite(name_or_path)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise XbenchInputError(f"{path}: malformed YAML: {exc}") from None
    return parse_suite(data, source=str(path)), path


def suite_json_schema() -> str:
    """JSON Schema of the suite format, for editors (`xbench list schema > suite.schema.json`)."""
    return json.dumps(Suite.model_json_schema(), indent=2)


def schedule_steps(compression_rate: float, schedule: str) -> list[float]:
    """The CRs a model passes through: [CR] oneshot; 2, 4, 8, ... then CR when iterative."""
    if schedule == "oneshot" or compression_rate <= 2:
        return [compression_rate]
    steps = [2.0**k for k in range(1, math.ceil(math.log2(compression_rate)))]
    return [s for s in steps if s < compression_rate] + [compression_rate]
