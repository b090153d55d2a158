from pathlib import Path

import pytest

from xbench.errors import XbenchInputError
from xbench.tracking import CellOutcome, Store, resolve_tracking_uri


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'xbench.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    assert resolve_tracking_uri() == "sqlite:///from-env.db"
    assert resolve_tracking_uri("sqlite:///from-cli.db") == "sqlite:///from-cli.db"


def _outcome(tmp_path: Path, key: str) -> CellOutcome:
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    return CellOutcome(
        params={"model": "m", "pruning_method": "none", "compression_rate": 1, "explainer": "saliency"},
        metrics={"accuracy": 0.9, "sparseness": 0.4, "latency_ms_p50_bs1": 1.0, "throughput_bs8": 100.0},
        tags={"xbench.cell_key": key, "xbench.metrics": "sparseness", "xbench.direction.sparseness": "higher"},
        artifacts=[artifact],
    )


def test_cells_are_logged_nested_and_read_back_as_records(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    experiment = store.experiment_id("demo", create=True)
    parent = store.open_parent(experiment, "plan-1", "demo run", {"xbench.suite": "demo"})
    run_id = store.log_cell(experiment, parent, "cell a", _outcome(tmp_path, "a"))
    assert store.finished_cells(experiment) == {"a": run_id}
    run = store.client.get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert (tmp_path / "xbench-artifacts" / "demo").is_dir()  # artifacts beside the SQLite file
    [record] = store.load_results("demo")
    assert record["cell_key"] == "a" and record["sparseness"] == 0.4
    assert record["latency_ms_p50"] == 1.0 and record["throughput"] == 100.0
    assert record["metric_directions"] == {"sparseness": "higher"}


def test_unfinished_cells_are_discarded_and_the_parent_resumed(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    experiment = store.experiment_id("demo", create=True)
    parent = store.open_parent(experiment, "plan-1", "demo run", {})
    # A run killed mid-log: created, never terminated.
    store.client.create_run(
        experiment, tags={"mlflow.parentRunId": parent, "xbench.role": "cell", "xbench.cell_key": "b"}
    )
    assert store.finished_cells(experiment) == {}
    assert store.discard_unfinished_cells(experiment) == 1
    assert store.open_parent(experiment, "plan-1", "demo run", {}) == parent
    assert store.open_parent(experiment, "plan-2", "other run", {}) != parent


def test_results_of_an_unknown_suite_are_an_input_error(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(XbenchInputError, match="no results for suite 'nope'"):
        store.load_results("nope")
