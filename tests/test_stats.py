"""The statistics on hand-made cases whose answers are known, and by simulation of their error rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tests import factories
from xbench.analyse.findings import safe_compression
from xbench.analyse.inference import (
    ALPHA,
    CrossedMean,
    clustered_mean,
    compare_paired,
    crossed_mean,
    holm,
    seeds_to_decide,
)
from xbench.analyse.stats import suite_stats, verdict_of


def test_holm_matches_the_hand_computed_adjustment_and_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> raised to the running max 0.06
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)
    p_values = list(np.random.default_rng(0).uniform(0, 0.2, 40))
    assert holm(p_values) == pytest.approx(list(multipletests(p_values, method="holm")[1]), rel=1e-12)


def test_the_crossed_mean_is_the_variance_decomposition_computed_by_hand() -> None:
    """2 seeds × 3 images. Seed means 2, 3 (row mean square 0.5), image means 1.5, 2.5, 3.5 (column mean square 1),
    no interaction (residuals 0). Var(mean) = 0.5/2 + 1/3 - 0 = 7/12; the df is Satterthwaite's with the seed term
    at its 85 % upper bound: 0.25 · 1 / χ²(0.15; 1)."""
    table = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]])
    estimate = crossed_mean(table)
    assert estimate.mean == pytest.approx(2.5) and estimate.se == pytest.approx(math.sqrt(7 / 12))
    bounded = 0.25 / scipy_stats.chi2.ppf(0.15, 1)
    assert estimate.df == pytest.approx((bounded + 1 / 3) ** 2 / (bounded**2 / 1 + (1 / 3) ** 2 / 2))
    low, high = estimate.interval()
    half = scipy_stats.t.ppf(0.975, estimate.df) * math.sqrt(7 / 12)
    assert (low, high) == pytest.approx((2.5 - half, 2.5 + half))
    assert estimate.p == pytest.approx(2 * scipy_stats.t.sf(2.5 / math.sqrt(7 / 12), estimate.df))
    assert estimate.replicate_var == pytest.approx(0.5) and estimate.residual_var == pytest.approx(0.0)


def test_interval_p_and_equivalence_come_from_one_t_and_never_disagree() -> None:
    rng = np.random.default_rng(4)
    for _ in range(200):
        table = rng.normal(rng.normal(0, 0.3), 1, (3, 20)) + rng.normal(0, 0.5, (3, 1))
        estimate = crossed_mean(table)
        low, high = estimate.interval()
        assert (estimate.p < ALPHA) == (low > 0 or high < 0)
        margin = abs(rng.normal(0, 0.5)) + 0.01
        narrow_low, narrow_high = estimate.interval(1 - 2 * ALPHA)
        assert (estimate.p_equivalent(margin) < ALPHA) == (-margin < narrow_low and narrow_high < margin)


def test_one_seed_is_a_one_sample_t_over_images() -> None:
    values = np.array([[0.5, 1.0, 1.5, 2.0, 0.0]])
    estimate = crossed_mean(values)
    expected = scipy_stats.ttest_1samp(values[0], 0.0)
    assert estimate.p == pytest.approx(expected.pvalue) and estimate.df == 4


def test_an_image_some_seed_could_not_score_is_left_out_of_every_seed() -> None:
    reference = {0: np.array([1.0, 2.0, 3.0, 4.0]), 1: np.array([1.0, 2.0, 3.0, 4.0])}
    variant = {0: np.array([2.0, np.nan, 4.0, 5.0]), 1: np.array([2.5, 3.0, 4.5, 5.5])}  # image 1 constant in seed 0
    figures = compare_paired(reference, variant)
    assert figures["n_seeds"] == 2 and figures["n_images"] == 6 and figures["n_excluded"] == 2
    assert figures["reference_mean"] == pytest.approx(8 / 3) and figures["mean_diff"] == pytest.approx(1.25)


def _records(effects: dict[tuple[str, float], float], seeds: list[int], images: int = 40, residual: float = 0.5):
    """A suite of one model: explainer 'e', metric 'm' (higher is better) and accuracy; per-image scores are noise
    plus, for a (metric, CR), a planted shift. Seeds add their own offset to every CR alike."""
    rng = np.random.default_rng(11)
    results = []
    truth = rng.normal(0, 1, images)
    for seed in seeds:
        offset = rng.normal(0, 0.3)
        for rate in (1.0, 2.0, 4.0, 8.0):
            metric = truth + offset + rng.normal(0, residual, images) + effects.get(("m", rate), 0.0)
            correct = rng.random(images) < 0.9 - effects.get(("accuracy", rate), 0.0)
            results.append(factories.cell_result("net", rate, "e", seed, scores={"m": metric}, correct=correct))
    return factories.records_and_scores(results)


def test_a_planted_effect_is_found_and_null_effects_are_not_after_correction() -> None:
    records, per_image = _records({("m", 8.0): -1.0}, seeds=[0, 1, 2])
    stats = suite_stats(records, per_image)
    by_rate = {(c.metric, c.compression_rate): c for c in stats.comparisons}
    assert set(by_rate) == {(m, r) for m in ("m", "accuracy") for r in (2.0, 4.0, 8.0)}
    planted = by_rate[("m", 8.0)]
    assert planted.significant and planted.better is False and planted.ci_high < 0 < planted.p_holm < 0.05
    assert planted.verdict == "worse" and planted.seeds_needed is None
    assert planted.mean_diff == pytest.approx(-1.0, abs=0.15) and planted.n_seeds == 3 and planted.n_images == 120
    assert not any(c.significant for key, c in by_rate.items() if key != ("m", 8.0))
    assert all(c.p_holm >= c.p and c.p_equivalent_holm >= c.p_equivalent for c in stats.comparisons)
    assert all(c.verdict in ("equivalent", "undecided") for key, c in by_rate.items() if key != ("m", 8.0))


def test_no_change_with_a_precise_estimate_is_equivalent_within_the_margin() -> None:
    """Metric m unchanged at CR 2 with little residual noise: equivalent within ±0.2; within ±0.01 it is not."""
    records, per_image = _records({}, seeds=[0, 1, 2], images=64, residual=0.05)
    stats = suite_stats(records, per_image, {"m": 0.2})
    m2 = next(c for c in stats.comparisons if c.metric == "m" and c.compression_rate == 2.0)
    assert m2.verdict == "equivalent" and m2.margin == 0.2 and m2.p_equivalent_holm < 0.05
    tight = suite_stats(records, per_image, {"m": 0.01})
    m2 = next(c for c in tight.comparisons if c.metric == "m" and c.compression_rate == 2.0)
    assert m2.verdict == "undecided" and (m2.seeds_needed is None or m2.seeds_needed > 3)
    default = suite_stats(records, per_image)  # 0.2 × the CR-1 SD across images (about 1 here)
    m2 = next(c for c in default.comparisons if c.metric == "m" and c.compression_rate == 2.0)
    assert 0.15 < m2.margin < 0.25
    assert default.margins["accuracy"].startswith("±0.01")


def test_verdicts_follow_the_corrected_tests() -> None:
    assert verdict_of(0.001, 0.01, better=False) == "equivalent"  # a detectable difference inside the margin
    assert verdict_of(0.001, 0.5, better=False) == "worse"
    assert verdict_of(0.001, math.nan, better=True) == "better"
    assert verdict_of(0.2, 0.2, better=True) == "undecided"


def test_one_seed_is_flagged_as_a_test_within_one_trained_model() -> None:
    records, per_image = _records({("m", 2.0): 1.0}, seeds=[5])
    stats = suite_stats(records, per_image)
    assert stats.single_seed and all(c.within_one_trained_model for c in stats.comparisons)
    assert {(c.metric, c.compression_rate) for c in stats.comparisons if c.significant} == {("m", 2.0)}
    assert all(c.seeds_needed is None for c in stats.comparisons)  # no seed variance to plan with


def test_a_comparison_with_fewer_seeds_than_the_suite_says_so() -> None:
    records, per_image = _records({}, seeds=[0, 1, 2])
    records = [r for r in records if not (r["seed"] == 2 and r["compression_rate"] == 4.0)]  # one cell unfinished
    stats = suite_stats(records, per_image)
    short = [c for c in stats.comparisons if c.fewer_seeds_than_suite]
    assert {(c.metric, c.compression_rate) for c in short} == {("m", 4.0), ("accuracy", 4.0)}
    assert all(c.n_seeds == 2 and c.suite_seeds == 3 and c.to_dict()["fewer_seeds_than_suite"] for c in short)


def test_reliability_is_the_seed_to_seed_rank_agreement_of_a_metric() -> None:
    records, per_image = _records({("m", 2.0): 3.0, ("m", 4.0): 2.0, ("m", 8.0): 1.0}, seeds=[0, 1, 2])
    by_metric = {r.metric: r for r in suite_stats(records, per_image).reliability}
    assert by_metric["m"].seed_tau == pytest.approx(1.0) and by_metric["m"].seed_pairs == 3
    assert by_metric["m"].comparisons == 3 and by_metric["m"].significant_share == pytest.approx(1.0)


def test_a_difference_only_some_training_runs_show_is_not_significant() -> None:
    """Seeds that disagree: one model got much worse, the other two barely moved or improved. Over 3 x 64 (seed,
    image) pairs a test treating the pairs as independent calls it significant; the crossed test does not."""
    rng = np.random.default_rng(3)
    seed_effects = [0.3, -0.1, 0.05]
    differences = np.stack([effect + rng.normal(0, 0.1, 64) for effect in seed_effects])
    assert scipy_stats.ttest_1samp(differences.ravel(), 0.0).pvalue < 1e-6
    assert crossed_mean(differences).p > 0.3
    consistent = np.stack([0.1 + rng.normal(0, 0.1, 64) for _ in seed_effects])  # every run moved the same way
    assert crossed_mean(consistent).p < 0.01  # t ≈ 15, on 2 df: three training runs are three


def test_safe_compression_is_the_largest_cr_where_accuracy_and_every_metric_are_equivalent_or_better() -> None:
    records, per_image = _records({("m", 8.0): -1.0}, seeds=[0, 1, 2], images=64, residual=0.05)
    for scores in per_image.values():  # accuracy: unchanged and every image right
        scores["correct"] = np.ones_like(scores["correct"])
    stats = suite_stats(records, per_image, {"m": 0.2, "accuracy": 0.05})
    (safe,) = safe_compression(stats)
    assert safe.safe_rate == 4.0 and safe.rates == (2.0, 4.0, 8.0)
    assert [c.metric for c in safe.blocking[8.0]] == ["m"] and safe.blocking[8.0][0].verdict == "worse"


def test_after_until_decided_safe_compression_pays_for_the_looks_and_keeps_earlier_decisions() -> None:
    """The same data as above: without a record at α (safe to CR 4, a level of 0.05); with the record of an
    `--until-decided` run that looked at 2 and 3 seeds, at the last look's share; a ladder decided at the first look
    keeps that look's verdict and level; a record of other seeds, or a malformed or over-spent one, is ignored."""
    from xbench.analyse.decide import spent_levels
    from xbench.core.sequential import Sequential

    records, per_image = _records({("m", 8.0): -1.0}, seeds=[0, 1, 2], images=64, residual=0.05)
    for scores in per_image.values():
        scores["correct"] = np.ones_like(scores["correct"])
    margins = {"m": 0.2, "accuracy": 0.05}
    levels = tuple(spent_levels([2, 3], 3))
    looked = Sequential((2, 3), levels, (0, 1, 2), {})
    (plain,) = safe_compression(suite_stats(records, per_image, margins))
    key = (plain.model, plain.pruning_method, plain.pruning_scope, plain.explainer)
    (paid,) = safe_compression(suite_stats(records, per_image, margins, sequential=looked))
    assert plain.level == ALPHA and paid.level == pytest.approx(levels[1]) and paid.decided_at is None
    earlier = Sequential((2, 3), levels, (0, 1, 2), {key: (2, 2.0, 4.0, True)})
    (kept,) = safe_compression(suite_stats(records, per_image, margins, sequential=earlier))
    assert (kept.safe_rate, kept.failed_rate, kept.decided_at, kept.level) == (2.0, 4.0, 2, pytest.approx(levels[0]))
    other_seeds = Sequential((2, 3), levels, (0, 1, 5), {key: (2, 2.0, 4.0, True)})
    assert suite_stats(records, per_image, margins, sequential=other_seeds).sequential is None
    assert Sequential.from_json(earlier.to_json()) == earlier
    for damaged in ("{", '{"looks": [2], "levels": [0.2], "seeds": [0], "decided": []}', '{"looks": [2]}'):
        assert Sequential.from_json(damaged) is None  # unreadable, or spending more than α: tested as one look


def test_the_seeds_planned_for_a_comparison_decide_it_about_as_often_as_promised() -> None:
    """Plan from known variance components, then simulate that many seeds: the comparison is decided (shown
    different, or equivalent) in at least ~80 % of runs."""
    truth = CrossedMean(0.3, math.nan, math.nan, 3, 64, replicate_var=0.04, image_var=0.01, residual_var=0.25)
    seeds = seeds_to_decide(truth, margin=0.1, tests=1)
    assert seeds is not None and 3 < seeds < 50
    rng = np.random.default_rng(1)
    decided = 0
    for _ in range(400):
        table = 0.3 + rng.normal(0, 0.2, (seeds, 1)) + rng.normal(0, 0.1, (1, 64)) + rng.normal(0, 0.5, (seeds, 64))
        estimate = crossed_mean(table)
        decided += estimate.p < ALPHA or estimate.p_equivalent(0.1) < ALPHA
    assert decided / 400 >= 0.75
    fewer = seeds_to_decide(truth, margin=0.1, tests=64)
    assert fewer is not None and fewer >= seeds  # a stricter α needs more seeds
    assert seeds_to_decide(CrossedMean(0.3, 0.1, 2, 1, 64, math.nan, 0.01, math.nan), 0.1) is None


def test_crowd_answers_get_a_worker_and_image_clustered_standard_error() -> None:
    """Balanced workers × images: the two-way cluster variance is V_worker + V_image - V_answer (each with G/(G-1))."""
    rng = np.random.default_rng(2)
    workers, images = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    values = rng.normal(0, 1, workers.shape) + rng.normal(0, 1, (6, 1))
    estimate = clustered_mean(values.ravel(), [f"w{w}" for w in workers.ravel()], list(images.ravel()))
    residuals = values - values.mean()
    n = values.size
    by_worker = 6 / 5 * (residuals.sum(axis=1) ** 2).sum() / n**2
    by_image = 8 / 7 * (residuals.sum(axis=0) ** 2).sum() / n**2
    by_answer = n / (n - 1) * (residuals**2).sum() / n**2
    expected = max(by_worker + by_image - by_answer, by_worker, by_image)
    assert estimate.se == pytest.approx(math.sqrt(expected)) and estimate.df == 5
