"""`xbench check`: compare a suite's latest results with a committed baseline (exit 0 ok, 1 regressed, 2 bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table


def check_command(
    baseline: Path | None = typer.Option(None, "--baseline", help="Baseline JSON to compare against."),
    write_baseline: Path | None = typer.Option(None, "--write-baseline", help="Write the current results here."),
    suite: str | None = typer.Option(None, "--suite", help="Suite name; default: the baseline's suite."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
    bundle: Path | None = typer.Option(
        None, "--from", help="Read a results bundle (from `xbench export --bundle DIR`) instead of the MLflow store."
    ),
    show_all: bool = typer.Option(False, "--all", help="List unchanged metrics too."),
) -> None:
    """Gate a change on its results: accuracy and every explainability metric, per cell, each with its direction
    and the baseline's tolerance (max(abs, rel x |baseline|)). A baseline with per-image scores (what
    --write-baseline writes) is tested: per cell over its seeds, the current per-image scores against the
    baseline's; a metric regresses when it is shown worse than its tolerance (Holm over the gate's comparisons), so
    seed noise alone fails it at most 5 % of the time.

    Example: xbench check --baseline leaderboard/baselines/smoke.json
    """
    from xbench.analyse import check
    from xbench.core.errors import XbenchInputError
    from xbench.core.progress import console
    from xbench.store.bundle import open_results

    if (baseline is None) == (write_baseline is None):
        raise XbenchInputError("give exactly one of --baseline FILE or --write-baseline FILE")
    if write_baseline is not None:
        if suite is None:
            raise XbenchInputError("--write-baseline needs --suite NAME")
        source = open_results(tracking_uri, bundle)
        records = source.load_results(suite)
        previous = json.loads(write_baseline.read_text()) if write_baseline.is_file() else {}
        data = check.make_baseline(suite, records, previous.get("tolerances"), source.per_image_scores(records))
        write_baseline.parent.mkdir(parents=True, exist_ok=True)
        write_baseline.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        typer.echo(f"wrote baseline of {len(records)} cells to {write_baseline}")
        return
    assert baseline is not None
    expected = check.read_baseline(baseline)
    name = suite or expected["suite"]
    source = open_results(tracking_uri, bundle)
    records = source.load_results(name)
    findings = check.compare(expected, records, source.per_image_scores(records))
    shown = [f for f in findings if show_all or f.status != "ok"]
    counts = {
        s: sum(f.status == s for f in findings) for s in ("regressed", "improved", "ok", "missing_cell", "new_cell")
    }
    if shown:
        table = Table(title=f"xbench check: suite {name} vs {baseline}")
        tested = any(f.p is not None for f in findings)
        columns = ("status", "cell", "metric", "baseline", "current", "tolerance", "better")
        for column in (*columns, "p worse than tolerance (Holm)") if tested else columns:
            table.add_column(column)
        for f in sorted(shown, key=lambda f: (f.status != "regressed", f.label, f.metric)):
            colour = {"regressed": "red", "missing_cell": "red", "improved": "green"}.get(f.status, "")
            table.add_row(
                f"[{colour}]{f.status}[/]" if colour else f.status,
                f.label,
                f.metric,
                _fmt(f.baseline),
                _fmt(f.current),
                _fmt(f.tolerance),
                "higher" if f.higher_is_better else "lower",
                *((_fmt(f.p),) if tested else ()),
            )
        console.print(table)
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()))
    if check.failed(findings):
        raise typer.Exit(1)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
