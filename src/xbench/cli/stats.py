"""`xbench stats --suite NAME`: every pruned variant against CR 1 with CIs, effect sizes and Holm-corrected p-values."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import typer

COLUMNS = (
    "model", "pruning_method", "pruning_scope", "pruning_granularity", "pruning_schedule", "explainer", "metric",
    "compression_rate", "n_seeds", "n_images", "n_excluded", "reference_mean", "variant_mean", "mean_diff", "ci_low",
    "ci_high", "effect_size", "p", "p_holm", "significant", "better",
)  # fmt: skip


def _plain(value: object) -> object:
    """NaN and infinities as None, so the JSON is valid."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def stats_command(
    suite: str = typer.Option(..., "--suite", help="Suite name (as in its YAML `name:`)."),
    format: str = typer.Option("json", "--format", help="json | csv"),
    output: Path | None = typer.Option(None, "-o", "--output", help="File to write; default: stdout."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
) -> None:
    """The statistics the leaderboard shows, for scripts: one record per comparison (each metric and accuracy, each
    CR against CR 1 of the same model, pruning config and explainer), plus per-metric reliability across seeds.

    JSON: {"method", "seeds", "comparisons": [...], "reliability": [...]}. CSV: the comparisons only.

    Example: xbench stats --suite quick --format csv -o quick-stats.csv
    """
    from xbench.errors import XbenchInputError
    from xbench.stats import METHOD, suite_stats
    from xbench.tracking import Store

    if format not in ("json", "csv"):
        raise XbenchInputError(f"must be json or csv, got {format!r}", field="--format")
    store = Store(tracking_uri)
    records = store.load_results(suite)
    result = suite_stats(records, store.per_image_scores(records))
    comparisons = [{k: _plain(c.to_dict()[k]) for k in COLUMNS} for c in result.comparisons]
    if format == "json":
        text = json.dumps(
            {
                "suite": suite,
                "method": METHOD,
                "seeds": result.seeds,
                "within_one_trained_model": result.single_seed,
                "comparisons": comparisons,
                "reliability": [{k: _plain(v) for k, v in r.to_dict().items()} for r in result.reliability],
            },
            indent=2,
        )
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(comparisons)
        text = buffer.getvalue()
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text)
        significant = sum(c.significant for c in result.comparisons)
        typer.echo(f"wrote {len(comparisons)} comparisons ({significant} significant) to {output}", err=True)
