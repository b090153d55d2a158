"""`xbench run suite NAME_OR_PATH`: run a suite end to end, resuming where an earlier run stopped."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from xbench.cli.clock import COMMAND_STARTED
from xbench.core.progress import console, progress_bars

app = typer.Typer(help="Run benchmarks.", no_args_is_help=True)
SUMMARY_METRICS = 6  # columns in the end-of-run table; every metric is in MLflow


def parse_seeds(text: str) -> list[int]:
    """'0-4,7' -> [0, 1, 2, 3, 4, 7]; an input error naming --seeds otherwise."""
    from xbench.core.errors import XbenchInputError

    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part:
                first, last = (int(v) for v in part.split("-", 1))
                if first > last:
                    raise ValueError
                seeds += range(first, last + 1)
            else:
                seeds.append(int(part))
        except ValueError:
            raise XbenchInputError(
                f"{part!r} is not a seed or a range FIRST-LAST of seeds >= 0 (e.g. 0-9 or 0,1,2)", field="--seeds"
            ) from None
    if any(seed < 0 for seed in seeds):
        raise XbenchInputError(f"seeds must be >= 0, got {text!r}", field="--seeds")
    return sorted(set(seeds))


def _seed_list(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds)) or "none"


@app.command("suite")
def run_suite_command(
    name_or_path: str = typer.Argument(
        ..., help="A built-in suite name (`xbench list suites`: quick, smoke, ...), ./suites/NAME.yaml, or a YAML file."
    ),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="MLflow store. Default: $MLFLOW_TRACKING_URI, else sqlite:///./xbench.db"
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Trained/pruned models and explanations. Default: $XBENCH_CACHE_DIR or ~/.cache/xbench",
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda (overrides the suite's device)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars on stderr."),
    backend: str = typer.Option(
        "local", "--backend", help="local (in this process) | ray (each training, pruning step and cell a Ray task)"
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="ray: an existing cluster (auto | HOST:PORT; one with a token needs RAY_AUTH_MODE=token and the token in "
        "RAY_AUTH_TOKEN or ~/.ray/auth_token); default: start a local one",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="ray: tasks at once in the local cluster. Default: one per core (/ --threads)"
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="torch threads per worker (ray) or for this process (local). Ray default: cores/workers"
    ),
    gpus_per_task: float | None = typer.Option(
        None, "--gpus-per-task", help="ray: GPUs each task reserves (fractions share a GPU). Default: 1 on CUDA, else 0"
    ),
    seeds: str | None = typer.Option(
        None,
        "--seeds",
        help="Training seeds to run instead of the suite's seeds: a range and/or list (0-9, 0,1,2, 0-4,7). Cells of "
        "seeds already run are reused, so this extends a finished suite by the new seeds' cells only.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the plan and check data, weights and masks are reachable; run nothing, write "
        "nothing. Exit 2 naming what is missing.",
    ),
) -> None:
    """Run every cell of a suite (model x pruning x compression rate x explainer) and log it to MLflow.

    Cells already finished in the store are skipped, so an interrupted run continues where it stopped and a finished
    suite re-runs in seconds.

    Every finished cell is logged once, whatever fails: a killed Ray worker's task is retried, and a killed run
    resumes when started again.

    Example: xbench run suite quick --device cpu

    Example: xbench run suite smoke --backend ray --workers 2 --tracking-uri http://127.0.0.1:5000

    Example: xbench run suite quick --seeds 0-4   (two more seeds for a 3-seed suite: only their cells run)
    """
    from xbench.core.errors import XbenchInputError
    from xbench.core.suite import load_suite, with_seeds
    from xbench.execute.backends import BackendOptions, RayCluster

    suite, path = load_suite(name_or_path)
    if seeds is not None:
        before = suite.replicate_seeds
        suite = with_seeds(suite, parse_seeds(seeds))
        added = [seed for seed in suite.replicate_seeds if seed not in before]
        dropped = [seed for seed in before if seed not in suite.replicate_seeds]
        console.print(
            f"suite {suite.name}: seeds {_seed_list(suite.replicate_seeds)} "
            f"(--seeds; the suite has {_seed_list(before)}"
            + (f"; new: {_seed_list(added)}" if added else "")
            + (f"; left out: {_seed_list(dropped)}" if dropped else "")
            + ")"
        )
    options = BackendOptions(backend, address, workers, threads, gpus_per_task).validated()
    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise XbenchInputError(f"must be auto, cpu or cuda, got {device!r}", field="--device")
    requested = device or suite.device
    if dry_run:
        from xbench.execute.backends import decide_device
        from xbench.plan.dryrun import dry_run as describe

        # The device as the run would decide it: a joined cluster is asked through a worker (nothing else runs).
        probe = RayCluster(options, requested).start() if options.name == "ray" and options.address else None
        try:
            device_used, decided_elsewhere = decide_device(requested, options, probe)
        finally:
            if probe is not None:
                probe.shutdown()
        report = describe(suite, device_used, decided_elsewhere)
        typer.echo("\n".join(report.lines))
        if report.problems:
            raise XbenchInputError("cannot run it from here:\n  " + "\n  ".join(report.problems))
        return
    from xbench.core.cache import Cache
    from xbench.execute.planmemo import finished_without_planning

    finished = finished_without_planning(suite, requested, Cache(cache_dir), tracking_uri, options.address)
    if finished is not None:
        console.print(
            f"suite {suite.name}: all {finished[0]} cells already in {finished[1]}; nothing to do "
            f"({time.time() - COMMAND_STARTED:.1f} s since the command started)"
        )
        return
    # Started before the heavy imports below, so Ray's start-up overlaps them.
    cluster = RayCluster(options, device or suite.device).start() if options.name == "ray" else None
    from xbench.execute.driver import run_suite
    from xbench.present.drawing import cell_pictures

    with progress_bars(progress):
        summary = run_suite(
            suite, path, tracking_uri, cache_dir, device, backend=options, cluster=cluster, pictures=cell_pictures
        )
    if not summary.completed:
        if summary.held_by_others:
            console.print(
                f"suite {suite.name}: {summary.held_by_others} cells are being run by another xbench run of this suite "
                f"and {summary.skipped} are already in {summary.tracking_uri}; nothing left for this run"
            )
            return
        console.print(
            f"suite {suite.name}: all {summary.total_cells} cells already in {summary.tracking_uri}; "
            f"nothing to do ({time.time() - COMMAND_STARTED:.1f} s since the command started)"
        )
        return
    metric_names = [spec.name for spec in suite.metrics][:SUMMARY_METRICS]
    more = len(suite.metrics) - len(metric_names)
    title = f"suite {suite.name}: {len(summary.completed)} cells run, {summary.skipped} already done"
    if summary.held_by_others:
        title += f", {summary.held_by_others} left to another run of the suite"
    if more:
        title += f" (first {len(metric_names)} metrics; {more} more in MLflow and `xbench export`)"
    table = Table(title=title)
    for column in ["model", "pruning", "CR", "explainer", "acc", *metric_names, "ms p50"]:
        table.add_column(column, justify="left" if column in ("model", "pruning", "explainer") else "right")
    for cell, figures in summary.completed:
        latency = next((v for k, v in sorted(figures.items()) if k.startswith("latency_ms_p50_bs")), None)
        table.add_row(
            cell.model.name,
            cell.pruning.method if cell.pruning else "none",
            f"{cell.compression_rate:g}",
            cell.explainer.name,
            f"{figures.get('accuracy', float('nan')):.3f}",
            *(f"{figures.get(m, float('nan')):.3f}" for m in metric_names),
            f"{latency:.2f}" if latency is not None else "",
        )
    typer.echo("")
    Console(width=max(console.width, 160)).print(table)  # stdout, so the table can be piped
    console.print(
        f"{summary.seconds:.0f} s · results in {summary.tracking_uri} (parent run {summary.parent_run_id}) · "
        + browse_hint(summary.suite, summary.tracking_uri, summary.experiment_id)
    )


def browse_hint(suite: str, tracking_uri: str, experiment_id: str | None) -> str:
    """How to look at a suite's runs: the link `xbench ui` prints (the server's own UI for a tracking server)."""
    from xbench.store.links import runs_url, ui_base_url

    if experiment_id is None:
        return f"browse them with: xbench ui --suite {suite}"
    link = runs_url(ui_base_url(tracking_uri), experiment_id)
    if tracking_uri.startswith(("http://", "https://")):
        return f"browse them at {link}"
    return f"browse them with: xbench ui --suite {suite} --open  ({link})"
