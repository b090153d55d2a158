"""The statistics on hand-made cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import permutation_test

from xbench.stats import (
    compare_paired,
    hierarchical_bootstrap,
    holm,
    paired_permutation_p,
    seed_and_image_p,
    suite_stats,
)


def test_holm_matches_the_hand_computed_adjustment() -> None:
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> raised to the running max 0.06
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)


def test_the_hierarchical_bootstrap_resamples_seeds_as_well_as_images() -> None:
    """Seed A's differences are all 1, seed B's all 3: images add no spread, seeds do: means 1, 2 or 3 with chance
    1/4, 1/2, 1/4, so the 95 % interval is [1, 3], where a bootstrap over pooled images would give about [1.9, 2.1]."""
    draws = hierarchical_bootstrap([np.ones(50), np.full(50, 3.0)], resamples=4000)
    assert set(np.unique(draws)) == {1.0, 2.0, 3.0}
    assert np.mean(draws == 2.0) == pytest.approx(0.5, abs=0.03)
    assert np.percentile(draws, [2.5, 97.5]) == pytest.approx([1.0, 3.0])


def test_the_sign_flip_p_is_scipys_permutation_test_and_its_normal_limit() -> None:
    rng = np.random.default_rng(3)
    small = [rng.normal(0.5, 1, 10), rng.normal(0.5, 1, 10)]  # 20 pairs: Monte Carlo permutations
    expected = permutation_test(
        (np.concatenate(small),), np.mean, permutation_type="samples", n_resamples=9999, rng=np.random.default_rng(0)
    ).pvalue
    assert paired_permutation_p(small) == pytest.approx(expected, abs=0.01)
    large = [rng.normal(0.2, 1, 40), rng.normal(0.2, 1, 40)]  # 80 pairs: the normal limit
    expected = permutation_test(
        (np.concatenate(large),), np.mean, permutation_type="samples", n_resamples=99999, rng=np.random.default_rng(0)
    ).pvalue
    assert paired_permutation_p(large) == pytest.approx(expected, abs=0.01)
    # far below any Monte Carlo floor (2 / 10000), where Holm needs it
    assert paired_permutation_p([np.full(60, 1.0) + rng.normal(0, 0.1, 60)]) < 1e-12


def test_a_constant_map_is_left_out_of_both_sides_of_its_image() -> None:
    reference = {0: np.array([1.0, 2.0, 3.0, 4.0])}
    variant = {0: np.array([2.0, np.nan, 4.0, 5.0])}  # image 1's map was constant at this CR
    figures = compare_paired(reference, variant)
    assert figures["n_images"] == 3 and figures["n_excluded"] == 1
    assert figures["reference_mean"] == pytest.approx(8 / 3) and figures["mean_diff"] == pytest.approx(1.0)


def _records(effects: dict[tuple[str, float], float], seeds: list[int], images: int = 40):
    """A suite of one model: explainer 'e', metric 'm' (higher is better) and accuracy; per-image scores are noise
    plus, for a (metric, CR), a planted shift. Seeds add their own offset to every CR alike."""
    rng = np.random.default_rng(11)
    records, per_image = [], {}
    truth = rng.normal(0, 1, images)
    for seed in seeds:
        offset = rng.normal(0, 0.3)
        for rate in (1.0, 2.0, 4.0, 8.0):
            run_id = f"s{seed}-cr{rate}"
            pruned = rate != 1
            records.append({
                "run_id": run_id, "model": "net", "explainer": "e", "seed": seed, "compression_rate": rate,
                "pruning_method": "magnitude" if pruned else "none", "pruning_scope": "conv" if pruned else "none",
                "pruning_granularity": "layerwise" if pruned else "none",
                "pruning_schedule": "iterative" if pruned else "none", "metric_directions": {"m": "higher"},
                "m": 0.0,
            })  # fmt: skip
            metric = truth + offset + rng.normal(0, 0.5, images) + effects.get(("m", rate), 0.0)
            correct = (rng.random(images) < 0.9 - effects.get(("accuracy", rate), 0.0)).astype(float)
            per_image[run_id] = {"m": metric, "correct": correct}
            records[-1]["m"] = float(metric.mean())
    return records, per_image


def test_a_planted_effect_is_found_and_null_effects_are_not_after_correction() -> None:
    records, per_image = _records({("m", 8.0): -1.0}, seeds=[0, 1, 2])
    stats = suite_stats(records, per_image)
    by_rate = {(c.metric, c.compression_rate): c for c in stats.comparisons}
    assert set(by_rate) == {(m, r) for m in ("m", "accuracy") for r in (2.0, 4.0, 8.0)}
    planted = by_rate[("m", 8.0)]
    assert planted.significant and planted.better is False and planted.ci_high < 0 < planted.p_holm < 0.05
    assert planted.mean_diff == pytest.approx(-1.0, abs=0.15) and planted.n_seeds == 3 and planted.n_images == 120
    assert not any(c.significant for key, c in by_rate.items() if key != ("m", 8.0))
    assert all(c.p_holm >= c.p for c in stats.comparisons)


def test_one_seed_is_flagged_as_a_test_within_one_trained_model() -> None:
    records, per_image = _records({("m", 2.0): 1.0}, seeds=[5])
    stats = suite_stats(records, per_image)
    assert stats.single_seed and all(c.within_one_model for c in stats.comparisons)
    assert {(c.metric, c.compression_rate) for c in stats.comparisons if c.significant} == {("m", 2.0)}


def test_reliability_is_the_seed_to_seed_rank_agreement_of_a_metric() -> None:
    records, per_image = _records({("m", 2.0): 3.0, ("m", 4.0): 2.0, ("m", 8.0): 1.0}, seeds=[0, 1])
    by_metric = {r.metric: r for r in suite_stats(records, per_image).reliability}
    assert by_metric["m"].seed_tau == pytest.approx(1.0) and by_metric["m"].seed_pairs == 1
    assert by_metric["m"].comparisons == 3 and by_metric["m"].significant_share == pytest.approx(1.0)


def test_min_f_prime_matches_clarks_formula_on_a_hand_computed_case() -> None:
    from scipy.stats import f

    differences = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]])  # 2 seeds x 3 images
    # by seed: means 2, 3 -> t = 2.5 / (0.7071 / sqrt 2) = 5, F1 = 25 (df 1); by image: means 1.5, 2.5, 3.5 ->
    # t = 2.5 / (1 / sqrt 3), F2 = 18.75 (df 2); min F' = 25 * 18.75 / 43.75, df = 43.75^2 / (25^2 / 2 + 18.75^2 / 1)
    expected = f.sf(25 * 18.75 / 43.75, 1, 43.75**2 / (25**2 / 2 + 18.75**2))
    assert seed_and_image_p(differences) == pytest.approx(expected, rel=1e-12)
    assert seed_and_image_p(np.zeros((3, 5))) == 1.0


def test_a_difference_only_some_training_runs_show_is_not_significant() -> None:
    """Seeds that disagree: one model got much worse, the other two barely moved or improved. Over 3 x 64 (seed,
    image) pairs a sign-flip test treating the models as fixed calls it significant; the seed-aware test does not."""
    rng = np.random.default_rng(3)
    seed_effects = [0.3, -0.1, 0.05]
    differences = np.stack([effect + rng.normal(0, 0.1, 64) for effect in seed_effects])
    assert paired_permutation_p(list(differences)) < 1e-6
    assert seed_and_image_p(differences) > 0.3
    consistent = np.stack([0.1 + rng.normal(0, 0.1, 64) for _ in seed_effects])  # every run moved the same way
    assert seed_and_image_p(consistent) < 1e-3
