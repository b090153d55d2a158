"""`xbench leaderboard build`: the static leaderboard site from the MLflow store."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Build the static leaderboard.", no_args_is_help=True)


@app.command("build")
def build_command(
    suite: list[str] | None = typer.Option(None, "--suite", help="Suite(s) to include (repeat); default: every suite."),
    out: Path = typer.Option(Path("leaderboard/site"), "--out", help="Output folder."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
    bundles: list[Path] | None = typer.Option(
        None,
        "--from",
        help="Read results bundles (from `xbench export --bundle DIR`, yours or other people's) instead of the MLflow "
        "store; repeat to merge several into one site, each with its provenance.",
    ),
    max_accuracy_drop: float | None = typer.Option(
        None,
        "--max-accuracy-drop",
        help="Accuracy's equivalence margin and the sweet spots' allowed drop (0.01 = 1 point). Default: the suite's "
        "equivalence.accuracy, else 0.01.",
    ),
    mlflow_url: str | None = typer.Option(
        None,
        "--mlflow-url",
        help="The MLflow UI's address (e.g. http://127.0.0.1:5000, as `xbench ui` serves it): each cell row links to "
        "its runs there, and each suite page to its runs.",
    ),
) -> None:
    """Write a self-contained static site (opens from file:// or any static host; no CDN, no server): index.html
    listing every suite, and per suite a page headed by safe compression (per model, pruning and explainer the largest
    CR at which accuracy and every metric are equivalent to CR 1 or better), every comparison's verdict, the sweet-spot
    report, the sortable, filterable table of cells (95 % intervals over seeds and images, best per model
    highlighted), each metric against compression rate, Pareto views, Kendall tau agreement between metrics, a gallery
    of heatmaps across compression rates, and provenance.

    Example: xbench leaderboard build --suite quick --out leaderboard/site

    Example: xbench leaderboard build --from ours.bundle --from theirs.bundle   (each suite ranked on its own)

    Example: xbench leaderboard build --suite quick --mlflow-url http://127.0.0.1:5000   (with `xbench ui` running)
    """
    from xbench.core.errors import XbenchInputError
    from xbench.present.leaderboard import build
    from xbench.present.loading import load_suite
    from xbench.store.bundle import open_results

    if max_accuracy_drop is not None and not 0 < max_accuracy_drop <= 1:
        raise XbenchInputError(f"must be between 0 and 1, got {max_accuracy_drop}", field="--max-accuracy-drop")
    if not bundles:
        store = open_results(tracking_uri, None)
        names = suite or store.suites()
        if not names:
            raise XbenchInputError(f"no suite results in {store.uri}; run `xbench run suite smoke` first")
        loaded = [load_suite(store, name) for name in names]
    else:
        loaded = []
        for path in bundles:
            try:  # a bundle from someone else that fails its checks is refused, by name, and nothing is written
                source = open_results(tracking_uri, path)
                loaded += [load_suite(source, name) for name in source.suites() if not suite or name in suite]
            except XbenchInputError as error:
                raise XbenchInputError(f"refused bundle {path}: {error}", field="--from") from None
        if not loaded:
            raise XbenchInputError(f"none of the bundles holds suite {', '.join(suite or [])}", field="--suite")
    index = build(loaded, out, max_accuracy_drop, mlflow_url)
    typer.echo(f"wrote {index}")
