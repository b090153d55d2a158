"""The small, fixed-seed version of `benchmarks/calibration.py`: the statistics keep their error rates on data shaped
like the study's (seeds × images crossed for the metrics; workers × images for people). The full table (2,000 runs a
setting) is in the README; this holds its worst settings with fewer runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def calibration():
    spec = importlib.util.spec_from_file_location("calibration", ROOT / "benchmarks" / "calibration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
