"""The typed contract between running and presenting: what one executed cell hands on, and nothing else.

`execute(cell) -> CellResult` (the runner) produces it; the MLflow store writes it (`result.json` plus the raw arrays
it references) and reads it back; export, check, stats and the leaderboard read only `CellResult`s, through
`to_record` where they want one flat row. Heavy arrays are not inside it: they sit in the content-addressed artifact
store and are referenced by digest. No torch import.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from xbench.core.cells import Cell, quantization_label
from xbench.core.numbers import finite_or_none

RESULT_VERSION = 1
# The keys of a flat record (`to_record`) that together name a pruning configuration.
PRUNING_FIELDS = ("pruning_method", "pruning_scope", "pruning_granularity", "pruning_schedule")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricResult(_Frozen):
    """One metric of one cell: per-image scores (None where an image could not be scored) and what they cost."""

    name: str
    higher_is_better: bool
    engine: str  # torch | quantus
    version: str
    per_image: tuple[float | None, ...] = Field(description="one score per eval image; None: constant map or failure")
    tie_std: float | None = Field(None, description="std of the cell mean over tie draws (tie_draws > 1)")
    seconds: float
    forward_passes_per_image: float = 0.0
    backward_passes_per_image: float = 0.0
    missing: str | None = Field(None, description="why no image was scored, when none was")
    batch_level: bool = Field(False, description="one value for the whole batch, given to every image")

    @property
    def scores(self) -> np.ndarray:
        return np.array([math.nan if v is None else v for v in self.per_image], dtype=np.float64)

    @property
    def mean(self) -> float:
        finite = self.scores[np.isfinite(self.scores)]
        return float(finite.mean()) if len(finite) else math.nan

    @property
    def std(self) -> float:
        """The spread over images (NaN for a batch-level metric, whose images share one value)."""
        finite = self.scores[np.isfinite(self.scores)]
        return float(finite.std()) if len(finite) and not self.batch_level else math.nan


class PerturbedScores(_Frozen):
    """One perturbation of a cell's meta-evaluation (`xbench.measure.perturbations`): per random draw, which eval
    images keep the unperturbed model's prediction, the accuracy, and every metric's per-image scores of fresh
    explanations under it."""

    perturbation: str  # weight_noise | input_noise | randomised_layers
    disruptive: bool
    kept_prediction: tuple[tuple[bool, ...], ...] = Field(description="[draw][image]: prediction unchanged")
    accuracy: tuple[float, ...] = Field(description="per draw: accuracy on the scored images under the perturbation")
    reference_accuracy: float = Field(description="accuracy on the scored images, unperturbed")
    scores: dict[str, tuple[tuple[float | None, ...], ...]] = Field(description="metric -> [draw][image] scores")

    def metric_scores(self, metric: str) -> np.ndarray:
        """(draws, images) float64 scores of `metric`, NaN where not scored."""
        rows = self.scores.get(metric, ())
        return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=np.float64)


class ArtifactRef(_Frozen):
    """A raw array in the content-addressed artifact store (`<digest>.npy`), by what it holds."""

    name: str  # e.g. gallery_images, gallery_attributions
    digest: str  # sha256 of the .npy bytes
    shape: tuple[int, ...]
    dtype: str


class CellResult(_Frozen):
    """Everything one executed cell (a cell and its seed) hands on."""

    version: int = RESULT_VERSION
    cell: Cell
    cell_key: str
    model_key: str
    data_digest: str = Field(description="fingerprint of the data set the cell used")
    figures: dict[str, float] = Field(
        description="accuracy, size, FLOPs, latency, explanation cost (docs/guide/figures.md)"
    )
    missing: dict[str, str] = Field(default_factory=dict, description="figures that could not be measured, and why")
    correct: tuple[bool, ...] = Field(description="per eval image: whether the variant classifies it correctly")
    labels: tuple[int, ...] = Field(description="per eval image: its class")
    eval_indices: tuple[int, ...] | None = Field(
        None, description="the eval images the metrics scored, by index (an eval selection); None: all of them"
    )
    class_names: tuple[str, ...]
    metrics: dict[str, MetricResult]
    artifacts: tuple[ArtifactRef, ...] = ()
    environment: dict[str, str] = Field(default_factory=dict, description="versions, git sha, device")
    meta_evaluation: tuple[PerturbedScores, ...] = Field(
        (), description="the suite's meta_evaluation: scores under minor and disruptive perturbations"
    )
    rate_counts: Literal["the pruned scope", "the whole model"] | None = Field(
        None,
        description="what the requested compression_rate counts, as the pruning method says (structured methods the "
        "whole model, the others the pruned scope); None: not pruned, or a result from before it was recorded",
    )

    @property
    def scored_images(self) -> list[int]:
        """Indices of the eval images each metric's per-image scores (and the gallery) belong to."""
        return list(self.eval_indices) if self.eval_indices is not None else list(range(len(self.labels)))

    def artifact(self, name: str) -> ArtifactRef | None:
        return next((a for a in self.artifacts if a.name == name), None)


class ArtifactStore:
    """Arrays as `.npy` files named by the sha256 of their bytes (never pickled), under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, ref: ArtifactRef) -> Path:
        return self.root / f"{ref.digest}.npy"

    def put(self, name: str, array: np.ndarray) -> ArtifactRef:
        """Store the array under its digest. Safe when several processes store the same array at once (every cell on
        the same data stores the same gallery): each writes its own temporary file and atomically replaces the
        target with identical bytes. A target whose bytes no longer match its digest is replaced."""
        import io
        import os
        import tempfile

        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        data = buffer.getvalue()
        ref = ArtifactRef(name=name, digest=hashlib.sha256(data).hexdigest(), shape=array.shape, dtype=str(array.dtype))
        target = self.path(ref)
        if self._intact(target, ref.digest):
            return ref
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{ref.digest[:16]}-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.chmod(temporary, 0o644)  # mkstemp makes files private; the store is shared like the cache
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        return ref

    @staticmethod
    def _intact(path: Path, digest: str) -> bool:
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() == digest
        except FileNotFoundError:
            return False

    def get(self, ref: ArtifactRef) -> np.ndarray:
        """The array; a file whose bytes no longer match its digest is an error naming the file."""
        path = self.path(ref)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != ref.digest:
            raise ValueError(f"artifact {path} does not match its digest (damaged)")
        import io

        array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
        return array


# ------------------------------------------------------------------------------------------------- flat records


def _batch_sizes(figures: dict[str, float], prefix: str) -> list[int]:
    return sorted(int(k.removeprefix(prefix)) for k in figures if k.startswith(prefix) and k[len(prefix) :].isdigit())


def to_record(
    result: CellResult, suite: str, run_id: str = "", start_time: int = 0, provenance: dict[str, str] | None = None
) -> dict[str, Any]:
    """The flat export record of a cell result (keys documented in docs/guide/figures.md); NaN becomes None."""
    cell, figures = result.cell, result.figures
    pruning = cell.pruning
    smallest = next(iter(_batch_sizes(figures, "latency_ms_p50_bs")), None)
    largest = next(iter(reversed(_batch_sizes(figures, "throughput_bs"))), None)
    record: dict[str, Any] = {
        "suite": suite,
        "cell_key": result.cell_key,
        "run_id": run_id,
        "model": cell.model.name,
        "pruning_method": pruning.method if pruning else "none",
        "pruning_scope": pruning.scope if pruning else "none",
        "pruning_granularity": pruning.granularity if pruning else "none",
        "pruning_schedule": pruning.schedule if pruning else "none",
        "compression_rate": cell.compression_rate,
        "compression_rate_counts": result.rate_counts,
        "quantization": quantization_label(cell.quantization),
        "stored_bytes": finite_or_none(figures.get("stored_bytes")),
        "compression_rate_bits": finite_or_none(figures.get("compression_rate_bits")),
        "quant_logit_gap": finite_or_none(figures.get("quant_logit_gap")),
        "explainer": cell.explainer.name,
        "seed": cell.seed,
        "data_seed": cell.data_seed,
        "device": result.environment.get("xbench.device"),
        "start_time": start_time,
        "accuracy": finite_or_none(figures.get("accuracy")),
        "sparsity": finite_or_none(figures.get("sparsity")),
        "sparsity_scope": finite_or_none(figures.get("sparsity_scope")),
        "compression_rate_model": finite_or_none(figures.get("compression_rate_model")),
        "compression_rate_scope": finite_or_none(figures.get("compression_rate_scope")),
        "params": finite_or_none(figures.get("params")),
        "params_nonzero": finite_or_none(figures.get("params_nonzero")),
        "flops": finite_or_none(figures.get("flops_dense")),
        "flops_effective": finite_or_none(figures.get("flops_effective")),
        "theoretical_speedup": finite_or_none(figures.get("theoretical_speedup")),
        "latency_ms_p50": finite_or_none(figures.get(f"latency_ms_p50_bs{smallest}")) if smallest else None,
        "latency_batch_size": smallest,
        "throughput": finite_or_none(figures.get(f"throughput_bs{largest}")) if largest else None,
        "throughput_batch_size": largest,
        "measured_speedup": finite_or_none(figures.get(f"measured_speedup_bs{largest}")) if largest else None,
        "attribution_tie_share": finite_or_none(figures.get("attribution_tie_share")),
        "attribution_min_share": finite_or_none(figures.get("attribution_min_share")),
        "attribution_constant_count": finite_or_none(figures.get("attribution_constant_count")),
    }
    for name in ("eval_candidates", "eval_qualified", "eval_selected"):  # an eval selection's counts
        if name in figures:
            record[name] = int(figures[name])
    for name, metric in result.metrics.items():
        record[name] = finite_or_none(metric.mean)
        record[f"{name}_std"] = finite_or_none(metric.std)
        record[f"{name}_tie_std"] = metric.tie_std
    record["metric_directions"] = {n: "higher" if m.higher_is_better else "lower" for n, m in result.metrics.items()}
    record["provenance"] = dict(provenance or {})
    return record


def per_image_scores(result: CellResult) -> dict[str, np.ndarray]:
    """metric or 'correct' -> per-image float64 scores (NaN where not scored): what the statistics read."""
    scores = {name: metric.scores for name, metric in result.metrics.items() if not metric.batch_level}
    scores["correct"] = np.array(result.correct, dtype=np.float64)
    return scores
