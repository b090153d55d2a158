"""Two `xbench run suite smoke` at once against one real `mlflow server`, backed by SQLite and by PostgreSQL: both exit
0, every cell is logged exactly once, no claim is left behind, and each run closes only its own parent run."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import light_smoke
from tests.services import mlflow_server, postgres, postgres_bin

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _two_runs_at_once(url: str, workdir: Path) -> None:
    suite = light_smoke(workdir)
    runs = []
    for name in ("first", "second"):
        log = (workdir / f"{name}.log").open("w")
        command = [
            sys.executable,
            "-m",
            "xbench",
            "run",
            "suite",
            str(suite),
            "--tracking-uri",
            url,
            "--cache-dir",
            str(workdir / f"{name}-cache"),
            "--threads",
            "1",
        ]
        runs.append((subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT), log, name))
    for process, log, name in runs:
        code = process.wait()
        log.close()
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
        assert anonymous.returncode != 0
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
