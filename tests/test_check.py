import math

from tests import factories
from xbench.analyse.check import compare, failed, make_baseline


def record(
    key: str = "k1", accuracy: float = 0.9, sparseness: float = 0.5, complexity: float = 7.0, seed: int = 0
) -> dict:
    """A CR-2 cell's record (from a typed result); `key` names the cell instead of its hash, for readable checks."""
    result = factories.cell_result(
        "m",
        2.0,
        "saliency",
        seed,
        scores={"sparseness": [sparseness], "complexity": [complexity]},
        higher_is_better={"sparseness": True, "complexity": False},
        figures={"accuracy": accuracy},
    )
    return {**factories.record(result), "cell_key": key}


def statuses(findings: list) -> dict:
    return {(f.cell_key, f.metric): f.status for f in findings}


def test_unchanged_results_pass() -> None:
    baseline = make_baseline("s", [record()])
    findings = compare(baseline, [record()])
    assert not failed(findings)
    assert set(statuses(findings).values()) == {"ok"}


def test_a_worse_score_beyond_tolerance_regresses_in_its_direction() -> None:
    baseline = make_baseline("s", [record()], {"default": {"abs": 0.01, "rel": 0.0}})
    findings = compare(baseline, [record(sparseness=0.4, complexity=7.5)])
    assert failed(findings)
    assert statuses(findings)[("k1", "sparseness")] == "regressed"  # higher is better, went down
    assert statuses(findings)[("k1", "complexity")] == "regressed"  # lower is better, went up
    improved = compare(baseline, [record(sparseness=0.6, complexity=6.5)])
    assert not failed(improved)
    assert statuses(improved)[("k1", "complexity")] == "improved"


def test_changes_within_tolerance_hold() -> None:
    baseline = make_baseline("s", [record()], {"default": {"abs": 0.0, "rel": 0.1}, "accuracy": {"abs": 0.05}})
    assert not failed(compare(baseline, [record(accuracy=0.86, sparseness=0.46, complexity=7.6)]))
    assert failed(compare(baseline, [record(accuracy=0.84)]))


def test_missing_cells_fail_and_new_cells_are_reported() -> None:
    baseline = make_baseline("s", [record("k1"), record("k2")])
    findings = compare(baseline, [record("k1"), record("k3")])
    assert statuses(findings)[("k2", "*")] == "missing_cell"
    assert statuses(findings)[("k3", "*")] == "new_cell"
    assert failed(findings)


def test_a_score_that_became_nan_regresses() -> None:
    baseline = make_baseline("s", [record()])
    assert statuses(compare(baseline, [record(sparseness=math.nan)]))[("k1", "sparseness")] == "regressed"


def _replicates(sparseness: tuple[float, float], accuracy: tuple[float, float] = (0.9, 0.9)) -> list[dict]:
    return [
        record(f"k{seed}", accuracy=acc, sparseness=value, seed=seed)
        for seed, (value, acc) in enumerate(zip(sparseness, accuracy, strict=True))
    ]


def test_without_rules_the_tolerance_is_three_seed_spreads() -> None:
    """Two seeds at 0.50 and 0.52: spread 0.01414, tolerance 0.0424; a regression must exceed it."""
    baseline = make_baseline("s", _replicates((0.50, 0.52)))
    assert baseline["tolerances"] == {} and baseline["seeds"] == [0, 1]
    assert math.isclose(baseline["cells"]["k0"]["seed_spread"]["sparseness"], 0.0141421356, rel_tol=1e-6)
    assert not failed(compare(baseline, _replicates((0.50, 0.52))))  # the same seeds again
    within = compare(baseline, _replicates((0.47, 0.52)))  # 0.03 worse: inside the seed noise
    assert statuses(within)[("k0", "sparseness")] == "ok"
    planted = compare(baseline, _replicates((0.44, 0.52)))  # 0.06 worse: beyond 3 spreads
    assert statuses(planted)[("k0", "sparseness")] == "regressed"
    tolerance = next(f.tolerance for f in planted if f.metric == "sparseness" and f.cell_key == "k0")
    assert math.isclose(tolerance, 3 * 0.0141421356, rel_tol=1e-6)


def test_seeds_that_agree_exactly_still_get_the_floor_and_given_rules_win() -> None:
    baseline = make_baseline("s", _replicates((0.5, 0.5)))
    assert not failed(compare(baseline, _replicates((0.495, 0.5))))  # floor: max(0.005, 0.0125 x 0.5)
    assert failed(compare(baseline, _replicates((0.49, 0.5))))
    ruled = make_baseline("s", _replicates((0.50, 0.52)), {"sparseness": {"abs": 0.001}})
    assert failed(compare(ruled, _replicates((0.497, 0.52))))


def _tested(seeds: int, shift: float, rng, noise: float = 0.05, truth=None) -> tuple[list[dict], dict]:
    """`seeds` replicates of one cell with per-image sparseness (64 images, truth + seed + image noise) moved by
    `shift`, and per-image correctness."""
    import numpy as np

    truth = np.linspace(0.3, 0.7, 64) if truth is None else truth
    records, per_image = [], {}
    for seed in range(seeds):
        scores = truth + shift + rng.normal(0, noise) + rng.normal(0, noise, 64)
        r = {**record(f"k{seed}", sparseness=float(scores.mean()), seed=seed), "run_id": f"run{seed}"}
        records.append(r)
        per_image[r["run_id"]] = {"sparseness": scores, "complexity": np.full(64, 7.0), "correct": np.ones(64)}
    return records, per_image


def test_a_baseline_with_per_image_scores_is_tested_seed_noise_passes_and_a_shift_beyond_the_tolerance_fails() -> None:
    """Tested through `decide` (5 seeds, noise SD one tolerance per seed and image): new noise on the same truth
    passes; every image 6 tolerances worse in every seed regresses with its Holm p; half a tolerance worse holds; the
    finding names the cell without its seed."""
    import numpy as np

    rng = np.random.default_rng(3)
    records, per_image = _tested(5, 0.0, rng)
    baseline = make_baseline("s", records, {"default": {"abs": 0.05}}, per_image)
    assert baseline["version"] == 3 and len(baseline["cells"]["k0"]["per_image"]["sparseness"]) == 64
    rerun = _tested(5, 0.0, rng)
    assert not failed(compare(baseline, *rerun))
    worse = compare(baseline, *_tested(5, -0.3, rng))
    (finding,) = [f for f in worse if f.metric == "sparseness"]
    assert finding.status == "regressed" and finding.p is not None and finding.p < 0.05
    assert finding.label == "m | magnitude CR 2 | saliency" and finding.tolerance == 0.05
    assert not failed(compare(baseline, *_tested(5, -0.025, rng)))


def test_the_tested_gate_fails_a_shift_exactly_at_the_tolerance_at_most_5_percent_of_the_time() -> None:
    """Calibration: 300 reruns whose true shift is exactly one tolerance worse (the boundary of what it forbids):
    the share failed is at most 5 % plus the simulation's error; 5 tolerances worse (4 beyond it, 7 seed-mean SEs)
    is failed nearly always."""
    import numpy as np

    rng = np.random.default_rng(11)
    truth = np.linspace(0.3, 0.7, 64)
    baseline = make_baseline("s", *_tested_pair(rng, truth))
    at_tolerance = [failed(compare(baseline, *_tested(3, -0.05, rng, truth=truth))) for _ in range(300)]
    beyond = [failed(compare(baseline, *_tested(3, -0.25, rng, truth=truth))) for _ in range(50)]
    assert np.mean(at_tolerance) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 300)
    assert np.mean(beyond) >= 0.9


def _tested_pair(rng, truth) -> tuple:
    records, per_image = _tested(3, 0.0, rng, noise=0.0, truth=truth)  # a noiseless baseline: the truth itself
    return records, {"default": {"abs": 0.05}}, per_image


def test_when_nothing_varies_the_point_change_decides_and_damaged_scores_are_a_clear_error() -> None:
    import numpy as np
    import pytest

    from xbench.core.errors import XbenchInputError

    rng = np.random.default_rng(5)
    records, per_image = _tested(2, 0.0, rng, noise=0.0)
    baseline = make_baseline("s", records, {"default": {"abs": 0.05}}, per_image)
    assert not failed(compare(baseline, records, per_image))  # the same scores: ok
    shifted = {k: {**v, "sparseness": v["sparseness"] - 0.06} for k, v in per_image.items()}
    assert statuses(compare(baseline, records, shifted))[("m | magnitude CR 2 | saliency", "sparseness")] == "regressed"
    baseline["cells"]["k0"]["per_image"]["sparseness"][3] = "0.5"
    with pytest.raises(XbenchInputError, match="per-image scores must be a list of numbers"):
        compare(baseline, records, per_image)
