"""The driver: runs a suite from one process. It gets the plan (made where the cells run), skips the cells already
finished in the store, hands the rest to a backend as a task graph and logs each `CellResult` to MLflow as it arrives;
a run that crashed or was killed resumes when started again.

On the local backend the driver is also where the cells run; on Ray it plans, submits the graph and logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xbench.core.cache import Cache
from xbench.core.cells import Cell, PlannedSuite, plan_key
from xbench.core.errors import XbenchLeaseLost
from xbench.core.progress import log, track
from xbench.core.results import ArtifactStore, CellResult
from xbench.core.suite import Suite
from xbench.execute import backends, planmemo
from xbench.execute.backends import BackendOptions, RayCluster
from xbench.plan.graph import build_graph
from xbench.store.leases import Heartbeat, Lease
from xbench.store.mapping import EQUIVALENCE_TAG, FAILURE_TAG, REFERENCE_TAG, Pictures
from xbench.store.tracking import Store


def flat_figures(result: CellResult) -> dict[str, float]:
    """The result's figures with each metric's mean beside them (the end-of-run table)."""
    return {**result.figures, **{name: metric.mean for name, metric in result.metrics.items()}}


def run_tags(suite: Suite, suite_path: Path | None) -> dict[str, str]:
    """What a run of the suite adds to every cell it logs."""
    return {"xbench.suite": suite.name, "xbench.suite_file": str(suite_path) if suite_path else ""}


@dataclass
class RunSummary:
    suite: str
    tracking_uri: str
    total_cells: int
    skipped: int
    completed: list[tuple[Cell, dict[str, float]]] = field(default_factory=list)
    parent_run_id: str | None = None
    experiment_id: str | None = None
    seconds: float = 0.0
    held_by_others: int = 0  # cells another live run of the suite had claimed (they are its to log)


def run_suite(
    suite: Suite,
    suite_path: Path | None = None,
    tracking_uri: str | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    on_cell: Callable[[Cell, CellResult], None] | None = None,
    backend: BackendOptions | None = None,
    cluster: RayCluster | None = None,
    pictures: Pictures | None = None,
) -> RunSummary:
    """Plan, skip the cells already finished in the store, run the rest on `backend` (local by default; ray on
    `cluster`, started here if not given, shut down at the end) and log each one as it finishes.

    Everything that can be wrong with the input is checked before the store or cache is touched.
    """
    started = time.perf_counter()
    options = (backend or BackendOptions()).validated()
    requested = device if device is not None else suite.device
    # Ray starts (and its workers import torch) while this process opens the store; the CLI starts it even earlier.
    if options.name == "ray" and cluster is None:
        cluster = RayCluster(options, requested).start()
    try:
        from xbench.execute.runner import (
            prepare,  # torch, timm, Quantus: planning checks every name and parameter with them
        )

        device_used, decided_elsewhere = backends.decide_device(requested, options, cluster)
        if decided_elsewhere is not None:
            log(f"cells run on {device_used}: {decided_elsewhere}")
        planned = prepare(suite, device_used, decided_elsewhere)
        cache = Cache(cache_dir)
        planmemo.remember(cache, suite, requested, [c.cell_key for c in planned.cells], options.address)
        for model_name, explainer_name, reason in planned.left_out:
            log(f"left out {model_name} x {explainer_name}: {reason}")
        store = Store(tracking_uri)
        # One writer per suite and SQLite store: a second `xbench run` of the suite waits here, then finds the cells
        # the first one finished, so no cell is run or logged twice and no run is discarded while it is being written.
        with store.exclusive(suite.name):
            return _run_cells(suite, suite_path, planned, store, cache, on_cell, started, options, cluster, pictures)
    finally:
        if cluster is not None:
            cluster.shutdown()


def _run_cells(
    suite: Suite,
    suite_path: Path | None,
    planned: PlannedSuite,
    store: Store,
    cache: Cache,
    on_cell: Callable[[Cell, CellResult], None] | None,
    started: float,
    options: BackendOptions,
    cluster: RayCluster | None,
    pictures: Pictures | None = None,
) -> RunSummary:
    cells = planned.cells
    experiment_id = store.experiment_id(suite.name, create=True)
    assert experiment_id is not None
    if suite.reference is not None:  # the leaderboard shows the suite beside it
        store.set_experiment_tag(experiment_id, REFERENCE_TAG, suite.reference)
    # `xbench stats` and the leaderboard read the margins from here (the store is what they see of a suite)
    store.set_experiment_tag(experiment_id, EQUIVALENCE_TAG, json.dumps(suite.equivalence, sort_keys=True))
    done = store.finished_cells(experiment_id)
    todo = [cell for cell in cells if cell.cell_key not in done]
    summary = RunSummary(suite.name, store.uri, len(cells), len(cells) - len(todo), experiment_id=experiment_id)
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary
    lease = Lease.mine()
    tags = {**run_tags(suite, suite_path), **planned.environment, "xbench.backend": options.name}
    opened = time.time()
    parent = store.open_parent(
        experiment_id, plan_key(cells), f"{suite.name} {time.strftime('%Y-%m-%d %H:%M')}", tags, lease
    )
    summary.parent_run_id = parent
    status = "FAILED"
    claims = None
    with Heartbeat(store.uri, parent, lease, say=log) as heartbeat:
        try:
            claims = store.claim_cells(experiment_id, parent, todo)
            if claims.discarded:
                log(f"discarded {claims.discarded} unfinished cell run(s) left by an interrupted run")
            if claims.held_by_others:
                holders = ", ".join(sorted(set(claims.held_by_others.values())))
                log(
                    f"{len(claims.held_by_others)} cell(s) are being run by another xbench run of this suite "
                    f"({holders}); they will be in the store when it finishes"
                )
                summary.held_by_others = len(claims.held_by_others)
            todo = [cell for cell in todo if cell.cell_key in claims.mine]
            if todo:
                _compute(
                    suite,
                    suite_path,
                    todo,
                    planned,
                    store,
                    cache,
                    on_cell,
                    options,
                    cluster,
                    experiment_id,
                    parent,
                    claims.mine,
                    done,
                    summary,
                    pictures,
                    heartbeat,
                )
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except XbenchLeaseLost:
            claims = None  # its claims were discarded by the run that took over; nothing of this run's to withdraw
            raise
        except Exception as error:  # the parent says why it failed, in the UI beside its status
            why = f"{type(error).__name__}: {error}"
            store.client.set_tag(parent, FAILURE_TAG, why[:4000])
            raise
        finally:
            if claims is not None:  # claims this run will not fill: withdrawn, so no one waits for them
                store.withdraw([run_id for key, run_id in claims.mine.items() if key not in done])
            summary.seconds = time.perf_counter() - started
            figures = {
                "cells_total": len(cells),
                "cells_run": len(summary.completed),
                "cells_skipped": summary.skipped,
                "cells_held_by_other_runs": summary.held_by_others,
                "seconds": summary.seconds,
            }
            if cluster is not None and cluster.first_worker_ready_at is not None:
                # The part of this run's time that only waited for Ray to start a worker and the worker to import
                # torch, timm, the explainers and metrics: a fixed cost per run, not per cell.
                figures["seconds_waiting_for_a_worker"] = max(0.0, cluster.first_worker_ready_at - opened)
            store.close_parent(parent, figures, status, lease)  # not if another run has adopted it meanwhile
    return summary


def _compute(
    suite: Suite,
    suite_path: Path | None,
    todo: list[Cell],
    planned: PlannedSuite,
    store: Store,
    cache: Cache,
    on_cell: Callable[[Cell, CellResult], None] | None,
    options: BackendOptions,
    cluster: RayCluster | None,
    experiment_id: str,
    parent: str,
    claims: dict[str, str],
    done: dict[str, str],
    summary: RunSummary,
    pictures: Pictures | None = None,
    heartbeat: Heartbeat | None = None,
) -> None:
    """Run the claimed cells on the backend and log each into its claim as it finishes, while this run's lease
    holds: a run that lost it (stopped past its lease, its claims taken over) logs nothing more."""
    graph = build_graph(todo)
    if options.name != "local":
        counts = graph.counts()
        log(
            f"suite {suite.name} on {options.name}: {counts.get('train', 0)} trainings, {counts.get('prune', 0)} "
            f"pruning steps, {counts.get('cell', 0)} cells; longest chain {graph.critical_path()} nodes"
        )
    artifacts = ArtifactStore(cache.root / "artifacts")
    finished = backends.results(graph, options, cache.root, planned.device, cluster)
    try:
        for result in track(
            finished, f"suite {suite.name}", total=len(todo), transient=False, describe=lambda r: r.cell.label
        ):
            if result.cell_key in done:  # a result already logged (a retried task that had finished) stays once
                continue
            claim = claims.get(result.cell_key)
            _check_lease(suite, store, heartbeat, claim, result.cell.label)
            try:
                store.log_result(
                    experiment_id,
                    parent,
                    result,
                    artifacts,
                    run_tags(suite, suite_path),
                    claim=claim,
                    pictures=pictures,
                )
            except Exception as error:  # the claim may have been discarded while this run was logging into it
                _check_lease(suite, store, heartbeat, claim, result.cell.label, error)
                raise
            done[result.cell_key] = parent
            summary.completed.append((result.cell, flat_figures(result)))
            if on_cell is not None:
                on_cell(result.cell, result)
    finally:
        finished.close()


def _check_lease(
    suite: Suite,
    store: Store,
    heartbeat: Heartbeat | None,
    claim: str | None,
    label: str,
    error: Exception | None = None,
) -> None:
    """Raise `XbenchLeaseLost` if this run's lease or its claim on the cell is gone."""
    why = None
    if heartbeat is not None and heartbeat.lost.is_set():
        why = heartbeat.why
    elif claim is not None and store.claim_discarded(claim):
        why = f"its claim on cell {label} was discarded by another run that judged this run dead"
    if why is not None:
        raise XbenchLeaseLost(suite.name, why) from error
