"""`xbench export`: one flat record per cell, as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer

from xbench.cli.choices import JsonOrCsv


def export_command(
    suite: str = typer.Option(..., "--suite", help="Suite name (as in its YAML `name:`)."),
    format: JsonOrCsv = typer.Option(JsonOrCsv.json, "--format", help="json | csv"),
    output: Path | None = typer.Option(None, "-o", "--output", help="File to write; default: stdout."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
    bundle: Path | None = typer.Option(
        None,
        "--bundle",
        help="Write a self-describing results folder instead (manifest with versions, each cell's result.json, raw "
        "arrays as .npy, per-image scores as CSV, human studies): what `stats`, `check`, `leaderboard build` and "
        "`human export` read with --from DIR.",
    ),
) -> None:
    """Export the latest finished result of every cell of a suite: flat records (JSON or CSV), or a results bundle.

    Example: xbench export --suite quick --format csv -o quick.csv

    Example: xbench export --suite quick --bundle quick-results && xbench stats --suite quick --from quick-results
    """
    from xbench.core.errors import XbenchInputError
    from xbench.store.tracking import Store

    if bundle is not None:
        from xbench.store.bundle import write_bundle

        if output is not None:
            raise XbenchInputError("a bundle is a folder: give --bundle DIR or -o FILE, not both", field="--bundle")
        written = write_bundle(Store(tracking_uri), suite, bundle)
        typer.echo(f"wrote the results bundle of suite {suite} to {written}", err=True)
        return
    records = Store(tracking_uri).load_results(suite)
    if format == "json":
        text = json.dumps(records, indent=2, default=str)
    else:
        columns = list(dict.fromkeys(key for record in records for key in record))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in record.items()})
        text = buffer.getvalue()
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text)
        typer.echo(f"wrote {len(records)} records to {output}", err=True)
