"""MLflow: one experiment per suite, one parent run per `xbench run`, one nested child run per cell.

Reads (`load_results`) are used by export, leaderboard and check, so this module never imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from xbench.errors import XbenchInputError

DEFAULT_DB = "xbench.db"
ROLE_TAG, CELL_KEY_TAG, PLAN_KEY_TAG, SUITE_TAG = "xbench.role", "xbench.cell_key", "xbench.plan_key", "xbench.suite"
METRICS_TAG, DIRECTION_PREFIX, MISSING_PREFIX = "xbench.metrics", "xbench.direction.", "xbench.missing."
ENGINE_PREFIX, VERSION_PREFIX = "xbench.engine.", "xbench.metric_version."
# MLflow 3's UI opens an experiment on its GenAI overview ("Traces: 0") unless told it holds model-development runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def resolve_tracking_uri(uri: str | None = None) -> str:
    """CLI flag > MLFLOW_TRACKING_URI > a SQLite file `xbench.db` in the working directory."""
    if uri is not None:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def experiment_name(suite: str) -> str:
    return f"xbench/{suite}"


def _quiet() -> None:
    """MLflow logs its schema migrations at INFO on a new SQLite store; users need none of it."""
    import mlflow  # noqa: F401 - configures the 'mlflow' logger on import, so levels are set after it

    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="sqlalchemy.*")


@dataclass(frozen=True)
class CellOutcome:
    """What one finished cell logs: everything is already computed, so logging is one short burst."""

    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: list[Path]
    # MLflow dataset inputs: name, digest (of the data), source_type, source (what produced it), context
    datasets: tuple[dict[str, str], ...] = ()


class Store:
    """An MLflow tracking store (SQLite file by default, or any tracking server URI)."""

    def __init__(self, uri: str | None = None) -> None:
        _quiet()
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri)

    @contextlib.contextmanager
    def exclusive(self, suite: str) -> Iterator[None]:
        """Hold the suite's write lock on a SQLite store (a file lock beside the database) while a run writes.

        SQLite has one writer at a time, and two runs of one suite would both compute the cells neither had logged
        yet. The second run waits, saying for whom, and continues once the first is done. A tracking server is shared
        by design and takes no lock here.
        """
        parsed = urlparse(self.uri)
        if parsed.scheme != "sqlite":
            yield
            return
        import fcntl

        database = Path(self.uri.removeprefix("sqlite:///"))
        lock_path = database.resolve().parent / f".{database.name}.{suite}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                from xbench.progress import log

                log(f"another xbench run of suite {suite} ({holder}) is writing to {database}; waiting for it to "
                    "finish (for parallel runs use an MLflow tracking server: --tracking-uri http://...)")  # fmt: skip
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _artifact_location(self, suite: str) -> str | None:
        """SQLite stores keep artifacts beside the database file (MLflow would use ./mlruns of the cwd)."""
        parsed = urlparse(self.uri)
        if parsed.scheme != "sqlite":
            return None
        database = Path(self.uri.removeprefix("sqlite:///"))
        return (database.resolve().parent / "xbench-artifacts" / suite).as_uri()

    def experiment_id(self, suite: str, create: bool = False) -> str | None:
        """The suite's experiment; `create` makes it (or marks an older one) as a model-development experiment, so the
        MLflow UI opens on its runs."""
        experiment = self.client.get_experiment_by_name(experiment_name(suite))
        if experiment is not None:
            if create and experiment.tags.get("mlflow.experimentKind") is None:
                for key, value in EXPERIMENT_KIND.items():
                    self.client.set_experiment_tag(experiment.experiment_id, key, value)
            return experiment.experiment_id
        if not create:
            return None
        return self.client.create_experiment(
            experiment_name(suite),
            artifact_location=self._artifact_location(suite),
            tags={SUITE_TAG: suite, **EXPERIMENT_KIND},
        )

    def _search(self, experiment_id: str, filter_string: str) -> list[Any]:
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id],
                filter_string=filter_string,
                max_results=1000,
                page_token=token,
                order_by=["attributes.start_time DESC"],
            )
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def finished_cells(self, experiment_id: str) -> dict[str, str]:
        """cell_key -> run_id of every finished cell run (the newest, if a key was ever logged twice)."""
        finished: dict[str, str] = {}
        for run in self._search(experiment_id, f"tags.`{ROLE_TAG}` = 'cell' and attributes.status = 'FINISHED'"):
            finished.setdefault(run.data.tags[CELL_KEY_TAG], run.info.run_id)
        return finished

    def discard_unfinished_cells(self, experiment_id: str) -> int:
        """Delete cell runs that a crash or kill left unfinished, so every cell appears exactly once."""
        stale = [
            run for run in self._search(experiment_id, f"tags.`{ROLE_TAG}` = 'cell'") if run.info.status != "FINISHED"
        ]
        for run in stale:
            self.client.delete_run(run.info.run_id)
        return len(stale)

    def open_parent(self, experiment_id: str, plan_key: str, run_name: str, tags: dict[str, str]) -> str:
        """Continue the unfinished parent run of the same plan (a resumed run), or start a new one."""
        for run in self._search(experiment_id, f"tags.`{ROLE_TAG}` = 'suite' and tags.`{PLAN_KEY_TAG}` = '{plan_key}'"):
            if run.info.status != "FINISHED":
                self.client.update_run(run.info.run_id, status="RUNNING")
                self.client.set_tag(run.info.run_id, "xbench.resumed_at", time.strftime("%Y-%m-%dT%H:%M:%S"))
                return run.info.run_id
        run = self.client.create_run(
            experiment_id, run_name=run_name, tags={**tags, ROLE_TAG: "suite", PLAN_KEY_TAG: plan_key}
        )
        return run.info.run_id

    def close_parent(self, run_id: str, metrics: dict[str, float], status: str = "FINISHED") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.set_terminated(run_id, status=status)

    def log_cell(self, experiment_id: str, parent_id: str, run_name: str, outcome: CellOutcome) -> str:
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(
            experiment_id, run_name=run_name, tags={"mlflow.parentRunId": parent_id, ROLE_TAG: "cell"}
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        params = [Param(k, str(v)) for k, v in outcome.params.items()]
        metrics = [Metric(k, float(v), now, 0) for k, v in outcome.metrics.items()]
        tags = [RunTag(k, str(v)) for k, v in outcome.tags.items()]
        for chunk in _chunks(params, 100):
            self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(tags, 100):
            self.client.log_batch(run_id, tags=chunk)
        for chunk in _chunks(metrics, 1000):
            self.client.log_batch(run_id, metrics=chunk)
        if outcome.datasets:
            from mlflow.entities import Dataset, DatasetInput, InputTag

            self.client.log_inputs(run_id, datasets=[
                DatasetInput(Dataset(d["name"], d["digest"], d["source_type"], d["source"]),
                             tags=[InputTag("mlflow.data.context", d["context"])])
                for d in outcome.datasets
            ])  # fmt: skip
        for path in outcome.artifacts:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id

    def artifact(self, run_id: str, name: str, destination: Path) -> Path | None:
        """A run's artifact copied under `destination`, or None if the run has no such artifact."""
        # One MLflow progress bar per file would drown the caller's own progress bar.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        try:
            return Path(self.client.download_artifacts(run_id, name, str(destination)))
        except Exception:  # MLflow raises several types for a missing artifact; absence is what matters here
            return None

    def per_image_scores(self, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """run_id -> {metric or 'correct': per-image scores} from each cell run's scores.csv (absent ones skipped)."""
        import tempfile

        scores: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory(prefix="xbench-scores-") as workdir:
            for index, record in enumerate(records):
                destination = Path(workdir) / str(index)
                destination.mkdir()
                path = self.artifact(record["run_id"], "scores.csv", destination)
                if path is not None:
                    scores[record["run_id"]] = read_scores(path)
        return scores

    def suites(self) -> list[str]:
        from mlflow.entities import ViewType

        return sorted(
            e.tags[SUITE_TAG]
            for e in self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
            if SUITE_TAG in e.tags
        )

    def load_results(self, suite: str) -> list[dict[str, Any]]:
        """One flat record per cell: its newest finished run. Raises XbenchInputError if the suite has no results."""
        experiment_id = self.experiment_id(suite)
        if experiment_id is None:
            known = ", ".join(self.suites()) or "none"
            raise XbenchInputError(f"no results for suite {suite!r} in {self.uri} (suites with results: {known})")
        records: dict[str, dict[str, Any]] = {}
        for run in self._search(experiment_id, f"tags.`{ROLE_TAG}` = 'cell' and attributes.status = 'FINISHED'"):
            key = run.data.tags[CELL_KEY_TAG]
            if key not in records:
                records[key] = to_record(suite, run)
        return sorted(
            records.values(),
            key=lambda r: (r["model"], r["pruning_method"], r["compression_rate"], r["explainer"], r["seed"]),
        )


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


def read_scores(path: Path) -> dict[str, Any]:
    """scores.csv (image, label, one column per metric and `correct`) as column -> per-image float64 array."""
    import csv

    import numpy as np

    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in (rows[0].keys() if rows else []) if c not in ("image", "label")]
    return {c: np.array([float(row[c]) if row[c] not in ("", "nan") else np.nan for row in rows]) for c in columns}


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _batch_sizes(metrics: dict[str, float], prefix: str) -> list[int]:
    return sorted(int(k.removeprefix(prefix)) for k in metrics if k.startswith(prefix))


def to_record(suite: str, run: Any) -> dict[str, Any]:
    """The flat export record of a cell run (keys documented in the README)."""
    params, tags = run.data.params, run.data.tags
    # NaN (a metric that could score no image) becomes None, so exports are valid JSON.
    metrics = {k: (None if math.isnan(v) else v) for k, v in run.data.metrics.items()}
    metric_names = [m for m in tags.get(METRICS_TAG, "").split(",") if m]
    # Latency is reported at the smallest batch size measured, throughput at the largest.
    smallest = next(iter(_batch_sizes(metrics, "latency_ms_p50_bs")), None)
    largest = next(iter(reversed(_batch_sizes(metrics, "throughput_bs"))), None)
    record: dict[str, Any] = {
        "suite": suite,
        "cell_key": tags[CELL_KEY_TAG],
        "run_id": run.info.run_id,
        "model": params.get("model"),
        "pruning_method": params.get("pruning_method"),
        "pruning_scope": params.get("pruning_scope"),
        "pruning_granularity": params.get("pruning_granularity"),
        "pruning_schedule": params.get("pruning_schedule"),
        "compression_rate": float(params.get("compression_rate", 1)),
        "explainer": params.get("explainer"),
        "seed": int(params.get("seed", 0)),
        "data_seed": int(params.get("data_seed", 0)),
        "device": tags.get("xbench.device"),
        "start_time": run.info.start_time,
        "accuracy": metrics.get("accuracy"),
        "sparsity": metrics.get("sparsity"),
        "sparsity_scope": metrics.get("sparsity_scope"),
        "compression_rate_model": metrics.get("compression_rate_model"),
        "compression_rate_scope": metrics.get("compression_rate_scope"),
        "params": metrics.get("params"),
        "params_nonzero": metrics.get("params_nonzero"),
        "flops": metrics.get("flops_dense"),
        "flops_effective": metrics.get("flops_effective"),
        "theoretical_speedup": metrics.get("theoretical_speedup"),
        "latency_ms_p50": metrics.get(f"latency_ms_p50_bs{smallest}") if smallest else None,
        "latency_batch_size": smallest,
        "throughput": metrics.get(f"throughput_bs{largest}") if largest else None,
        "throughput_batch_size": largest,
        "measured_speedup": metrics.get(f"measured_speedup_bs{largest}") if largest else None,
        "attribution_tie_share": metrics.get("attribution_tie_share"),
        "attribution_min_share": metrics.get("attribution_min_share"),
        "attribution_constant_count": metrics.get("attribution_constant_count"),
    }
    for name in metric_names:
        record[name] = metrics.get(name)
        record[f"{name}_std"] = metrics.get(f"{name}_std")
        record[f"{name}_tie_std"] = metrics.get(f"{name}_tie_std")
    record["metric_directions"] = {name: tags.get(f"{DIRECTION_PREFIX}{name}", "higher") for name in metric_names}
    record["provenance"] = {key: tags.get(tag, "") for key, tag in PROVENANCE_TAGS.items()}
    return record
