"""The small, fixed-seed version of `benchmarks/calibration.py`: the statistics keep their error rates on data shaped
like the study's (seeds × images crossed for the metrics; workers × images for people). The full table (2,000 runs a
setting, and 2,000 whole suites a row) is in docs/guide/statistics.md; this holds its worst settings with fewer runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _benchmark(name: str):
    """A script of benchmarks/ imported as a module (calibration.py puts benchmarks/ on sys.path for its helpers)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def calibration():
    return _benchmark("calibration")


def test_comparisons_keep_their_false_positive_rate_and_coverage_with_few_seeds(calibration) -> None:
    """With 3 and 5 seeds (where min F' rejected 7.1 % of nulls and the bootstrap interval covered 78 %), 1,000 runs
    a setting: at most 6 % false positives, at least 94 % coverage at δ = 0 and δ = 0.5."""
    settings = [(1.0, 1.0, 1.0), (0.25, 1.0, 1.0), (0.0, 1.0, 1.0)]
    result = calibration.calibrate(1000, 0, seed=7, paired_settings=settings, seeds=[3, 5], crowd_settings=[])
    assert len(result["paired"]) == 6
    for row in result["paired"]:
        assert row["false_positives"] <= 0.06, row
        assert row["coverage_null"] >= 0.94 and row["coverage_effect"] >= 0.94, row
        assert row["false_equivalence"] <= 0.06, row
    # power still grows with seeds, as it must
    power = {(r["seed_sd"], r["seeds"]): r["power_1"] for r in result["paired"]}
    assert power[(1.0, 5)] > power[(1.0, 3)] and power[(0.0, 3)] > 0.9


def test_crowd_p_counts_workers_and_images_where_the_answer_level_test_does_not(calibration) -> None:
    """No population preference, worker and image logit SDs 0.5 and 1, 20 workers × 30 images: the headline p is
    significant in at most 6 % of 300 studies; the seed paper's binomial over answers in far more."""
    result = calibration.calibrate(0, 300, seed=3, paired_settings=[], crowd_settings=[(20, 30, 0.5, 1.0, 1.0)])
    pairwise, identify = result["crowd"]
    assert pairwise["design"] == "pairwise" and pairwise["false_positives"] <= 0.06, pairwise
    assert pairwise["answer_level_false_positives"] > 0.2, pairwise
    assert identify["false_positives"] <= 0.06 and identify["power_0.5"] > 0.2, identify


@pytest.fixture(scope="module")
def suite_level(calibration):
    return _benchmark("suite_level")  # after calibration.py, which puts benchmarks/ on sys.path


def test_a_whole_suites_verdicts_keep_their_error_rates(suite_level) -> None:
    """The small, fixed-seed version of the suite-level table (the full one, 2,000 suites a row, is in the docs):
    `quick`-shaped suites with 3 seeds whose comparisons share seeds and images. Under no effect anywhere few suites
    show any better/worse; with every difference at its margin, no suite shows an equivalent or a safe CR; power for
    a one-SD effect is well above the 0.17 of one flat Holm at 2 df; a drop on the same few images is never called
    equivalent; following a 3-seed plan decides most of what it promised; `--until-decided` claims no false safe CR."""
    result = suite_level.suite_calibration(160, seed=3, seeds=(3,), plan_runs=0)
    three = result["suites"][0]
    assert three["suite_false_difference"] <= 0.08, three
    assert three["false_positives"] <= 0.06 and three["coverage_null"] >= 0.94, three
    assert three["suite_false_equivalence"] <= 0.05 and three["suite_false_safe"] <= 0.05, three
    assert three["power_1"] >= 0.25 and three["coverage_effect"] >= 0.93, three
    accuracy = {(r["images"], r["true_drop"]): r["called_equivalent"] for r in result["accuracy"]}
    assert accuracy[(64, 0.02)] <= 0.05 and accuracy[(2048, 0.02)] <= 0.05
    assert accuracy[(64, 0.0)] == 0 and accuracy[(2048, 0.0)] >= 0.9  # 64 images cannot show ±1 point; 2,048 can
    assert all(r["false_equivalence"] <= 0.06 for r in result["margins"]), result["margins"]
    assert result["sequential"]["suite_false_safe"] <= 0.05, result["sequential"]
    import numpy as np

    plan = suite_level.plan_rows(80, np.random.default_rng(12))
    assert plan["promised"] >= 10 and plan["delivered"] >= 0.75, plan
