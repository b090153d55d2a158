"""`xbench leaderboard build`: the static leaderboard site from the MLflow store."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Build the static leaderboard.", no_args_is_help=True)


@app.command("build")
def build_command(
    suite: list[str] | None = typer.Option(None, "--suite", help="Suite(s) to include; default: every suite."),
    out: Path = typer.Option(Path("leaderboard/site"), "--out", help="Output folder."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
) -> None:
    """Write a self-contained index.html (opens from file://, no CDN) with a sortable table of every cell.

    Example: xbench leaderboard build --suite quick --out leaderboard/site
    """
    from xbench.errors import XbenchInputError
    from xbench.leaderboard import build
    from xbench.tracking import Store

    store = Store(tracking_uri)
    names = suite or store.suites()
    if not names:
        raise XbenchInputError(f"no suite results in {store.uri}; run `xbench run suite smoke` first")
    index = build({name: store.load_results(name) for name in names}, out)
    typer.echo(f"wrote {index}")
