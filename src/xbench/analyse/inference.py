"""Inference on a crossed design, the primitives every comparison goes through: the mean of a seeds × images table
of differences with its standard error from the design's variance components (Clark's quasi-F decomposition) and one
t distribution (`crossed_mean`), one paired comparison (`compare_paired`), the seeds that would decide it
(`seeds_to_decide`), crowd answers with workers in place of seeds (`clustered_mean`), and Holm's correction.
See `crossed_mean` for the degrees of freedom and `benchmarks/calibration.py` for the simulated error rates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from xbench.analyse.decide import check_lengths

ALPHA = 0.05
POWER = 0.8  # of a planned run: the seeds that would decide a comparison this often
# Satterthwaite's df is computed with the seeds' variance at this lower quantile's upper confidence bound: with few
# seeds the estimated df leans towards the image df exactly when the seeds' mean square is small by chance, which
# made min F' reject 7 % of null comparisons with 3 seeds; the bound keeps the rate at or under 5 % (calibration.py).
SEED_BOUND_QUANTILE = 0.15
MAX_PLANNED_SEEDS = 200
# `--plan` holds its promise for every true difference within this many standard errors of the estimate: the
# comparisons still undecided are those whose estimate fell short or overshot, and a plan from the estimate alone
# decided 31-70 % of what it promised, two standard errors 65-77 %, 2.5 standard errors 79-86 %
# (benchmarks/suite_level.py; three left almost nothing within 30 seeds)
PLAN_SHIFT = 2.5
Verdict = Literal["better", "worse", "equivalent", "undecided"]


# ------------------------------------------------------------------------------------------------------ primitives


def t_tail(statistic: float, df: float) -> float:
    """P(T > statistic) for Student's t with `df` (scipy.special's stdtr: the distribution object's `sf` costs 50×
    more, which the calibration's hundred thousand comparisons notice)."""
    from scipy.special import stdtr

    return float(stdtr(df, -statistic))


def t_quantile(probability: float, df: float) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df, probability))


@dataclass(frozen=True)
class CrossedMean:
    """The mean of a replicates × images table, with its standard error, degrees of freedom and the variance
    components they come from (replicate, image, residual; NaN where one replicate cannot tell them apart)."""

    mean: float
    se: float
    df: float
    n_replicates: int
    n_images: int
    replicate_var: float
    image_var: float
    residual_var: float

    def interval(self, level: float = 1 - ALPHA) -> tuple[float, float]:
        if not math.isfinite(self.se):
            return math.nan, math.nan
        half = 0.0 if self.se == 0 else t_quantile(0.5 + level / 2, self.df) * self.se
        return self.mean - half, self.mean + half

    @property
    def p(self) -> float:
        """Two-sided p of a zero mean."""
        if not math.isfinite(self.se):
            return math.nan
        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        return 2 * t_tail(abs(self.mean) / self.se, self.df)

    def p_equivalent(self, margin: float) -> float:
        """p of the two one-sided tests (TOST) that the mean lies within ±margin: the larger of the two one-sided p.
        Below α exactly when the (1 - 2α) interval lies inside the margin."""
        if not (math.isfinite(self.se) and math.isfinite(margin)) or margin <= 0:
            return math.nan
        if self.se == 0:
            return 0.0 if abs(self.mean) < margin else 1.0
        return t_tail((margin - abs(self.mean)) / self.se, self.df)


def _se_and_df(
    row_term: float, column_term: float, residual_term: float, rows: int, columns: int
) -> tuple[float, float]:
    """Standard error of a crossed table's mean from its three variance terms (each a mean square over the table's
    size), and Satterthwaite's df with the row term at its upper confidence bound (`SEED_BOUND_QUANTILE`).

    Var(mean) = σ²_row/R + σ²_col/C + σ²_e/(RC) is estimated without bias by row + column - residual term; it is
    never below either of the first two in expectation, so it is held at least at their larger one (a negative
    estimate is noise, not precision)."""
    from scipy.special import gammaincinv

    variance = max(row_term + column_term - residual_term, row_term, column_term)
    bounded = row_term * (rows - 1) / (2 * float(gammaincinv((rows - 1) / 2, SEED_BOUND_QUANTILE)))  # χ² quantile
    bounded_variance = max(bounded + column_term - residual_term, bounded, column_term)
    spread = bounded**2 / (rows - 1) + column_term**2 / (columns - 1) + residual_term**2 / ((rows - 1) * (columns - 1))
    df = bounded_variance**2 / spread if spread > 0 else math.inf
    return math.sqrt(variance), max(df, rows - 1.0)


def crossed_mean(table: np.ndarray) -> CrossedMean:
    """The mean of a (replicates, images) table of finite values with replicates and images as crossed random
    factors: d[s, i] = δ + a_s + b_i + e_si. With one replicate, a one-sample t over images (the inference is then
    about that trained model only)."""
    table = np.asarray(table, dtype=float)
    replicates, images = table.shape
    mean = float(table.mean()) if table.size else math.nan
    if images < 2:
        return CrossedMean(mean, math.nan, math.nan, replicates, images, math.nan, math.nan, math.nan)
    if replicates == 1:
        spread = float(table[0].var(ddof=1))
        return CrossedMean(mean, math.sqrt(spread / images), images - 1.0, 1, images, math.nan, spread, math.nan)
    row_means, column_means = table.mean(axis=1), table.mean(axis=0)
    row_square = float(row_means.var(ddof=1))  # E = σ²_row + σ²_e / images
    column_square = float(column_means.var(ddof=1))  # E = σ²_col + σ²_e / replicates
    residuals = table - row_means[:, None] - column_means[None, :] + mean
    residual_square = float((residuals**2).sum()) / ((replicates - 1) * (images - 1))  # E = σ²_e
    se, df = _se_and_df(
        row_square / replicates, column_square / images, residual_square / (replicates * images), replicates, images
    )
    return CrossedMean(
        mean,
        se,
        df,
        replicates,
        images,
        max(row_square - residual_square / images, 0.0),
        max(column_square - residual_square / replicates, 0.0),
        residual_square,
    )


def planned_crossed_se(estimate: CrossedMean, replicates: int) -> tuple[float, float]:
    """(standard error, df) the same test would have with `replicates` replicates and the same images, if the
    variance components were those estimated."""
    images = estimate.n_images
    residual = estimate.residual_var
    return _se_and_df(
        (estimate.replicate_var + residual / images) / replicates,
        (estimate.image_var + residual / replicates) / images,
        residual / (replicates * images),
        replicates,
        images,
    )


def seeds_to_decide(
    estimate: CrossedMean,
    margin: float,
    tests: int = 1,
    power: float = POWER,
    *,
    level: float | None = None,
    equivalence_level: float | None = None,
    seed_df: float | None = None,
    kept_per_seed: float = 1.0,
    all_images: int | None = None,
) -> int | None:
    """The fewest seeds with which a comparison would be decided with probability `power`: shown different (|δ|
    beyond what the test can tell from 0) or shown equivalent (|δ| inside the margin), at `level` (default α /
    `tests`, Bonferroni over the suite's comparisons, the strictest step of Holm's). None when it cannot be planned
    (one seed: the seed variance is unknown) or `MAX_PLANNED_SEEDS` would not do.

    The estimates it plans from are uncertain, and a plan that trusts them over-promises (an effect that stood out is
    usually overestimated; a seed variance that came out small by chance asks for too few seeds). So the plan holds
    for every true difference within one standard error of the estimate, and, given `seed_df` (the seed term's
    degrees of freedom), for the seed variance at its 80 % upper confidence bound. With `all_images` and
    `kept_per_seed` (the share of images each seed leaves scorable: constant maps), the images kept shrink as seeds
    are added, as they will."""
    from scipy.stats import chi2, norm

    if estimate.n_replicates < 2 or not math.isfinite(margin) or margin <= 0 or not math.isfinite(estimate.mean):
        return None
    if level is not None and not math.isfinite(level) and not (equivalence_level and math.isfinite(equivalence_level)):
        return None  # its chains have not reached it
    alpha = level if level is not None else ALPHA / max(tests, 1)
    alpha_equivalent = equivalence_level if equivalence_level is not None else alpha
    se_now = estimate.se if math.isfinite(estimate.se) else 0.0
    shift = PLAN_SHIFT * se_now
    deltas = (max(abs(estimate.mean) - shift, 0.0), abs(estimate.mean), abs(estimate.mean) + shift)
    inflation = seed_df / float(chi2.ppf(0.2, seed_df)) if seed_df and math.isfinite(seed_df) else 1.0
    cautious = replace(
        estimate,
        replicate_var=estimate.replicate_var * inflation
        + estimate.residual_var / max(estimate.n_images, 1) * (inflation - 1),
    )

    def decided(seeds: int) -> bool:
        images = estimate.n_images
        if all_images is not None:
            images = max(int(all_images * kept_per_seed**seeds), 2)
        se, df = planned_crossed_se(replace(cautious, n_images=images), seeds)
        if se == 0:
            return True
        worst = 1.0
        for delta in deltas:
            different = norm.cdf(delta / se - t_quantile(1 - alpha / 2, df)) if math.isfinite(alpha) else 0.0
            equivalent = 0.0
            if math.isfinite(alpha_equivalent):
                one_sided = t_quantile(1 - alpha_equivalent, df)
                equivalent = max(
                    norm.cdf((margin - delta) / se - one_sided) + norm.cdf((margin + delta) / se - one_sided) - 1, 0.0
                )
            worst = min(worst, max(different, equivalent))
        return bool(worst >= power)

    # More seeds shrink the standard error and the critical values (and lose a few images), so the first seed count
    # that decides is found by bisection.
    if not decided(MAX_PLANNED_SEEDS):
        return None
    low, high = 1, MAX_PLANNED_SEEDS  # decided(high); low is below the first that decides
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if decided(middle) else (middle, high)
    return high


def clustered_mean(values: np.ndarray, workers: Sequence[str], images: Sequence[Any]) -> CrossedMean:
    """The mean of answers scored as numbers, with workers and images as crossed random effects in any pattern of
    who answered what: the two-way cluster-robust variance (Cameron, Gelbach & Miller 2011), V = V_worker + V_image
    - V_answer, each with its small-sample factor G / (G - 1) and held at least at V_worker and V_image, and a t with
    min(workers, images) - 1 df (their recommendation for few clusters). `values` may be influence scores of a
    contrast (mean zero under the fit)."""
    values = np.asarray(values, dtype=float)
    count = len(values)
    mean = float(values.mean()) if count else math.nan
    worker_index = np.unique(np.asarray([str(w) for w in workers]), return_inverse=True)[1].reshape(-1)
    image_index = np.unique(np.asarray([str(i) for i in images]), return_inverse=True)[1].reshape(-1)
    n_workers = int(worker_index.max()) + 1 if count else 0
    n_images = int(image_index.max()) + 1 if count else 0
    if count < 2 or min(n_workers, n_images) < 2:
        return CrossedMean(mean, math.nan, math.nan, n_workers, n_images, math.nan, math.nan, math.nan)
    residuals = values - mean

    def cluster_variance(index: np.ndarray, groups: int) -> float:
        sums = np.bincount(index, weights=residuals, minlength=groups)
        return groups / (groups - 1) * float((sums**2).sum()) / count**2

    by_worker, by_image = cluster_variance(worker_index, n_workers), cluster_variance(image_index, n_images)
    by_answer = count / (count - 1) * float((residuals**2).sum()) / count**2
    # As in `_se_and_df`: the variance of the mean is at least each cluster term in expectation; held there, the
    # difference of three noisy terms cannot make a contrast look precise where worker and image effects cancel
    # (an identify study, each worker seeing each image in one variant, rejected 6-7 % of nulls without it).
    variance = max(by_worker + by_image - by_answer, by_worker, by_image)
    return CrossedMean(
        mean, math.sqrt(variance), min(n_workers, n_images) - 1.0, n_workers, n_images, by_worker, by_image, by_answer
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values; NaNs stay NaN and are not counted.

    Written out rather than taken from statsmodels' `multipletests` (which gives the same values, see the tests):
    that one runs a full `gc.collect()` on every Holm call, 75 ms here and more with a large heap."""
    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    ordered = sorted(finite, key=lambda i: p_values[i])
    running = 0.0
    for rank, index in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def crossed_table(sides: Mapping[int, np.ndarray]) -> tuple[np.ndarray, int]:
    """(seeds × images table of the images every seed scored, values left out) from per-seed per-image arrays.

    An image that some seed could not score (NaN) is left out of every seed, so each seed scores the same images and
    the design stays crossed; a seed with fewer than two images left is dropped."""
    if not sides:
        return np.empty((0, 0)), 0
    rows = [np.asarray(sides[seed], dtype=float) for seed in sorted(sides)]
    width = max(len(row) for row in rows)
    padded = np.stack([np.pad(row, (0, width - len(row)), constant_values=np.nan) for row in rows])
    total = int(sum(len(row) for row in rows))
    kept_rows = padded[np.isfinite(padded).sum(axis=1) >= 2]
    if len(kept_rows) == 0:
        return np.empty((0, 0)), total
    table = kept_rows[:, np.isfinite(kept_rows).all(axis=0)]
    return table, total - table.size


def compare_paired(
    reference: Mapping[int, np.ndarray], variant: Mapping[int, np.ndarray], margin: float = math.nan
) -> dict[str, float | int]:
    """The figures of one comparison from per-seed per-image scores of both sides (same images, same order): the
    mean difference (variant - reference) with its 95 % interval, p, Cohen's d_z, the equivalence p at `margin`,
    the test's df and standard error, and the seed, image and residual SDs of the differences."""
    seeds = sorted(set(reference) & set(variant))
    check_lengths(reference, variant)
    differences = {
        seed: np.asarray(variant[seed], dtype=float) - np.asarray(reference[seed], dtype=float) for seed in seeds
    }
    table, excluded = crossed_table(differences)
    figures: dict[str, float | int] = {"n_seeds": table.shape[0], "n_images": table.size, "n_excluded": excluded}
    if table.shape[0] == 0 or table.shape[1] < 2:
        nan = math.nan
        return {
            **figures,
            "reference_mean": nan,
            "variant_mean": nan,
            "mean_diff": nan,
            "ci_low": nan,
            "ci_high": nan,
            "effect_size": nan,
            "p": nan,
            "p_equivalent": nan,
            "margin": margin,
            "df": nan,
            "se": nan,
            "seed_sd": nan,
            "image_sd": nan,
            "residual_sd": nan,
        }
    kept = [seed for seed in seeds if np.isfinite(differences[seed]).sum() >= 2]
    usable = np.isfinite(np.stack([differences[s] for s in kept])).all(axis=0)
    estimate = crossed_mean(table)
    low, high = estimate.interval()
    spread = float(table.std(ddof=1)) if table.size > 1 else math.nan
    mean = estimate.mean
    return {
        **figures,
        "reference_mean": float(np.mean([np.asarray(reference[s], dtype=float)[usable].mean() for s in kept])),
        "variant_mean": float(np.mean([np.asarray(variant[s], dtype=float)[usable].mean() for s in kept])),
        "mean_diff": mean,
        "ci_low": low,
        "ci_high": high,
        "effect_size": mean / spread if spread > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean)),
        "p": estimate.p,
        "p_equivalent": estimate.p_equivalent(margin),
        "margin": margin,
        "df": estimate.df,
        "se": estimate.se,
        "seed_sd": math.sqrt(estimate.replicate_var) if math.isfinite(estimate.replicate_var) else math.nan,
        "image_sd": math.sqrt(estimate.image_var) if math.isfinite(estimate.image_var) else math.nan,
        "residual_sd": math.sqrt(estimate.residual_var) if math.isfinite(estimate.residual_var) else math.nan,
    }
