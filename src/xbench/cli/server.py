"""`xbench server start`: an MLflow tracking server for a team, its runs on PostgreSQL, its artifacts served by it."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlparse

import typer

app = typer.Typer(help="A shared MLflow tracking server (PostgreSQL) for studies run by many processes or machines.")

DATABASE_SCHEMES = ("postgresql", "mysql", "mysql+pymysql", "mssql", "sqlite")


def server_command(backend_store_uri: str, artifacts: Path, host: str, port: int, workers: int) -> list[str]:
    """The `mlflow server` command line: runs in the database, artifacts uploaded to and served by the server
    (`--serve-artifacts`), so clients need nothing but the server's URL."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--serve-artifacts", "--artifacts-destination", str(artifacts.resolve()),
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


@app.command("start")
def start_command(
    backend_store_uri: str = typer.Option(
        ...,
        "--backend-store-uri",
        help="Where runs live: postgresql://USER:PASSWORD@HOST:PORT/DATABASE (the database must exist; MLflow "
        "creates its tables on first start).",
    ),
    artifacts: Path = typer.Option(
        Path("mlflow-artifacts"), "--artifacts", help="Directory (or mounted volume) where the server keeps artifacts."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on; 0.0.0.0 for other machines."),
    port: int = typer.Option(5000, "--port"),
    workers: int = typer.Option(2, "--workers", help="Server worker processes."),
    print_only: bool = typer.Option(False, "--print", help="Print the mlflow command instead of running it."),
) -> None:
    """Run an MLflow tracking server for xbench on PostgreSQL: `xbench run ... --tracking-uri http://HOST:PORT` from
    any number of processes and machines then log to it, and its UI shows every run.

    Example: xbench server start --backend-store-uri postgresql://xbench:secret@db:5432/xbench --host 0.0.0.0
    """
    from xbench.errors import XbenchInputError

    scheme = urlparse(backend_store_uri).scheme
    if scheme not in DATABASE_SCHEMES:
        raise XbenchInputError(
            f"must be a database URI ({', '.join(DATABASE_SCHEMES)}), got {backend_store_uri!r}",
            field="--backend-store-uri",
        )
    if scheme.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401  (SQLAlchemy 2.1 talks to PostgreSQL through psycopg 3)
        except ImportError:
            message = "PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'"
            raise XbenchInputError(message, field="--backend-store-uri") from None
    command = server_command(backend_store_uri, artifacts, host, port, workers)
    shown = shlex.join(command).replace(backend_store_uri, _without_password(backend_store_uri))
    if print_only:
        typer.echo(shown)
        return
    artifacts.mkdir(parents=True, exist_ok=True)
    typer.echo(f"MLflow tracking server on http://{host}:{port}: {shown}", err=True)
    os.execv(command[0], command)  # the server is this process from here on, so signals reach it directly


def _without_password(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@")
    return uri
