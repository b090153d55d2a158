import math

from xbench.check import compare, failed, make_baseline


def record(key: str = "k1", accuracy: float = 0.9, sparseness: float = 0.5, complexity: float = 7.0) -> dict:
    return {
        "cell_key": key,
        "model": "m",
        "pruning_method": "magnitude",
        "compression_rate": 2.0,
        "explainer": "saliency",
        "accuracy": accuracy,
        "sparseness": sparseness,
        "complexity": complexity,
        "metric_directions": {"sparseness": "higher", "complexity": "lower"},
    }


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
