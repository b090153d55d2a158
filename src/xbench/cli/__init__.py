"""The `xbench` command line: one module per subcommand; input errors print one message and exit with code 2."""

from __future__ import annotations

# isort: off
from xbench.cli.clock import COMMAND_STARTED  # noqa: F401  (first, so the clock starts before the heavy imports)
# isort: on

import gc
import logging
import os
import sys
import warnings

import click
import typer
from rich.markup import escape

from xbench import __version__
from xbench.cli import check, export, human, leaderboard, listing, profile, run, server, stats, ui, verify
from xbench.core.errors import XbenchInputError, XbenchLeaseLost, XbenchRunFailure, XbenchStoreBusy
from xbench.core.progress import console

app = typer.Typer(
    name="xbench",
    help="How does pruning a vision model change how explainable it is? Benchmark suites of timm models x pruning "
    "methods/ratios x explainers, scored with Quantus and logged to MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(run.app, name="run")
app.add_typer(leaderboard.app, name="leaderboard")
app.add_typer(server.app, name="server")
app.add_typer(human.app, name="human")
app.command("list")(listing.list_command)
app.command("export")(export.export_command)
app.command("stats")(stats.stats_command)
app.command("check")(check.check_command)
app.command("profile")(profile.profile_command)
app.command("ui")(ui.ui_command)
app.command("verify-metrics")(verify.verify_metrics_command)


def _version(value: bool) -> None:
    if value:
        print(f"xbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """xbench: pruning x explainability benchmarks."""


def main(argv: list[str] | None = None) -> int:
    # The application's choice, made once here and not by library code: pytorch-grad-cam (Score-CAM) and Quantus print
    # a tqdm bar per batch and MLflow one per downloaded artifact; xbench's own bars say where a command is. Ray
    # workers of a cluster the command starts inherit it.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow logs its schema migrations at INFO on a new SQLite store, and warns about its own deprecations.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="sqlalchemy.*")
    try:
        result = app(args=argv, standalone_mode=False, prog_name="xbench")
    except XbenchInputError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except XbenchRunFailure as exc:
        for line in str(exc).splitlines():
            console.print(f"[bold red]failed:[/] {escape(line)}", highlight=False, soft_wrap=True)
        return 1
    except (XbenchLeaseLost, XbenchStoreBusy) as exc:
        console.print(f"[bold red]stopped:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 3
    except (click.exceptions.Abort, typer.Abort):
        console.print("aborted")
        return 130
    except (click.ClickException, typer.exceptions.TyperException) as exc:
        # typer bundles its own click: a usage error (a missing option, a value not among the choices) is one of its
        # exceptions, shown as click shows it, exit 2.
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        return int(getattr(exc, "exit_code", 2))
    except Exception as exc:
        refused = _refused_by_server(exc)
        if refused is None:
            raise  # an internal error stays a traceback, so bugs remain visible
        console.print(f"[bold red]error:[/] {escape(refused)}", highlight=False, soft_wrap=True)
        return 2
    return result if isinstance(result, int) else 0


def _refused_by_server(error: Exception) -> str | None:
    """A sentence for a tracking server that refused this client for want of credentials (MLflow raises its own
    exception with the HTTP status in the message), else None."""
    if not type(error).__module__.startswith("mlflow"):
        return None
    message = str(error)
    if "401" in message or "Unauthorized" in message:
        why = "needs credentials (401)"
    elif "403" in message or "Forbidden" in message:
        why = "does not let this user do that (403)"
    else:
        return None
    return (
        f"the MLflow tracking server {why}: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
        f"MLFLOW_TRACKING_TOKEN) to an account on it ({message.splitlines()[0][:200]})"
    )


def entry_point() -> None:
    code = main()
    # Everything is written and closed by now. What is left is the interpreter's final garbage collection over the
    # object graphs of torch, timm and Quantus: 1-2 s on every command for nothing. Frozen objects are skipped by it
    # (the atexit handlers, such as Ray's shutdown, still run).
    gc.freeze()
    sys.exit(code)
