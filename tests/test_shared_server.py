"""Two `xbench run suite smoke` at once against one real `mlflow server`, backed by SQLite and by PostgreSQL, as two
hosts whose clocks are 5 minutes apart: both exit 0, every cell is logged exactly once, no claim is left behind, and
each run closes only its own parent run. And a run stopped (SIGSTOP) past its lease, whose work another run took
over, stops with a sentence on waking and leaves that run's parent RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import light_smoke
from tests.services import mlflow_server, postgres, postgres_bin

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


# `python -m xbench` with the process's wall clock moved by argv[1] seconds: every time.time() it and MLflow read.
SKEWED_CLOCK = (
    "import runpy, sys, time\n"
    "skew, real = float(sys.argv.pop(1)), time.time\n"
    "time.time = lambda: real() + skew\n"
    "sys.argv[0] = 'xbench'\n"
    "runpy.run_module('xbench', run_name='__main__')\n"
)


def _xbench(workdir: Path, name: str, suite: Path, url: str, skew_s: float, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-c", SKEWED_CLOCK, str(skew_s), "run", "suite", str(suite), "--tracking-uri", url]
    command += ["--cache-dir", str(workdir / f"{name}-cache"), "--threads", "1"]
    with (workdir / f"{name}.log").open("w") as log:  # the child keeps its own descriptor
        return subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})


def _two_runs_at_once(url: str, workdir: Path) -> None:
    suite = light_smoke(workdir)
    # two hosts (their own host identities, so liveness is the beat counter), the second's clock 5 minutes ahead
    runs = {
        name: _xbench(workdir, name, suite, url, skew, {"XBENCH_HOST_ID": f"{name}-host"})
        for name, skew in (("first", 0.0), ("second", 300.0))
    }
    for name, process in runs.items():
        code = process.wait()
        assert code == 0, f"the {name} run exited {code}:\n{(workdir / f'{name}.log').read_text()[-3000:]}"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("xbench/smoke")
    cells = client.search_runs([experiment.experiment_id], "tags.`xbench.role` = 'cell'", max_results=1000)
    assert all(run.info.status == "FINISHED" for run in cells), [run.info.status for run in cells]
    per_key = Counter(run.data.tags["xbench.cell_key"] for run in cells)
    assert len(per_key) == 8 and set(per_key.values()) == {1}, per_key  # 2 CRs x 2 explainers x 2 seeds, once each
    parents = client.search_runs([experiment.experiment_id], "tags.`xbench.role` = 'suite'")
    assert all(run.info.status == "FINISHED" for run in parents)
    owners = {run.data.tags["xbench.lease.owner"] for run in parents}
    assert len(owners) == len(parents)  # no run adopted another's parent
    logged_by = Counter(run.data.tags["mlflow.parentRunId"] for run in cells)
    assert sum(logged_by.values()) == 8 and set(logged_by) <= {run.info.run_id for run in parents}


def test_two_runs_of_one_suite_share_a_sqlite_backed_server(tmp_path: Path) -> None:
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server") as url:
        _two_runs_at_once(url, tmp_path)


def test_two_runs_of_one_suite_share_a_postgresql_backed_server(tmp_path: Path) -> None:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed and this user cannot apt-get it (apt-get install postgresql)")
    with postgres(tmp_path / "pg") as database, mlflow_server(database, tmp_path / "server") as url:
        _two_runs_at_once(url, tmp_path)


def _poll(condition: Callable[[], bool]) -> None:
    """Wait for `condition()`, with no deadline of the test's own: a slower machine only waits longer."""
    while not condition():
        time.sleep(0.2)


def test_a_run_stopped_past_its_lease_stops_with_a_sentence_and_leaves_the_run_that_took_over_running(
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient

    suite = light_smoke(tmp_path)
    fast = {"XBENCH_LEASE_HEARTBEAT_S": "0.5", "XBENCH_LEASE_TTL_S": "3"}
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server") as url:
        client = MlflowClient(tracking_uri=url)

        def runs(role: str) -> list:
            experiment = client.get_experiment_by_name("xbench/smoke")
            if experiment is None:
                return []
            return client.search_runs([experiment.experiment_id], f"tags.`xbench.role` = '{role}'", max_results=1000)

        def finished_cells() -> int:
            return sum(run.info.status == "FINISHED" for run in runs("cell"))

        stopped = _xbench(tmp_path, "stopped", suite, url, 0.0, {**fast, "XBENCH_HOST_ID": "host-a"})
        _poll(lambda: finished_cells() >= 1)
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            assert stopped.poll() is None and finished_cells() < 8, "the run finished before it could be stopped"
            [parent] = runs("suite")
            # another host's run: it watches the stopped run's counter stand still for 3 s, then takes its work over
            taker = _xbench(tmp_path, "taker", suite, url, 0.0, {**fast, "XBENCH_HOST_ID": "host-b"})
            _poll(
                lambda: client.get_run(parent.info.run_id).data.tags["xbench.lease.pid"] == str(taker.pid),
            )
            os.kill(taker.pid, signal.SIGSTOP)  # still working when the stopped run wakes
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
        code = stopped.wait()
        said = (tmp_path / "stopped.log").read_text()
        assert code == 3, said[-3000:]
        assert "lost its lease" in said and "Traceback" not in said, said[-3000:]
        after = client.get_run(parent.info.run_id)
        assert after.info.status == "RUNNING" and after.data.tags["xbench.lease.pid"] == str(taker.pid)
        os.kill(taker.pid, signal.SIGCONT)
        assert taker.wait() == 0, (tmp_path / "taker.log").read_text()[-3000:]
        cells = runs("cell")
        per_key = Counter(run.data.tags["xbench.cell_key"] for run in cells)
        assert len(per_key) == 8 and set(per_key.values()) == {1}, per_key  # each cell logged once
        assert all(run.info.status == "FINISHED" for run in cells)
        assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_a_server_started_with_auth_refuses_anonymous_clients_and_logs_an_authenticated_run(tmp_path: Path) -> None:
    import os
    import urllib.error
    import urllib.request

    from tests.conftest import xbench

    suite = light_smoke(tmp_path)
    admin = {"XBENCH_SERVER_ADMIN": "lab-admin", "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-secret-12345"}
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server", "--auth", env=admin) as url:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
        assert refused.value.code == 401
        anonymous = xbench(
            "run", "suite", str(suite), "--tracking-uri", url, "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path
        )
        # refused for want of credentials, in a sentence that says what to set, not some other failure
        assert anonymous.returncode == 2, anonymous.stderr[-2000:]
        assert "needs credentials (401)" in anonymous.stderr and "MLFLOW_TRACKING_USERNAME" in anonymous.stderr
        assert "Traceback" not in anonymous.stderr
        credentials = {"MLFLOW_TRACKING_USERNAME": "lab-admin", "MLFLOW_TRACKING_PASSWORD": "a-long-secret-12345"}
        xbench(
            "run",
            "suite",
            str(suite),
            "--tracking-uri",
            url,
            "--cache-dir",
            str(tmp_path / "cache"),
            cwd=tmp_path,
            env=credentials,
            check=True,
        )
        from mlflow.tracking import MlflowClient

        os.environ.update(credentials)
        try:
            client = MlflowClient(tracking_uri=url)
            experiment = client.get_experiment_by_name("xbench/smoke")
            cells = client.search_runs([experiment.experiment_id], "tags.`xbench.role` = 'cell'")
            assert len(cells) == 8 and all(run.info.status == "FINISHED" for run in cells)
        finally:
            for key in credentials:
                os.environ.pop(key)
    assert (tmp_path / "server" / "mlflow-basic-auth.ini").stat().st_mode & 0o077 == 0  # owner-only
