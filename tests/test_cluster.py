"""Beyond one process, for real: a local Ray cluster with 2 workers, an `mlflow server` on PostgreSQL, worker and
driver processes killed with SIGKILL mid-suite, a token-protected cluster from `ray start --head` joined by address.
Slow (they start servers and clusters), so out of the fast lane."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, SMOKE, hold_plugin, xbench, xbench_here
from tests.services import mlflow_server, postgres, postgres_bin

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

BASELINE = ROOT / "leaderboard" / "baselines" / "smoke.json"
# Figures that measure the machine (times, speeds) or name the run; everything else must match between backends.
VOLATILE = re.compile(r"run_id|start_time|latency|seconds|speedup|throughput|memory|_ms_|backend|git_sha|device")

STALL_PLUGIN = '''
"""An explainer whose first call anywhere stalls until the test kills its worker process (SIGKILL)."""
import os
import time
from pathlib import Path

from xbench.components.explainers import explainer

MARKS = Path(os.environ["XBENCH_TEST_MARKS"])


@explainer("stall_once", "tests")
def stall_once(model, x, targets, params):
    """|x| summed over channels; the first call writes its pid and waits to be killed."""
    pid_file = MARKS / "stalled.pid"
    if not pid_file.exists():
        pid_file.write_text(str(os.getpid()))
        while not (MARKS / "release").exists():  # the test releases it only if the kill did not happen
            time.sleep(0.1)
    return x.abs().sum(dim=1, keepdim=True)
'''


def _small_suite(tmp_path: Path, name: str, **changes: Any) -> Path:
    suite = yaml.safe_load(SMOKE.read_text())
    suite.update(name=name, seeds=[0])
    suite["dataset"].update(train_size=256)
    suite["models"][0]["train"]["epochs"] = 2
    suite.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _cell_runs(database: Path) -> list[tuple[str, str]]:
    """(cell_key, status) of every cell run in a SQLite MLflow store, read with sqlite3 (not through xbench)."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "select k.value, r.status from runs r join tags role on role.run_uuid = r.run_uuid "
            "and role.key = 'xbench.role' and role.value = 'cell' "
            "join tags k on k.run_uuid = r.run_uuid and k.key = 'xbench.cell_key' where r.lifecycle_stage = 'active'"
        ).fetchall()
    return [(key, status) for key, status in rows]


def _suite_run_metrics(database: Path) -> dict[str, float]:
    """The metrics of the (one) suite run in a SQLite MLflow store, read with sqlite3."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "select m.key, m.value from metrics m join tags role on role.run_uuid = m.run_uuid "
            "and role.key = 'xbench.role' and role.value = 'suite'"
        ).fetchall()
    return dict(rows)


def _stable(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Records by cell key without the machine-dependent figures."""
    return {record["cell_key"]: {k: v for k, v in record.items() if not VOLATILE.search(k)} for record in records}


def _same(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    differences = []
    for key in sorted(set(first) | set(second)):
        a, b = first.get(key), second.get(key)
        if isinstance(a, float) and isinstance(b, float):
            if not (math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))):
                differences.append(f"{key}: {a} != {b}")
        elif a != b:
            differences.append(f"{key}: {a!r} != {b!r}")
    return differences


def _runs_by_cell(tracking_uri: str, suite: str) -> dict[str, dict[str, Any]]:
    """What the MLflow UI shows of each cell run: params, metric names, artifact paths."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(f"xbench/{suite}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`xbench.role` = 'cell'")

    def artifacts(run_id: str, path: str | None = None) -> list[str]:
        found = []
        for item in client.list_artifacts(run_id, path):
            found += artifacts(run_id, item.path) if item.is_dir else [item.path]
        return found

    return {
        run.data.tags["xbench.cell_key"]: {
            "params": run.data.params,
            "metrics": sorted(run.data.metrics),
            "artifacts": sorted(artifacts(run.info.run_id)),
            "inputs": sorted(d.dataset.name for d in run.inputs.dataset_inputs),
        }
        for run in runs
    }


def test_smoke_on_ray_with_a_postgresql_mlflow_server_matches_a_local_run(tmp_path: Path) -> None:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed and this user cannot apt-get it (apt-get install postgresql)")
    local_uri = f"sqlite:///{tmp_path / 'local.db'}"
    xbench(
        "run",
        "suite",
        str(SMOKE),
        "--threads",
        "1",
        "--tracking-uri",
        local_uri,
        "--cache-dir",
        str(tmp_path / "local-cache"),
        cwd=tmp_path,
        check=True,
    )
    assert "seconds_waiting_for_a_worker" not in _suite_run_metrics(tmp_path / "local.db")  # no cluster to wait for
    with postgres(tmp_path / "pg") as database, mlflow_server(database, tmp_path / "server") as server:
        ray_run = xbench(
            "run",
            "suite",
            str(SMOKE),
            "--backend",
            "ray",
            "--workers",
            "2",
            "--threads",
            "1",
            "--tracking-uri",
            server,
            "--cache-dir",
            str(tmp_path / "ray-cache"),
            cwd=tmp_path,
            check=True,
        )
        assert "suite smoke on ray: 2 trainings, 2 pruning steps, 8 cells" in ray_run.stderr
        outputs: dict[str, dict[str, str]] = {}
        for name, uri in (("local", local_uri), ("ray", server)):
            outputs[name] = {
                "export": xbench_here(
                    "export", "--suite", "smoke", "--tracking-uri", uri, cwd=tmp_path, check=True
                ).stdout,
                "stats": xbench_here(
                    "stats", "--suite", "smoke", "--format", "json", "--tracking-uri", uri, cwd=tmp_path, check=True
                ).stdout,
            }
            gate = xbench_here("check", "--baseline", str(BASELINE), "--tracking-uri", uri, cwd=tmp_path)
            outputs[name]["check"] = f"exit {gate.returncode}\n{gate.stdout}{gate.stderr}"
            site = tmp_path / f"site-{name}"
            xbench_here(
                "leaderboard",
                "build",
                "--suite",
                "smoke",
                "--tracking-uri",
                uri,
                "--out",
                str(site),
                cwd=tmp_path,
                check=True,
            )
            outputs[name]["leaderboard"] = (site / "suite-smoke.json").read_text()
        ui = {name: _runs_by_cell(uri, "smoke") for name, uri in (("local", local_uri), ("ray", server))}

    # The MLflow UI of the server shows the same cell runs, params, metrics and artifacts as the local store.
    assert set(ui["ray"]) == set(ui["local"]) and len(ui["local"]) == 8
    for key, local in ui["local"].items():
        assert ui["ray"][key] == local, key
    # export, stats, check and the leaderboard's data agree, but for figures that time the machine.
    for output in ("export", "leaderboard"):
        local, ray = _stable(json.loads(outputs["local"][output])), _stable(json.loads(outputs["ray"][output]))
        assert set(local) == set(ray)
        for key in local:
            assert not _same(local[key], ray[key]), (output, key, _same(local[key], ray[key]))
    assert json.loads(outputs["local"]["stats"])["comparisons"] == json.loads(outputs["ray"]["stats"])["comparisons"]
    # the committed baseline passes on both, with the same findings (its table and counts)
    assert outputs["local"]["check"].startswith("exit 0\n") and "0 regressed" in outputs["local"]["check"]
    assert outputs["local"]["check"] == outputs["ray"]["check"]


def test_a_killed_ray_worker_is_retried_and_every_cell_is_logged_once(tmp_path: Path) -> None:
    (tmp_path / "stall_plugin.py").write_text(STALL_PLUGIN)
    marks = tmp_path / "marks"
    marks.mkdir()
    suite = _small_suite(tmp_path, "killed-worker", plugins=["stall_plugin"], explainers=["gradcam", "stall_once"])
    environment = {**os.environ, "PYTHONPATH": str(tmp_path), "XBENCH_TEST_MARKS": str(marks)}
    environment.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable,
        "-m",
        "xbench",
        "run",
        "suite",
        str(suite),
        "--backend",
        "ray",
        "--workers",
        "2",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    driver = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        pid_file = marks / "stalled.pid"
        while not pid_file.exists() and driver.poll() is None:
            time.sleep(0.2)
        assert pid_file.exists(), driver.communicate()
        worker = int(pid_file.read_text())
        assert worker != driver.pid
        os.kill(worker, signal.SIGKILL)  # the Ray worker process running the stalled cell, killed for real
        stdout, stderr = driver.communicate()
    finally:
        (marks / "release").touch()
        if driver.poll() is None:
            driver.kill()
        _kill_group(driver.pid)
    assert driver.returncode == 0, stderr
    runs = _cell_runs(tmp_path / "xbench.db")
    keys = [key for key, _ in runs]
    assert len(runs) == 4 and len(set(keys)) == 4, runs
    assert {status for _, status in runs} == {"FINISHED"}
    assert "4 cells run, 0 already done" in stdout
    # The suite run says how much of its time only waited for a worker to start (Ray's start, the imports).
    suite_run = _suite_run_metrics(tmp_path / "xbench.db")
    assert 0 <= suite_run["seconds_waiting_for_a_worker"] < suite_run["seconds"], suite_run


def test_a_killed_ray_driver_resumes_on_rerun_and_logs_every_cell_once(tmp_path: Path) -> None:
    # Every cell but the first holds in the plug-in explainer: the kill lands with 1 to 3 of the 4 cells logged,
    # however fast the machine (no polling race); the rerun finds the release mark.
    held = hold_plugin(tmp_path)
    suite = _small_suite(
        tmp_path, "killed-driver", plugins=["hold_plugin"], explainers=["saliency", "hold_after_first_cell"]
    )
    environment = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **held}
    command = [
        sys.executable,
        "-m",
        "xbench",
        "run",
        "suite",
        str(suite),
        "--backend",
        "ray",
        "--workers",
        "2",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    driver = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    database = tmp_path / "xbench.db"
    try:
        while driver.poll() is None:
            logged = database.exists() and any(status == "FINISHED" for _, status in _safe_cell_runs(database))
            if logged and (tmp_path / "marks" / "held").exists():
                break
            time.sleep(0.2)
        assert driver.poll() is None, "the run ended without holding"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        _kill_group(driver.pid)  # Ray's processes of the killed driver
    logged_before = [key for key, status in _cell_runs(database) if status == "FINISHED"]
    assert 1 <= len(logged_before) < 4
    (tmp_path / "marks" / "release").touch()
    rerun = xbench(
        "run",
        "suite",
        str(suite),
        "--backend",
        "ray",
        "--workers",
        "2",
        "--cache-dir",
        str(tmp_path / "cache"),
        cwd=tmp_path,
        env=held,
        check=True,
    )
    runs = _cell_runs(database)
    assert len(runs) == 4 and len({key for key, _ in runs}) == 4, runs
    assert {status for _, status in runs} == {"FINISHED"}
    assert f"{4 - len(logged_before)} cells run, {len(logged_before)} already done" in rerun.stdout


def _safe_cell_runs(database: Path) -> list[tuple[str, str]]:
    try:
        return _cell_runs(database)
    except sqlite3.Error:  # the schema is still being created
        return []


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def _ray_head(workdir: Path, token: str, gpus: int = 0, cpus: int = 1) -> Iterator[str]:
    """A one-CPU Ray head started by another process (`ray start --head --block`) with Ray's token authentication;
    yields an address to join it by (127.0.0.1: Ray may still name the machine's own address in its messages).
    Stopped at the end by signalling that process group only (not `ray stop`,
    which would stop every Ray process of this user)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = [
        "--head",
        f"--port={port}",
        f"--num-cpus={cpus}",
        f"--num-gpus={gpus}",
        "--include-dashboard=false",
        f"--temp-dir={workdir}",
    ]
    with _ray_start(options, token, {}):
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def _ray_start(options: list[str], token: str, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`ray start --block` with Ray's token authentication, until it says it runs; its process group stopped at
    the end by signalling that group only (not `ray stop`, which would stop every Ray process of this user)."""
    ray = Path(sys.executable).with_name("ray")
    environment = {
        **os.environ,
        **env,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    process = subprocess.Popen(
        [str(ray), "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *options],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        started = []
        for line in process.stdout:  # ends when it exits; no timeout (see tests.conftest.xbench)
            started.append(line)
            if "--block" in line:
                break
        assert process.poll() is None, "".join(started)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        _kill_group(process.pid)


def test_ray_joins_a_cluster_started_elsewhere_with_its_token_and_names_a_wrong_one(tmp_path: Path) -> None:
    suite = _small_suite(tmp_path, "joined", explainers=["saliency"])
    ray_dir = Path(tempfile.mkdtemp(prefix="xbench-ray-"))  # short: Ray's socket paths are limited to 107 bytes
    try:
        with _ray_head(ray_dir, token="a1" * 16) as address:
            run = (
                "run",
                "suite",
                str(suite),
                "--backend",
                "ray",
                "--address",
                address,
                "--cache-dir",
                str(tmp_path / "cache"),
            )
            home = {"HOME": str(tmp_path)}  # no ~/.ray/auth_token there
            # A wrong token; none; the right one without RAY_AUTH_MODE=token (Ray then sends none to an explicit
            # address): each refused, named, exit 2, nothing logged.
            for auth in (
                {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "b2" * 16},
                {"RAY_AUTH_MODE": "token"},
                {"RAY_AUTH_TOKEN": "a1" * 16},
            ):
                refused = xbench(*run, cwd=tmp_path, env={**home, **auth})
                assert refused.returncode == 2, (auth, refused.stderr)
                assert "error: --address:" in refused.stderr and "RAY_AUTH_MODE=token" in refused.stderr, refused.stderr
            assert not (tmp_path / "xbench.db").exists() or not _cell_runs(tmp_path / "xbench.db")
            right = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "a1" * 16}
            joined = xbench(*run, cwd=tmp_path, env={**home, **right}, check=True)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert "on ray" in joined.stderr
    runs = _cell_runs(tmp_path / "xbench.db")
    assert len(runs) == 2 and {status for _, status in runs} == {"FINISHED"}, runs


def test_a_worker_of_a_joined_cluster_decides_the_device_and_the_dry_run_memo_and_run_agree(tmp_path: Path) -> None:
    """A cluster that declares a GPU (Ray takes --num-gpus on any machine) with a CPU-only torch: `auto` is decided by
    a worker holding that GPU, not by the driver; the dry run says so with the plan key the run then logs, and a
    rerun answers from the plan remembered for that cluster."""
    suite = _small_suite(tmp_path, "declared-gpu", explainers=["saliency"], device="auto")
    ray_dir = Path(tempfile.mkdtemp(prefix="xbench-ray-"))
    environment = {"HOME": str(tmp_path), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "c3" * 16}
    try:
        with _ray_head(ray_dir, token="c3" * 16, gpus=1) as address:
            run = (
                "run",
                "suite",
                str(suite),
                "--backend",
                "ray",
                "--address",
                address,
                "--cache-dir",
                str(tmp_path / "cache"),
            )
            dry = xbench(*run, "--dry-run", cwd=tmp_path, env=environment, check=True)
            device = re.search(r"device: (\w+) \((.*)\)", dry.stdout)
            assert device is not None and device.group(1) == "cpu", dry.stdout
            decided = device.group(2)
            assert "decided by a Ray worker holding GPU 0" in decided and "CUDA not available" in decided
            planned = re.search(r"plan key: (\w+)", dry.stdout)
            assert planned is not None
            joined = xbench(*run, cwd=tmp_path, env=environment, check=True)
            assert "cells run on cpu: decided by a Ray worker holding GPU 0" in joined.stderr
            again = xbench(*run, cwd=tmp_path, env=environment, check=True)
            assert "nothing to do" in again.stdout + again.stderr  # the plan remembered for this cluster
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    with sqlite3.connect(tmp_path / "xbench.db") as connection:
        tags = dict(
            connection.execute(
                "select t.key, t.value from tags t join tags role on role.run_uuid = t.run_uuid "
                "and role.key = 'xbench.role' and role.value = 'suite'"
            ).fetchall()
        )
        devices = {value for (value,) in connection.execute("select value from params where key = 'device'")}
    assert tags["xbench.plan_key"] == planned.group(1)
    assert tags["xbench.device"].startswith("cpu, decided by a Ray worker holding GPU 0")
    assert devices == {"cpu"}  # every cell's logged device is the worker's decision


@contextlib.contextmanager
def _ray_node(address: str, token: str, cpus: int, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A second Ray node on this machine joining the head at `address` (its own raylet), stopped at the end. Its
    workers get `env` (a plug-in on PYTHONPATH: a node's workers import what its own environment names)."""
    with _ray_start([f"--address={address}", f"--num-cpus={cpus}", "--num-gpus=0"], token, env) as node:
        yield node


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_dead_raylet_ends_the_run_in_sentences_and_a_rerun_resumes(tmp_path: Path) -> None:
    """The only node with CPUs loses its raylet mid-suite: the run says which cells did not run and why, in one line
    per reason, exits 1 without a traceback; with a new node, the rerun logs every cell once."""
    (tmp_path / "stall_plugin.py").write_text(STALL_PLUGIN)
    marks = tmp_path / "marks"
    marks.mkdir()
    suite = _small_suite(tmp_path, "dead-raylet", plugins=["stall_plugin"], explainers=["gradcam", "stall_once"])
    token = "d4" * 16
    environment = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "XBENCH_TEST_MARKS": str(marks),
        "HOME": str(tmp_path),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
    }
    environment.pop("MLFLOW_TRACKING_URI", None)
    ray_dir = Path(tempfile.mkdtemp(prefix="xbench-ray-"))
    try:
        with _ray_head(ray_dir, token=token, cpus=0) as address:
            command = [
                sys.executable,
                "-m",
                "xbench",
                "run",
                "suite",
                str(suite),
                "--backend",
                "ray",
                "--address",
                address,
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
            plugin_path = {"PYTHONPATH": str(tmp_path), "XBENCH_TEST_MARKS": str(marks)}
            with _ray_node(address, token, cpus=1, env=plugin_path):
                driver = subprocess.Popen(
                    command,
                    cwd=tmp_path,
                    env=environment,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
                try:
                    pid_file = marks / "stalled.pid"
                    while not pid_file.exists() and driver.poll() is None:
                        time.sleep(0.2)
                    assert pid_file.exists(), driver.communicate()
                    raylet = _parent(int(pid_file.read_text()))  # Ray workers are children of their node's raylet
                    assert "raylet" in Path(f"/proc/{raylet}/cmdline").read_text()
                    os.kill(raylet, signal.SIGKILL)
                    stdout, stderr = driver.communicate()
                finally:
                    (marks / "release").touch()
                    if driver.poll() is None:
                        driver.kill()
                    _kill_group(driver.pid)
            assert driver.returncode == 1, stderr
            output = stdout + stderr
            assert "Traceback" not in output, output
            failed = [line for line in output.splitlines() if line.startswith("failed:")]
            assert any("not run:" in line for line in failed) and any("resumes the rest" in line for line in failed)
            print("\n".join(failed))  # shown with -s: what a user reads
            before = {key for key, status in _cell_runs(tmp_path / "xbench.db") if status == "FINISHED"}
            with _ray_node(address, token, cpus=1, env=plugin_path):
                rerun = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True)
            assert rerun.returncode == 0, rerun.stderr
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    runs = _cell_runs(tmp_path / "xbench.db")
    assert len(runs) == 4 and len({key for key, _ in runs}) == 4 and {s for _, s in runs} == {"FINISHED"}, runs
    assert before <= {key for key, _ in runs}
