"""`xbench ui`: the MLflow UI on xbench's store."""

from __future__ import annotations

import subprocess
import sys

import typer


def ui_command(
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
    port: int = typer.Option(5000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
) -> None:
    """Open the MLflow UI on the store: one experiment per suite, a parent run per `xbench run`, a child per cell.

    Example: xbench ui --port 5001   (then browse http://127.0.0.1:5001)
    """
    from xbench.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    typer.echo(f"MLflow UI for {uri} on http://{host}:{port} (Ctrl-C to stop)")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(command))
