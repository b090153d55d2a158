import os
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.test_runner import tiny_suite
from xbench.core.errors import XbenchInputError
from xbench.core.results import ArtifactStore, CellResult, MetricResult
from xbench.present.drawing import cell_pictures
from xbench.store.leases import Lease, host_identity
from xbench.store.tracking import Store, resolve_tracking_uri


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'xbench.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    assert resolve_tracking_uri() == "sqlite:///from-env.db"
    assert resolve_tracking_uri("sqlite:///from-cli.db") == "sqlite:///from-cli.db"


def _result(artifacts: ArtifactStore) -> CellResult:
    cell = tiny_suite(32)[0]
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    attributions = np.random.default_rng(0).random((2, 1, 32, 32)).astype(np.float32)
    return CellResult(
        cell=cell,
        cell_key=cell.cell_key,
        model_key="m1",
        data_digest="d" * 40,
        figures={"accuracy": 0.5, "latency_ms_p50_bs1": 1.0, "throughput_bs8": 100.0, "flops_dense": 2e6},
        correct=(True, False, True, False),
        labels=(0, 1, 2, 3),
        class_names=("a", "b", "c", "d"),
        metrics={
            "sparseness": MetricResult(
                name="sparseness",
                higher_is_better=True,
                engine="quantus",
                version="1",
                per_image=(0.2, None, 0.4, 0.6),
                seconds=0.1,
            )
        },
        artifacts=(artifacts.put("gallery_images", images), artifacts.put("gallery_attributions", attributions)),
        environment={"xbench.device": "cpu (test)"},
    )


def test_a_cell_result_is_written_and_read_back_whole(tmp_path: Path) -> None:
    """MLflow is a sink and a source of CellResults: what is read back equals what was logged."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    artifacts = ArtifactStore(tmp_path / "artifacts")
    result = _result(artifacts)
    experiment = store.experiment_id("demo", create=True)
    parent = store.open_parent(experiment, "plan-1", "demo run", {"xbench.suite": "demo"}, Lease.mine())
    run_id = store.log_result(experiment, parent, result, artifacts, pictures=cell_pictures)
    assert store.finished_cells(experiment) == {result.cell_key: run_id}
    run = store.client.get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.metrics["sparseness"] == pytest.approx(0.4)
    assert (tmp_path / "xbench-artifacts" / "demo").is_dir()  # artifacts beside the SQLite file
    [(_, loaded)] = store.load_cell_results("demo")
    assert loaded == result
    [record] = store.load_results("demo")
    assert record["cell_key"] == result.cell_key and record["sparseness"] == pytest.approx(0.4)
    assert record["latency_ms_p50"] == 1.0 and record["throughput"] == 100.0 and record["flops"] == 2e6
    assert record["metric_directions"] == {"sparseness": "higher"}
    scores = store.per_image_scores([record])[run_id]
    assert np.isnan(scores["sparseness"][1]) and scores["correct"].tolist() == [1, 0, 1, 0]
    arrays = store.arrays(run_id, ("gallery_images", "gallery_attributions"))
    assert np.array_equal(arrays["gallery_attributions"], artifacts.get(result.artifact("gallery_attributions")))
    logged = {a.path for a in store.client.list_artifacts(run_id)}
    assert {"result.json", "scores.csv", "heatmaps.png", "gallery_overlay.png", "gallery_occlusion.png"} <= logged


def test_the_store_draws_nothing_unless_given_a_drawing(tmp_path: Path) -> None:
    """Presentation stays outside the store: without `pictures` a cell is logged as data only."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    artifacts = ArtifactStore(tmp_path / "artifacts")
    experiment = store.experiment_id("demo", create=True)
    parent = store.open_parent(experiment, "plan-1", "demo run", {"xbench.suite": "demo"}, Lease.mine())
    run_id = store.log_result(experiment, parent, _result(artifacts), artifacts)
    logged = {a.path for a in store.client.list_artifacts(run_id)}
    assert {"result.json", "scores.csv"} <= logged and not {p for p in logged if p.endswith(".png")}


def test_a_dataset_inserted_by_another_run_at_the_same_moment_is_linked_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow looks a dataset up, then inserts it: two runs of one suite can both miss it and the second insert
    breaks the unique key (CI saw PostgreSQL's UniqueViolation). The race cannot be caused on demand, so the fault
    is injected once in front of the real SQLite store; any other error still surfaces."""
    from mlflow.exceptions import MlflowException

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    artifacts = ArtifactStore(tmp_path / "artifacts")
    experiment = store.experiment_id("demo", create=True)
    parent = store.open_parent(experiment, "plan-1", "demo run", {"xbench.suite": "demo"}, Lease.mine())
    real = store.client.log_inputs
    faults = ["BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique constraint"]

    def racing(*args: object, **kwargs: object) -> None:
        if faults:
            raise MlflowException(faults.pop())
        real(*args, **kwargs)

    monkeypatch.setattr(store.client, "log_inputs", racing)
    run_id = store.log_result(experiment, parent, _result(artifacts), artifacts)
    assert not faults and {d.dataset.name for d in store.client.get_run(run_id).inputs.dataset_inputs} == {
        "shapes-32px-train",
        "shapes-32px-eval",
    }
    faults.append("RESOURCE_DOES_NOT_EXIST: no such run")
    with pytest.raises(MlflowException, match="no such run"):
        store.log_result(experiment, parent, _result(artifacts), artifacts)


def test_the_artifact_store_is_content_addressed_and_names_a_damaged_file(tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    first = artifacts.put("x", np.arange(6).reshape(2, 3))
    assert artifacts.put("y", np.arange(6).reshape(2, 3)).digest == first.digest  # same bytes, same file
    assert artifacts.get(first).tolist() == [[0, 1, 2], [3, 4, 5]]
    artifacts.path(first).write_bytes(artifacts.path(first).read_bytes()[:40])
    with pytest.raises(ValueError, match=str(artifacts.path(first))):
        artifacts.get(first)


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _cells(*keys: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(cell_key=key, label=f"cell {key}") for key in keys]


def test_a_dead_runs_parent_and_claims_are_taken_over_and_a_live_runs_are_not(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    experiment = store.experiment_id("demo", create=True)
    killed = Lease("killed", socket.gethostname(), _dead_pid(), host_identity(), "1")
    parent = store.open_parent(experiment, "plan-1", "demo run", {}, killed)
    store.client.create_run(
        experiment, tags={"mlflow.parentRunId": parent, "xbench.role": "cell", "xbench.cell_key": "b"}
    )  # a claim the kill left
    assert store.finished_cells(experiment) == {}
    me = Lease.mine()
    assert store.open_parent(experiment, "plan-1", "demo run", {}, me) == parent  # resumed: its owner is dead
    claims = store.claim_cells(experiment, parent, _cells("a", "b"))
    assert claims.discarded == 1 and set(claims.mine) == {"a", "b"} and not claims.held_by_others
    # a second run of the same plan while this one lives: its own parent, and the live claims are left alone
    other = store.open_parent(experiment, "plan-1", "demo run", {}, Lease.mine())
    assert other != parent
    second = store.claim_cells(experiment, other, _cells("a", "b", "c"))
    assert set(second.mine) == {"c"} and set(second.held_by_others) == {"a", "b"} and second.discarded == 0
    assert f"pid {os.getpid()}" in second.held_by_others["a"]


def test_results_of_an_unknown_suite_are_an_input_error(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(XbenchInputError, match="no results for suite 'nope'"):
        store.load_results("nope")


def test_a_run_with_more_params_tags_and_metrics_than_one_batch_takes_is_logged_whole(tmp_path: Path) -> None:
    from mlflow.entities import Metric, Param, RunTag

    from xbench.store.mapping import batches

    store = Store(f"sqlite:///{tmp_path / 'xbench.db'}")
    run_id = store.client.create_run(store.experiment_id("batches", create=True)).info.run_id
    params = [Param(f"p{i}", str(i)) for i in range(130)]
    tags = [RunTag(f"t{i}", str(i)) for i in range(250)]
    metrics = [Metric(f"m{i}", float(i), 0, 0) for i in range(1700)]
    batches = list(batches(params, tags, metrics))
    for batch_params, batch_tags, batch_metrics in batches:  # MLflow refuses a batch over its limits
        store.client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)
    assert len(batches) == 3  # the 250 tags need three; the params and metrics ride along
    data = store.client.get_run(run_id).data
    assert data.params == {p.key: p.value for p in params}
    assert {k: v for k, v in data.tags.items() if k.startswith("t")} == {t.key: t.value for t in tags}
    assert data.metrics == {m.key: m.value for m in metrics}
