"""`xbench ui`: the MLflow UI on xbench's store, opened on a suite's runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from types import FrameType

import typer

STOP_GRACE_S = 10  # how long the MLflow server gets to stop on SIGTERM before it is killed


def ui_command(
    suite: str | None = typer.Option(
        None, "--suite", help="The suite whose runs the printed link opens. Default: the first suite in the store."
    ),
    open_browser: bool = typer.Option(False, "--open", help="Open the link in the default browser once it answers."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
    port: int = typer.Option(5000, "--port", help="Port of the MLflow UI on this machine."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on; 0.0.0.0 for other machines."),
) -> None:
    """Start the MLflow UI on the store and print the link to a suite's runs: its parent run per `xbench run` and a
    nested run per cell, in MLflow's model-training view (a new browser otherwise opens MLflow 3's GenAI overview).
    For a tracking server (--tracking-uri http://...), print the link to its own UI and start nothing.

    Ctrl-C or SIGTERM stops the UI and every process it started.

    Example: xbench ui --suite quick --open

    Example: xbench ui --port 5001 --tracking-uri sqlite:///results/xbench.db
    """
    from xbench.core.errors import XbenchInputError
    from xbench.store.links import runs_url, ui_base_url
    from xbench.store.tracking import Store, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    store = Store(uri)
    suites = store.suites()
    if suite is not None and suite not in suites:
        raise XbenchInputError(f"no suite {suite!r} in {uri}; it has: {', '.join(suites) or 'none'}", field="--suite")
    name = suite or (suites[0] if suites else None)
    served = uri.startswith(("http://", "https://"))
    base = ui_base_url(uri, f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}")
    experiment_id = store.experiment_id(name) if name else None
    link = runs_url(base, experiment_id) if experiment_id else base + "/"
    what = f"suite {name}'s runs" if name else "the MLflow UI (no suite results yet: xbench run suite smoke)"
    if served:
        typer.echo(f"{what}: {link}")
        _open(link, open_browser)
        return
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    # Its own process group, so stopping it stops the server's workers too.
    server = subprocess.Popen(command, start_new_session=True)

    def stop(signum: int, _frame: FrameType | None) -> None:
        _stop_group(server)
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        if _wait_until_up(base, server):
            typer.echo(f"MLflow UI on {uri}: {what}: {link}  (Ctrl-C to stop)")
            _open(link, open_browser)
        code = server.wait()
    finally:
        _stop_group(server)
    raise typer.Exit(code)


def _wait_until_up(base: str, server: subprocess.Popen) -> bool:
    """Poll the server's health endpoint until it answers; False if the server exits first."""
    while server.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, then SIGKILL what is still there after `STOP_GRACE_S`."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # workers that outlived their parent


def _open(link: str, wanted: bool) -> None:
    if wanted:
        import webbrowser

        if not webbrowser.open(link):
            typer.echo("no browser found here: open the link above yourself", err=True)
