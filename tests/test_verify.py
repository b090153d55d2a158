"""`xbench verify-metrics` through the CLI's main (JSON figures per metric, bad input exits 2), and its floor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import xbench_here
from xbench.measure.verify import floor_run, random_inputs


@pytest.mark.slow  # over 30 s: out of the fast lane, in `make test-all` and CI
def test_verify_metrics_reports_difference_times_and_floor_as_json(tmp_path: Path) -> None:
    arguments = ["--device", "cpu", "--model", "resnet10t", "--image-size", "32", "--images", "2"]
    metrics = ["--metric", "selectivity", "--metric", "road"]
    result = xbench_here("verify-metrics", *arguments, *metrics, "--format", "json", cwd=tmp_path, check=True)
    report = json.loads(result.stdout)
    assert report["device"] == "cpu" and report["best_batch_size"] > 0
    rows = {row["metric"]: row for row in report["metrics"]}
    assert set(rows) == {"selectivity", "road"}
    for row in rows.values():
        assert row["max_abs_diff"] <= 1e-4
        assert row["engine_seconds"] > 0 and row["reference_seconds"] > 0 and row["floor_seconds"] > 0
        assert row["floor_ratio"] == row["engine_seconds"] / row["floor_seconds"]
    assert "1-channel" in rows["road"]["note"]


def test_verify_metrics_names_the_engine_metrics_on_a_typo(tmp_path: Path) -> None:
    result = xbench_here("verify-metrics", "--metric", "pixel_flip", cwd=tmp_path)
    assert result.returncode == 2 and "pixel_flipping" in result.stderr + result.stdout


def test_floor_runs_exactly_the_counted_passes_at_the_best_batch_size() -> None:
    model, *_ = random_inputs("test_resnet", 32, 1, seed=0)
    batches: list[tuple[int, bool]] = []
    model.register_forward_hook(lambda _, inputs, __: batches.append((len(inputs[0]), inputs[0].requires_grad)))
    run = floor_run(model, (3, 32, 32), torch.device("cpu"), batch_size=8, forward_passes=20, backward_passes=6)
    seconds = run()
    # 14 forward-only passes: two full batches, the second pro-rated; 6 back-propagated: fewer than a batch, so one
    # batch of their own (a full batch pro-rated would be a floor nothing can reach)
    assert batches == [(8, False), (8, False), (6, True)]
    assert 0 < seconds < float("inf")
