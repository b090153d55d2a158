"""`xbench export`: one flat record per cell, as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer


def export_command(
    suite: str = typer.Option(..., "--suite", help="Suite name (as in its YAML `name:`)."),
    format: str = typer.Option("json", "--format", help="json | csv"),
    output: Path | None = typer.Option(None, "-o", "--output", help="File to write; default: stdout."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
) -> None:
    """Export the latest finished result of every cell of a suite.

    Example: xbench export --suite quick --format csv -o quick.csv
    """
    from xbench.core.errors import XbenchInputError
    from xbench.store.tracking import Store

    if format not in ("json", "csv"):
        raise XbenchInputError(f"must be json or csv, got {format!r}", field="--format")
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
