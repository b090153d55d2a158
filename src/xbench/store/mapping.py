"""What a cell result is in MLflow, as pure functions: its params (`cell_params`), metrics (`result_metrics`), tags
(`result_tags`) and artifact files (`result_files`), the order results are listed in, and the tag names every run
carries. No MLflow client here: `tracking.Store` logs what these give it and computes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from xbench.core.cells import Cell, quantization_label
from xbench.core.results import ArtifactStore, CellResult, per_image_scores

ROLE_TAG, CELL_KEY_TAG, PLAN_KEY_TAG, SUITE_TAG = (
    "xbench.role",
    "xbench.cell_key",
    "xbench.plan_key",
    "xbench.suite",
)
FAILURE_TAG = "xbench.failure"  # a failed run's parent: why it failed
REFERENCE_TAG = "xbench.reference"  # experiment tag: the published results a suite is compared with
EQUIVALENCE_TAG = "xbench.equivalence"  # experiment tag: the suite's equivalence margins, as JSON
SEQUENTIAL_TAG = "xbench.sequential"  # experiment tag: the looks of the last `--until-decided` run (`Sequential`)
METRICS_TAG, DIRECTION_PREFIX, MISSING_PREFIX = "xbench.metrics", "xbench.direction.", "xbench.missing."
ENGINE_PREFIX, VERSION_PREFIX = "xbench.engine.", "xbench.metric_version."
RESULT_FILE = "result.json"  # the CellResult itself, in every cell run's artifacts
HUMAN_ROLE, HUMAN_REPORT_FILE = "human-study", "human_study.json"  # a human study's run, and its report artifact
HUMAN_KEY_TAG = "xbench.human_key"  # hash of a study's report: the same analysis is logged once


# what draws a cell's gallery pictures from its raw arrays (the driver passes `present.drawing`'s)
Pictures = Callable[[CellResult, dict[str, np.ndarray]], dict[str, bytes]]


def order_of(result: CellResult) -> tuple[Any, ...]:
    """The order results are listed in: model, pruning method, CR, quantization, explainer, seed."""
    cell = result.cell
    return (
        cell.model.name,
        cell.pruning.method if cell.pruning else "none",
        cell.compression_rate,
        quantization_label(cell.quantization),
        cell.explainer.name,
        cell.seed,
    )


def result_metrics(result: CellResult) -> dict[str, float]:
    """The MLflow metrics of a result: its figures (the meta-evaluation's per-cell tests among them, as the executor
    measured them), and per metric the mean, spread, NaN count, cost. Computes nothing."""
    values = dict(result.figures)
    for name, metric in result.metrics.items():
        scores = metric.scores
        values[name] = metric.mean
        values[f"{name}_std"] = metric.std
        values[f"{name}_nan_count"] = float((~np.isfinite(scores)).sum())
        if metric.tie_std is not None:
            values[f"{name}_tie_std"] = metric.tie_std
        values[f"score_seconds.{name}"] = metric.seconds
        values[f"score_seconds_per_image.{name}"] = metric.seconds / max(1, len(scores))
        values[f"metric_forward_passes_per_image.{name}"] = metric.forward_passes_per_image
        values[f"metric_backward_passes_per_image.{name}"] = metric.backward_passes_per_image
    values["score_seconds"] = sum(metric.seconds for metric in result.metrics.values())
    return values


def result_tags(result: CellResult) -> dict[str, str]:
    missing = {**result.missing, **{n: m.missing for n, m in result.metrics.items() if m.missing}}
    return {
        **{f"{DIRECTION_PREFIX}{n}": "higher" if m.higher_is_better else "lower" for n, m in result.metrics.items()},
        **{f"{MISSING_PREFIX}{k}": v for k, v in missing.items()},
        **{f"{ENGINE_PREFIX}{n}": m.engine for n, m in result.metrics.items()},
        **{f"{VERSION_PREFIX}{n}": m.version for n, m in result.metrics.items()},
        METRICS_TAG: ",".join(result.metrics),
        CELL_KEY_TAG: result.cell_key,
        "xbench.model_key": result.model_key,
        "xbench.result_version": str(result.version),
        **result.environment,
    }


def result_files(
    result: CellResult, artifacts: ArtifactStore, workdir: Path, pictures: Pictures | None = None
) -> list[Path]:
    """result.json, the raw arrays, scores.csv and, when the caller passes a drawer, pictures of the arrays."""
    import csv

    files = [workdir / RESULT_FILE]
    files[0].write_text(result.model_dump_json(indent=1))
    arrays = {}
    for ref in result.artifacts:
        arrays[ref.name] = artifacts.get(ref)
        path = workdir / f"{ref.name}.npy"
        np.save(path, arrays[ref.name], allow_pickle=False)
        files.append(path)
    scores = per_image_scores(result)
    correct = scores.pop("correct")
    path = workdir / "scores.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", *scores, "correct"])
        for position, index in enumerate(result.scored_images):
            values = (f"{values[position]:.6g}" for values in scores.values())
            writer.writerow([index, result.labels[index], *values, f"{correct[index]:g}"])
    files.append(path)
    if pictures is not None:
        for name, data in pictures(result, arrays).items():
            (workdir / name).write_bytes(data)
            files.append(workdir / name)
    return files


# What a leaderboard says about where a result came from; every cell run carries these tags.
PROVENANCE_TAGS = {
    "xbench": "xbench.version",
    "git_sha": "xbench.git_sha",
    "torch": "torch_version",
    "timm": "timm_version",
    "quantus": "quantus_version",
    "python": "python_version",
    "device": "xbench.device",
    "suite_file": "xbench.suite_file",
}


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def batches(params: list[Any], tags: list[Any], metrics: list[Any]) -> Iterable[tuple[list[Any], ...]]:
    """(params, tags, metrics) in as few `log_batch` calls as MLflow takes (at most 100 params, 100 tags and 1000
    entities in all per call): each call is a transaction, and a round trip to a tracking server."""
    chunks = (_chunks(params, 100), _chunks(tags, 100), _chunks(metrics, 800))
    for index in range(max(map(len, chunks))):
        yield tuple(kind[index] if index < len(kind) else [] for kind in chunks)


def cell_params(cell: Cell) -> dict[str, Any]:
    """The MLflow params of a cell: what it is, readable in the UI's columns."""
    pruning = cell.pruning
    params: dict[str, Any] = {
        "model": cell.model.name,
        "pretrained": cell.model.pretrained,
        "train_epochs": cell.model.train.epochs,
        "train_lr": cell.model.train.lr,
        "train_batch_size": cell.model.train.batch_size,
        "pruning_method": pruning.method if pruning else "none",
        "pruning_scope": pruning.scope if pruning else "none",
        "pruning_granularity": pruning.granularity if pruning else "none",
        "pruning_schedule": pruning.schedule if pruning else "none",
        "finetune_epochs": pruning.finetune.epochs if pruning else 0,
        "finetune_lr": pruning.finetune.lr if pruning else 0,
        "compression_rate": cell.compression_rate,
        "quantization": quantization_label(cell.quantization),
        "explainer": cell.explainer.name,
        "dataset": cell.dataset.name,
        "image_size": cell.dataset.image_size,
        "train_size": cell.dataset.train_size,
        "eval_size": cell.dataset.eval_size,
        "explain_size": cell.dataset.explain_size or cell.dataset.eval_size,
        "seed": cell.seed,
        "data_seed": cell.data_seed,
        "tie_draws": cell.tie_draws,
        "device": cell.device,
        "perf_batch_sizes": ",".join(map(str, cell.perf.batch_sizes)),
        "perf_warmup": cell.perf.warmup,
        "perf_repeats": cell.perf.repeats,
        "perf_precision": cell.perf.precision,
        "perf_channels_last": cell.perf.channels_last,
        "perf_compile": cell.perf.compile,
        "metric_engine": cell.engine,
    }
    params.update({f"model.{k}": v for k, v in cell.model.options.items()})
    params.update({f"dataset.{k}": v for k, v in (cell.dataset.options or {}).items()})
    if cell.dataset.path:
        params["dataset_path"] = cell.dataset.path
    if cell.quantization is not None:
        params["quantization_calibration_images"] = cell.quantization.calibration_images
        params.update({f"quantization.{k}": v for k, v in cell.quantization.params.items()})
    params.update({f"explainer.{k}": v for k, v in cell.explainer.params.items()})
    for spec in cell.metrics:
        params.update({f"metric.{spec.name}.{k}": v for k, v in spec.params.items()})
    return params
