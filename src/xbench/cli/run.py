"""`xbench run suite NAME_OR_PATH`: run a suite end to end, resuming where an earlier run stopped."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from xbench.cli.clock import COMMAND_STARTED
from xbench.core.cells import compression_method, quantization_label
from xbench.core.progress import console, progress_bars, stdout_console

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


def planned_cells(suite: object, seeds: int | None = None) -> int:
    """An upper bound of the cells a suite plans, counted without planning: models × (CR 1 + every pruning config's
    other rates) × explainers × seeds."""
    from xbench.core.suite import Suite

    assert isinstance(suite, Suite)
    variants = 1 + sum(len([r for r in p.compression_rates if r != 1]) for p in suite.pruning)
    return len(suite.models) * variants * len(suite.explainers) * (seeds or len(suite.replicate_seeds))


def _seed_list(seeds: list[int]) -> str:
    if len(seeds) > 12:
        return f"{', '.join(map(str, seeds[:5]))}, ..., {', '.join(map(str, seeds[-2:]))} ({len(seeds):,} seeds)"
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
    until_decided: bool = typer.Option(
        False,
        "--until-decided",
        help="Add seeds in rounds (--seeds-per-round) until every explainer's safe compression is decided (a safe CR "
        "up to the largest, or the next CR shown worse than its margin), or --max-seeds is reached. Each look is "
        "tested at its share of α (Pocock-type α spending), so the looks keep the suite's 5 % error rate.",
    ),
    max_cells: int = typer.Option(
        20_000,
        "--max-cells",
        min=1,
        help="Refuse a plan of more cells than this (a typo such as --seeds 0-100000 would otherwise plan for "
        "minutes and run for months); raise it for a study that big.",
    ),
    max_seeds: int = typer.Option(10, "--max-seeds", min=2, max=200, help="--until-decided: the most seeds to run."),
    seeds_per_round: int = typer.Option(
        2, "--seeds-per-round", min=1, max=50, help="--until-decided: seeds added per round."
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

    Example: xbench run suite quick --until-decided --max-seeds 9   (3, 5, 7, 9 seeds until safe compression is decided)
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
    planned = planned_cells(suite, max_seeds if until_decided else None)
    if planned > max_cells:
        raise XbenchInputError(
            f"the suite would plan up to {planned:,} cells, more than --max-cells {max_cells:,} allows: check the "
            "seeds, compression rates and explainers, or raise --max-cells",
            field="--max-cells",
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
    if until_decided:
        run_until_decided(
            suite, RunPlace(path, tracking_uri, cache_dir, device, options, progress), max_seeds, seeds_per_round
        )
        return
    _run_once(suite, RunPlace(path, tracking_uri, cache_dir, device, options, progress))


@dataclass(frozen=True)
class RunPlace:
    """Where and how a run goes: the suite's file, the store, the cache, the device, the backend and progress bars."""

    path: Path | None
    tracking_uri: str | None
    cache_dir: Path | None
    device: str | None
    options: Any  # execute.backends.BackendOptions, imported when a run starts
    progress: bool


def _run_once(suite: object, place: RunPlace) -> None:
    """Run the suite's cells not yet in the store and print what ran."""
    path, tracking_uri, cache_dir, device, options, progress = (
        place.path,
        place.tracking_uri,
        place.cache_dir,
        place.device,
        place.options,
        place.progress,
    )
    from xbench.core.cache import Cache
    from xbench.core.suite import Suite
    from xbench.execute.backends import BackendOptions, RayCluster
    from xbench.execute.planmemo import finished_without_planning

    assert isinstance(suite, Suite) and isinstance(options, BackendOptions)
    requested = device or suite.device
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
    for column in ["model", "compression", "CR", "explainer", "acc", *metric_names, "ms p50"]:
        table.add_column(column, justify="left" if column in ("model", "compression", "explainer") else "right")
    for cell, figures in summary.completed:
        latency = next((v for k, v in sorted(figures.items()) if k.startswith("latency_ms_p50_bs")), None)
        table.add_row(
            cell.model.name,
            compression_method(cell.pruning.method if cell.pruning else "none", quantization_label(cell.quantization)),
            f"{cell.compression_rate:g}",
            cell.explainer.name,
            f"{figures.get('accuracy', float('nan')):.3f}",
            *(f"{figures.get(m, float('nan')):.3f}" for m in metric_names),
            f"{latency:.2f}" if latency is not None else "",
        )
    typer.echo("")
    stdout_console().print(table)  # stdout, so the table can be piped
    console.print(
        f"{summary.seconds:.0f} s · results in {summary.tracking_uri} (parent run {summary.parent_run_id}) · "
        + browse_hint(summary.suite, summary.tracking_uri, summary.experiment_id)
    )


def run_until_decided(suite: object, place: RunPlace, max_seeds: int, per_round: int) -> None:
    """Seeds in rounds until every safe-compression ladder is decided. Each look k is tested at its α-spending share
    (`analyse.decide.spent_levels`); a ladder decided at a look keeps that decision (the shares add up to α, so the
    suite's chance of a false safe CR stays ≤ 5 % across all looks)."""
    from xbench.analyse.decide import spent_levels
    from xbench.analyse.findings import SafeCompression, safe_compression
    from xbench.analyse.stats import suite_stats
    from xbench.core.errors import XbenchInputError
    from xbench.core.sequential import Sequential
    from xbench.core.suite import Suite, with_seeds
    from xbench.store.bundle import open_results
    from xbench.store.mapping import SEQUENTIAL_TAG
    from xbench.store.tracking import Store

    assert isinstance(suite, Suite)
    first = list(suite.replicate_seeds)
    if len(first) < 2:
        raise XbenchInputError("needs at least 2 seeds to start from (the suite's seeds or --seeds)", "--until-decided")
    if max_seeds < len(first):
        raise XbenchInputError(
            f"must be at least the {len(first)} seeds the run starts with, got {max_seeds}", field="--max-seeds"
        )
    looks = sorted({*range(len(first), max_seeds, per_round), max_seeds})
    levels = spent_levels(looks, max_seeds)
    extra = [seed for seed in range(max(first) + 1, max(first) + 1 + max_seeds)]
    decided: dict[tuple[str, str, str, str], tuple[int, SafeCompression]] = {}
    ladders: dict[tuple[str, str, str, str], SafeCompression] = {}
    looked: list[int] = []
    for look, (count, level) in enumerate(zip(looks, levels, strict=True), start=1):
        seeds = (first + extra)[:count]
        console.print(
            f"[bold]look {look} of at most {len(looks)}[/]: {count} seeds ({_seed_list(seeds)}), safe compression "
            f"tested at α = {level:.4f} (this look's share of 0.05)"
        )
        _run_once(with_seeds(suite, seeds), place)
        store = open_results(place.tracking_uri, None)
        records = [r for r in store.load_results(suite.name) if int(r.get("seed", 0)) in seeds]
        stats = suite_stats(records, store.per_image_scores(records), store.equivalence(suite.name))
        looked.append(count)
        for safe in safe_compression(stats, alpha=level):
            key = (safe.model, safe.pruning_method, safe.pruning_scope, safe.explainer)
            ladders.setdefault(key, safe)
            if safe.decided and key not in decided:
                decided[key] = (count, safe)
            elif key not in decided:
                ladders[key] = safe
        console.print(f"  {len(decided)} of {len(ladders)} explainer ladders decided")
        if ladders and len(decided) == len(ladders):
            break
    # recorded on the suite's experiment, so `xbench stats` and the page test these seeds at the last look's share
    # and keep the earlier looks' decisions (`analyse.findings.safe_compression`)
    record = Sequential(
        tuple(looked),
        tuple(levels[: len(looked)]),
        tuple(seeds),
        {
            key: (at, safe.safe_rate, safe.failed_rate, safe.shown_unsafe)
            for key, (at, safe) in decided.items()
            if at < count
        },
    )
    writer = Store(place.tracking_uri)
    experiment_id = writer.experiment_id(suite.name)
    if experiment_id is not None:
        writer.set_experiment_tag(experiment_id, SEQUENTIAL_TAG, record.to_json())
    console.print(f"[bold]suite {suite.name}: safe compression after {count} seeds[/]")
    for key, last in sorted(ladders.items()):
        model, method, _scope, explainer = key
        seeds_at, safe = decided.get(key, (count, last))
        when = f"decided at {seeds_at} seeds" if key in decided else f"undecided at {count} seeds"
        rate = "none" if safe.safe_rate is None else f"CR {safe.safe_rate:g}"
        blocked = (
            ""
            if safe.failed_rate is None
            else f"; CR {safe.failed_rate:g} "
            + ("shown worse than its margin" if safe.shown_unsafe else "not shown within its margin")
        )
        console.print(f"  {model} {method} {explainer}: safe up to {rate}{blocked} ({when})")


def browse_hint(suite: str, tracking_uri: str, experiment_id: str | None) -> str:
    """How to look at a suite's runs: the link `xbench ui` prints (the server's own UI for a tracking server)."""
    from xbench.store.links import runs_url, ui_base_url

    if experiment_id is None:
        return f"browse them with: xbench ui --suite {suite}"
    link = runs_url(ui_base_url(tracking_uri), experiment_id)
    if tracking_uri.startswith(("http://", "https://")):
        return f"browse them at {link}"
    return f"browse them with: xbench ui --suite {suite} --open  ({link})"
