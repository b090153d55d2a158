"""Typed results for tests: CellResults built like execution builds them, and records derived with the code's own
`to_record`, so no test carries a hand-made copy of the record schema."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xbench.core.cells import Cell, PruningVariant
from xbench.core.results import CellResult, MetricResult, per_image_scores, to_record


@functools.cache
def _planned() -> tuple[Cell, PruningVariant]:
    """A cell of a planned suite, and its layer-wise L1 magnitude pruning variant."""
    from tests.test_runner import tiny_suite

    cells = tiny_suite(32)
    pruning = next(c.pruning for c in cells if c.pruning is not None)
    return cells[0], pruning


def cell(
    model: str = "m", rate: float = 1.0, explainer: str = "saliency", seed: int = 0, method: str = "magnitude"
) -> Cell:
    """A cell of `model` pruned to `rate` (layer-wise `method`, default L1 magnitude, on its conv weights; none at
    CR 1)."""
    base, pruned = _planned()
    pruning = None if rate == 1 else pruned.model_copy(update={"method": method})
    return base.model_copy(
        update={
            "model": base.model.model_copy(update={"name": model}),
            "pruning": pruning,
            "compression_rate": float(rate),
            "explainer": base.explainer.model_copy(update={"name": explainer}),
            "seed": seed,
        }
    )


def cell_result(
    model: str = "m",
    rate: float = 1.0,
    explainer: str = "saliency",
    seed: int = 0,
    scores: Mapping[str, Sequence[float | None] | np.ndarray] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    correct: Sequence[bool] | np.ndarray | None = None,
    figures: Mapping[str, float] | None = None,
    method: str = "magnitude",
) -> CellResult:
    """A cell's result with the given per-image metric scores (NaN or None: not scored) and correctness; accuracy is
    the share correct unless `figures` says otherwise."""
    the_cell = cell(model, rate, explainer, seed, method)
    scores = dict(scores or {})
    images = len(next(iter(scores.values()))) if scores else len(correct if correct is not None else (True,))
    correct = tuple(bool(c) for c in (correct if correct is not None else (True,) * images))
    directions = dict(higher_is_better or {})
    metrics = {
        name: MetricResult(
            name=name,
            higher_is_better=directions.get(name, True),
            engine="torch",
            version="1",
            per_image=tuple(None if v is None or not np.isfinite(v) else float(v) for v in values),
            seconds=0.0,
        )
        for name, values in scores.items()
    }
    return CellResult(
        cell=the_cell,
        cell_key=the_cell.cell_key,
        model_key=f"{model}-{seed}",
        data_digest="d" * 40,
        figures={"accuracy": float(np.mean(correct)), **dict(figures or {})},
        correct=correct,
        labels=tuple(range(len(correct))),
        class_names=tuple(f"class{i}" for i in range(len(correct))),
        metrics=metrics,
        environment={"xbench.device": "cpu"},
    )


def run_id(result: CellResult) -> str:
    c = result.cell
    method = "" if c.pruning is None or c.pruning.method == "magnitude" else f"-{c.pruning.method}"
    return f"{c.model.name}{method}-cr{c.compression_rate:g}-{c.explainer.name}-s{c.seed}"


def record(result: CellResult, suite: str = "s", provenance: dict[str, str] | None = None) -> dict[str, Any]:
    """The flat record the store would give for `result`."""
    return to_record(result, suite, run_id(result), 1_700_000_000_000, provenance)


def records_and_scores(results: Sequence[CellResult]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(records, run_id -> per-image scores) as `Store.load_results` and `Store.per_image_scores` give them."""
    return [record(r) for r in results], {run_id(r): per_image_scores(r) for r in results}
