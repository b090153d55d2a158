"""Cells: frozen, JSON-round-tripping specs of one result (a model variant x explainer x metrics, for one seed).

Plain data with no heavy imports, so a result store, a worker or the leaderboard can read them without torch.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer

from xbench.core.cache import content_key
from xbench.core.suite import (
    ComponentSpec,
    DatasetConfig,
    FinetuneConfig,
    MetaEvaluation,
    ModelConfig,
    PerfConfig,
    QuantizationConfig,
)


def pruning_label(method: str | None, compression_rate: float, quantization: str | None = None) -> str:
    """How every table, log and task names a model variant's compression: `dense`, `<method> CR <rate>`, and a
    quantization method after ` + ` (`dense + int8_static`, `magnitude CR 4 + int8_static`)."""
    label = "dense" if method in (None, "none") else f"{method} CR {compression_rate:g}"
    return label if quantization in (None, "none") else f"{label} + {quantization}"


def quantization_label(config: QuantizationConfig | None) -> str:
    """A quantization as tables name it: `none`, the method, and its parameters when it has any
    (`int4_weight(group_size=32)`), so two settings of one method never share a row."""
    if config is None:
        return "none"
    settings = ",".join(f"{k}={v}" for k, v in sorted(config.params.items()))
    return f"{config.method}({settings})" if settings else config.method


def compression_method(pruning_method: str, quantization: str | None) -> str:
    """The compression a variant had, as one name: the pruning method (`none` for the dense model), then ` + ` and the
    quantization when it was quantized (`magnitude + int8_static`, `none + fp16`)."""
    return pruning_method if quantization in (None, "none") else f"{pruning_method} + {quantization}"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PruningVariant(_Frozen):
    """One pruning configuration without its list of rates; the cell's compression_rate completes it."""

    method: str
    scope: str
    granularity: str
    schedule: str
    finetune: FinetuneConfig


class VariantRef(_Frozen):
    """One variant of a model: its seed, pruning and compression rate."""

    seed: int
    pruning: PruningVariant | None
    compression_rate: float


class SelectionSpec(_Frozen):
    """How the cell's eval images are chosen: `correct_under_all` over `group`, every variant of the cell's model."""

    method: str
    per_class: int | None
    group: tuple[VariantRef, ...]


class Cell(_Frozen):
    """Everything that determines one result. Plain data: JSON round-trips, hashable by `cell_key`."""

    suite: str
    plugins: tuple[str, ...]  # imported before the cell runs, wherever it runs
    seed: int
    data_seed: int
    tie_draws: int
    device: str
    dataset: DatasetConfig
    model: ModelConfig
    pruning: PruningVariant | None
    compression_rate: float
    explainer: ComponentSpec
    metrics: tuple[ComponentSpec, ...]
    engine: str
    perf: PerfConfig
    versions: dict[str, str]
    eval_selection: SelectionSpec | None = None  # None: the data set's eval images (left out of the key while unset)
    gallery_images: int | None = None  # raw attributions kept; None: the default (left out of the key while unset)
    meta_evaluation: MetaEvaluation | None = None  # perturbed re-scoring; None: none (left out of the key while unset)
    quantization: QuantizationConfig | None = None  # after pruning; None: fp32 (left out of the key while unset)

    @model_serializer(mode="wrap")
    def _without_unset_additions(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in ("eval_selection", "gallery_images", "meta_evaluation", "quantization"):
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @property
    def cell_key(self) -> str:
        """Stable hash of what the cell computes (the suite's name is not part of it)."""
        return content_key(self.model_dump(mode="json", exclude={"suite"}))

    @property
    def label(self) -> str:
        pruning = pruning_label(
            self.pruning.method if self.pruning else None,
            self.compression_rate,
            self.quantization.method if self.quantization else None,
        )
        return f"{self.model.name} | {pruning} | {self.explainer.name} | seed {self.seed}"

    def __hash__(self) -> int:
        return hash(self.cell_key)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Cell:
        return cls.model_validate_json(text)


class PlannedSuite(_Frozen):
    """A suite's plan: the cells, the (model, explainer) pairs left out with their reasons, the device the cells
    run on (cpu | cuda, `auto` resolved) and the versions and device every cell run carries as tags."""

    cells: list[Cell]
    left_out: list[tuple[str, str, str]]
    device: str
    environment: dict[str, str]


def plan_key(cells: list[Cell]) -> str:
    """The identity of a plan: its cells, in any order (a rerun of the same plan reopens the same parent run)."""
    return content_key(sorted(cell.cell_key for cell in cells))
