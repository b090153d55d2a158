"""What two cores give to two independent processes, the ceiling of any 2-worker speed-up on this machine
(`pytest benchmarks/test_parallel_ceiling.py --benchmark-only --benchmark-json=benchmarks/parallel_ceiling.json -s`).

No Ray, no MLflow, no xbench: one process, then two at once, each training timm's `test_resnet` (the scale suite's
model) for a fixed number of steps on random 48 px images with one torch thread. Reported per round: the throughput
of two over one, 2 x (one process's seconds) / (the slower of the two processes' seconds). A perfect machine gives 2;
a virtual machine whose two vCPUs share a physical core, a memory bus or a busy host gives less, and the 2-worker
figure of `test_scale.py` can only be read against it. Rounds alternate so each pair sees the same machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

import pytest

ROUNDS = 5
STEPS = 120  # about 13 s a process on this machine: long enough that its start-up jitter does not count
WORKLOAD = f"""
import sys, time, torch, timm
torch.set_num_threads(1)
torch.manual_seed(0)
model = timm.create_model("test_resnet", num_classes=10, pretrained=False)
optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
images, labels = torch.randn(32, 3, 48, 48), torch.randint(0, 10, (32,))
print("ready", flush=True)
sys.stdin.readline()  # every process starts its loop at once, after all have imported torch
started = time.perf_counter()
for _ in range({STEPS}):
    optimiser.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimiser.step()
print(time.perf_counter() - started)
"""


def _seconds(processes: int) -> float:
    """Seconds of the slowest of `processes` copies of the workload, their loops started together once all have
    imported torch."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = [
        subprocess.Popen(
            [sys.executable, "-c", WORKLOAD], env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    for process in running:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
    for process in running:  # all told to start before any is waited for
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate()[0] for process in running]
    assert all(process.returncode == 0 for process in running)
    return max(float(output) for output in outputs)


def test_two_processes_over_one(benchmark: pytest.FixtureRequest) -> None:
    measured: list[tuple[float, float]] = []
    benchmark.pedantic(lambda: measured.extend((_seconds(1), _seconds(2)) for _ in range(ROUNDS)), rounds=1)
    ratios = [2 * one / two for one, two in measured]
    benchmark.extra_info.update(
        {
            "seconds_one_process_two_processes": [[round(one, 2), round(two, 2)] for one, two in measured],
            "throughput_ratio_2_over_1_processes": [round(r, 3) for r in ratios],
            "throughput_ratio_median": round(statistics.median(ratios), 3),
        }
    )
    print(f"\n2 processes / 1: {[f'{r:.2f}' for r in ratios]} (median {statistics.median(ratios):.2f})")
