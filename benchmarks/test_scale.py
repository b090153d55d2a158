"""How the Ray backend scales, measured side by side in one session (`make bench`, or
`pytest benchmarks/test_scale.py --benchmark-only --benchmark-json=benchmarks/scale.json`).

Each suite runs from an empty cache, every worker with one torch thread:
- throughput: `benchmarks/scale.yaml` (8 seeds, so eight independent training chains; 48 cells) on Ray with 1 and
  with 2 workers, alternating, 3 rounds. Reported: the ratio of 2 workers' cells per second over 1 worker's (the
  issue asks >= 1.8 on 2 cores).
- overhead: `smoke` on the local backend and on Ray with 1 worker, alternating, 5 rounds, Ray two ways: a cluster
  started once beforehand (`ray start --head --num-cpus 1`, joined with `--address`; how a cluster is used) and the
  one-command local cluster xbench starts and stops itself (adds Ray's own start, ~3 s, and stop, ~1.1 s). Reported:
  how much longer each Ray run takes than the local one beside it (the issue asks <= 10 %).
Two times per run, both reported:
- wall: the whole command, everything a user waits for: imports, planning, the cluster's start, the workers' imports,
  training, explaining, scoring, the driver logging each cell to MLflow, the cluster's shutdown;
- execution: the suite's parent MLflow run, from its opening (the plan is made; the graph is submitted next) to the
  last cell logged. It still includes waiting for Ray's workers to start and import torch, but not the driver's own
  imports and planning or the shutdown: a fixed cost of 10-20 s on these machines that a real study (hundreds of
  cells, each minutes of fine-tuning) does not notice, and that a 24-cell suite does.
For the throughput a third, `computing`: execution less the parent run's `seconds_waiting_for_a_worker`, the part of
it before the first worker could take a task (Ray's start, the worker's imports; longer with two workers importing at
once on two cores). It is the rate at which cells get done once the cluster is up, the fixed start-up cost aside,
which wall and execution include; all three are reported.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xbench.core.suite import SUITES_DIR

ROOT = Path(__file__).resolve().parents[1]
SMOKE = SUITES_DIR / "smoke.yaml"
SCALE = ROOT / "benchmarks" / "scale.yaml"
LOCAL = ["--threads", "1"]
RAY_1 = ["--backend", "ray", "--workers", "1", "--threads", "1"]
RAY_2 = ["--backend", "ray", "--workers", "2", "--threads", "1"]
RAY_1_RUNNING = ["--backend", "ray", "--address", "auto", "--threads", "1"]  # the cluster `ray start` started
# This machine's speed drifts by tens of percent over minutes: configurations alternate, ratios are per round.
# XBENCH_SCALE_ROUNDS: fewer rounds of the long part when time is short (the JSON records the rounds run).
SCALE_ROUNDS, SMOKE_ROUNDS = int(os.environ.get("XBENCH_SCALE_ROUNDS", "3")), 5


def _seconds(suite: Path, arguments: list[str]) -> tuple[float, float, float]:
    """(wall, execution, computing) seconds of one run of `suite` from an empty cache and store (see the module
    docstring)."""
    with tempfile.TemporaryDirectory(prefix="xbench-scale-") as workdir:
        environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        environment["OMP_NUM_THREADS"] = "1"
        command = [
            sys.executable,
            "-m",
            "xbench",
            "run",
            "suite",
            str(suite),
            "--no-progress",
            "--cache-dir",
            str(Path(workdir) / "cache"),
            *arguments,
        ]
        started = time.perf_counter()
        finished = subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True)
        assert finished.returncode == 0, f"{' '.join(command)}:\n{finished.stderr[-3000:]}"
        wall = time.perf_counter() - started
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/xbench.db")
        (parent,) = client.search_runs(client.search_experiments()[0].experiment_id, "tags.`xbench.role` = 'suite'")
        execution = (parent.info.end_time - parent.info.start_time) / 1000
        return wall, execution, execution - parent.data.metrics.get("seconds_waiting_for_a_worker", 0.0)


def _alternating(suite: Path, rounds: int, *configurations: list[str]) -> list[tuple[tuple[float, ...], ...]]:
    """((wall, execution, computing) of each configuration), `rounds` times, one after the other so each round sees
    the same machine."""
    return [tuple(_seconds(suite, arguments) for arguments in configurations) for _ in range(rounds)]


@contextlib.contextmanager
def _running_cluster(cpus: int) -> Iterator[None]:
    """A Ray cluster started beforehand with `ray start --head` (one task slot per CPU), stopped at the end with `ray
    stop`, which stops every Ray process of this user on the machine: run the benchmark on a quiet machine."""
    ray = Path(sys.executable).with_name("ray")
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(
        [
            str(ray),
            "start",
            "--head",
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=environment,
        check=True,
        capture_output=True,
    )
    try:
        yield
    finally:
        subprocess.run([str(ray), "stop", "--force"], env=environment, check=False, capture_output=True)


def test_ray_backend_scaling(benchmark: pytest.FixtureRequest) -> None:
    measured: dict[str, list[tuple[tuple[float, ...], ...]]] = {}

    def all_configurations() -> None:
        measured["scale"] = _alternating(SCALE, SCALE_ROUNDS, RAY_1, RAY_2)
        with _running_cluster(cpus=1):
            measured["smoke"] = _alternating(SMOKE, SMOKE_ROUNDS, LOCAL, RAY_1_RUNNING, RAY_1)

    benchmark.pedantic(all_configurations, rounds=1, iterations=1)
    # The same cells either way, so a ratio of times is a ratio of throughputs (cells per second).
    info: dict[str, object] = {}
    lines = []
    for index, kind in enumerate(("wall", "execution")):
        speedups = [one[index] / two[index] for one, two in measured["scale"]]
        running = [ray[index] / local[index] - 1 for local, ray, _ in measured["smoke"]]
        started = [ray[index] / local[index] - 1 for local, _, ray in measured["smoke"]]
        info |= {
            f"scale_{kind}_seconds_ray_1_worker_ray_2_workers": [
                [round(a[index], 1), round(b[index], 1)] for a, b in measured["scale"]
            ],
            f"throughput_ratio_2_over_1_workers_{kind}": [round(s, 3) for s in speedups],
            f"throughput_ratio_median_{kind}": round(statistics.median(speedups), 3),
            f"smoke_{kind}_seconds_local_ray_running_cluster_ray_started_by_xbench": [
                [round(r[index], 1) for r in one_round] for one_round in measured["smoke"]
            ],
            f"ray_1_worker_running_cluster_overhead_vs_local_{kind}": [round(o, 3) for o in running],
            f"ray_running_cluster_overhead_median_{kind}": round(statistics.median(running), 3),
            f"ray_1_worker_started_by_xbench_overhead_vs_local_{kind}": [round(o, 3) for o in started],
            f"ray_started_by_xbench_overhead_median_{kind}": round(statistics.median(started), 3),
        }
        lines.append(
            f"{kind}: 2 workers / 1 worker {[f'{s:.2f}' for s in speedups]} (median "
            f"{statistics.median(speedups):.2f}); Ray (1 worker) over local: on a running cluster "
            f"{[f'{o:+.1%}' for o in running]} (median {statistics.median(running):+.1%}), on a cluster xbench "
            f"starts {[f'{o:+.1%}' for o in started]} (median {statistics.median(started):+.1%})"
        )
    # Throughput once the cluster is up (index 2); not for the overhead, where waiting for Ray is what is measured.
    speedups = [one[2] / two[2] for one, two in measured["scale"]]
    info |= {
        "scale_seconds_waiting_for_a_worker_ray_1_worker_ray_2_workers": [
            [round(a[1] - a[2], 1), round(b[1] - b[2], 1)] for a, b in measured["scale"]
        ],
        "scale_computing_seconds_ray_1_worker_ray_2_workers": [
            [round(a[2], 1), round(b[2], 1)] for a, b in measured["scale"]
        ],
        "throughput_ratio_2_over_1_workers_computing": [round(s, 3) for s in speedups],
        "throughput_ratio_median_computing": round(statistics.median(speedups), 3),
    }
    lines.append(
        f"computing: 2 workers / 1 worker {[f'{s:.2f}' for s in speedups]} (median {statistics.median(speedups):.2f})"
    )
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(lines))
    # The claims, as ratios of runs side by side: two workers do ≥ 1.8× the cells per second of one once the cluster
    # is up, and Ray on a running cluster adds ≤ 10 % to a local run's execution.
    assert info["throughput_ratio_median_computing"] >= 1.8, lines[-1]
    assert info["ray_running_cluster_overhead_median_execution"] <= 0.10, lines[1]
