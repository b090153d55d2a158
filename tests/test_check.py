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
