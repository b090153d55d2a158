"""Real servers for the cluster tests: a PostgreSQL cluster from Debian's package and an `mlflow server` on it.

PostgreSQL's `initdb` and `pg_ctl` refuse to run as root, so as root they run as the package's `postgres` user
(created by the package); the package is installed with apt-get when it is missing and the tests run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STARTUP_LIMIT_S = 600  # a server that has not answered by then is broken, not slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def debian_package(package: str) -> None:
    """apt-get install `package` when the tests run as root on Debian (a no-op otherwise: callers check the files)."""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
            subprocess.run(command, capture_output=True, text=True, env=environment, check=False)


def postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server programs, installing Debian's package when missing and possible."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        debian_package("postgresql")
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist_dir() -> Path | None:
    """Debian's `dataset-fashion-mnist` files (the four idx .gz files), installing the package when missing."""
    if not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        debian_package("dataset-fashion-mnist")
    return FASHION_MNIST_DIR if (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists() else None


def _as_owner(command: list[str]) -> list[str]:
    """Root runs PostgreSQL's programs as the `postgres` user; anyone else as themselves."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    """A fresh PostgreSQL cluster on a free loopback port with a database `mlflow`; yields its SQLAlchemy URI."""
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    # Outside pytest's private temp tree, which the `postgres` user cannot enter.
    cluster = Path(tempfile.mkdtemp(prefix="xbench-pg-"))
    data, sockets = cluster / "data", cluster / "sockets"
    data.mkdir()
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (cluster, data, sockets):
            shutil.chown(path, "postgres", "postgres")
    port = free_port()
    run = {"check": True, "capture_output": True, "text": True}
    subprocess.run(_as_owner([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "xbench"]), **run)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    log = cluster / "postgres.log"
    subprocess.run(
        _as_owner(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(log),
                "-w",
                "-t",
                str(STARTUP_LIMIT_S),
                "start",
            ]
        ),
        **run,
    )
    try:
        subprocess.run(
            [str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "xbench", "mlflow"], **run
        )
        yield f"postgresql://xbench@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            _as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            capture_output=True,
            check=False,
        )
        if log.exists():
            workdir.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, workdir / "postgres.log")
        shutil.rmtree(cluster, ignore_errors=True)


@contextmanager
def mlflow_server(database_uri: str, workdir: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`xbench server start` on the database, artifacts under `workdir`; yields http://127.0.0.1:PORT."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "mlflow-server.log").open("w")
    command = [
        sys.executable,
        "-m",
        "xbench",
        "server",
        "start",
        "--backend-store-uri",
        database_uri,
        "--artifacts",
        str(workdir / "artifacts"),
        "--port",
        str(port),
        "--workers",
        "1",
        *options,
    ]
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited {server.returncode}: {(workdir / 'mlflow-server.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except urllib.error.HTTPError as error:
                if error.code == 401:  # up, and asking who we are (--auth)
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer: {(workdir / 'mlflow-server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait()
        log.close()
