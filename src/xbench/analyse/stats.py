"""Statistics of a suite: every pruned variant against its unpruned model, paired by seed and image, as a verdict
(better, worse, equivalent within a margin, or undecided) with a confidence interval, p-values corrected over the
suite (`decide`), and the seeds it would take to decide what is still undecided; and how far each metric can be trusted.

The method, in one sentence (the leaderboard prints `METHOD`): for each model × pruning × explainer × metric and each
CR ≠ 1, the per-image difference to CR 1 is taken within each seed; the table of differences (seeds × images, both
random: a crossed design) gives the mean, its standard error from the design's variance components (Clark's quasi-F
decomposition) and one t distribution, from which the 95 % interval, the p of "no difference" and the two one-sided
p of "equivalent within ±margin" all come, so they never disagree. See `crossed_mean` for the degrees of freedom, and
`benchmarks/calibration.py` for the simulated error rates.

Crowd answers are the same design with workers in place of seeds: `clustered_mean` gives their standard error with
workers and images as crossed random effects.

Reads records (`results.to_record`) and per-image scores (`results.per_image_scores`, with `correct` for accuracy):
no torch, no MLflow.

Over 450 lines, and not of one purpose: inference primitives, suite assembly, safe compression, cell summaries and
sweet spots live together until #43 splits them (inference / comparisons / findings); `decide.py` already holds the
suite-level procedure.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from xbench.analyse.decide import check_lengths, decide, families, safe_sequences
from xbench.analyse.trust import MetricTrust, human_agreement, metric_trust
from xbench.core.cells import pruning_label
from xbench.core.numbers import is_finite_number
from xbench.core.results import PRUNING_FIELDS, PerturbedScores
from xbench.core.sequential import Sequential

ALPHA = 0.05
POWER = 0.8  # of a planned run: the seeds that would decide a comparison this often
ACCURACY = "accuracy"
# Satterthwaite's df is computed with the seeds' variance at this lower quantile's upper confidence bound: with few
# seeds the estimated df leans towards the image df exactly when the seeds' mean square is small by chance, which
# made min F' reject 7 % of null comparisons with 3 seeds; the bound keeps the rate at or under 5 % (calibration.py).
SEED_BOUND_QUANTILE = 0.15
DEFAULT_MARGIN_SHARE = 0.2  # default equivalence margin of a metric: this share of its CR-1 SD across images
DEFAULT_ACCURACY_MARGIN = 0.01  # "one point" of accuracy, the leaderboard's default allowed drop
MAX_PLANNED_SEEDS = 200
# `--plan` holds its promise for every true difference within this many standard errors of the estimate: the
# comparisons still undecided are those whose estimate fell short or overshot, and a plan from the estimate alone
# decided 31-70 % of what it promised, two standard errors 65-77 %, 2.5 standard errors 79-86 %
# (benchmarks/suite_level.py; three left almost nothing within 30 seeds)
PLAN_SHIFT = 2.5
METHOD = (
    "Each CR is compared with CR 1 of the same model, seeds and images (an image a constant map cannot score in any "
    "seed is left out of every seed, so the design stays crossed). Seeds and images are both random: the mean "
    "difference's standard error comes from their variance components, the seed component moderated across the "
    "suite's comparisons of the same metric (an empirical-Bayes prior, as limma's moderated t, whose degrees of "
    "freedom are cut to what the suite's correlated comparisons can carry) and never below what the share of images "
    "that changed allows (a Wilson bound: no certainty from no variation); one t distribution gives the 95 % interval, "
    "the p of a difference and the p of equivalence (two one-sided tests against the metric's margin). Families: "
    "differences are corrected by weighted Benjamini-Hochberg over the suite's comparisons (half the weight for "
    "accuracy's, half for the metrics'): at most 5 % of the better/worse verdicts are expected to be false, and with "
    "no effect anywhere some better/worse appears in at most 5 % of suites; equivalence is a second family, each "
    "question's CR ladder walked up as a chain of closed tests (chained Holm: at most a 5 % chance of any false "
    "equivalent in the suite); verdict equivalent when its corrected p < 0.05, else better or worse when the "
    "difference's is, else undecided. Safe compression is a third family: per "
    "explainer, accuracy and every metric must each be shown no worse than its margin (an intersection-union test), "
    "walked up the CR ladder and stopping at the first CR that fails, with Holm across the explainers. With one seed "
    "the test is over images within one trained model. Default margins are fixed before the test or carry their own "
    "error: accuracy 0.01, a metric 0.2 × a lower 95 % bound of its SD across images at CR 1."
)
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


def planned_seeds(figures: Comparison | Mapping[str, Any]) -> int | None:
    """`seeds_to_decide` for one of a suite's comparisons (a `Comparison`, or a row of `decide`) at the levels its
    chains test it at (`difference_level`, `equivalence_level`; NaN where no chain has reached it yet: then None),
    with the uncertainty of its estimates and the images constant maps take away."""
    row = figures.to_dict() if isinstance(figures, Comparison) else figures
    if row.get("floored"):
        return None  # its bound comes from how few images changed: more images decide it, more seeds do not

    def square(name: str) -> float:
        value = float(row[name])
        return value**2 if math.isfinite(value) else math.nan

    seeds = max(int(row["n_seeds"]), 1)
    pairs = int(row["n_images"]) + int(row["n_excluded"])
    kept = int(row["n_images"]) / pairs if pairs else 1.0
    df = float(row["df"])
    estimate = CrossedMean(
        float(row["mean_diff"]),
        float(row["se"]),
        df,
        int(row["n_seeds"]),
        int(row["n_images"]) // seeds,
        # a comparison still undecided is, more often than not, one whose seed variance the suite's prior shrank
        # too far: plan from the larger of the moderated and its own
        max(square("seed_sd"), square("own_seed_sd")) if math.isfinite(square("own_seed_sd")) else square("seed_sd"),
        square("image_sd"),
        square("residual_sd"),
    )
    return seeds_to_decide(
        estimate,
        float(row["margin"]),
        level=float(row["difference_level"]),
        equivalence_level=float(row["equivalence_level"]),
        seed_df=df if math.isfinite(df) else None,
        kept_per_seed=kept ** (1 / seeds) if kept > 0 else 1.0,
        all_images=pairs // seeds if pairs else None,
    )


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


# ----------------------------------------------------------------------------------------------------- suite level


@dataclass(frozen=True)
class Comparison:
    """One pruned variant against CR 1 on one metric (or accuracy, with explainer None)."""

    model: str
    pruning_method: str
    pruning_scope: str
    pruning_granularity: str
    pruning_schedule: str
    explainer: str | None
    metric: str
    compression_rate: float
    higher_is_better: bool
    n_seeds: int  # seeds this comparison could use (both sides finished, at least two images scored)
    n_images: int  # (seed, image) pairs compared
    n_excluded: int  # pairs left out because some seed could not score the image (a constant map)
    reference_mean: float
    variant_mean: float
    mean_diff: float  # variant - reference
    ci_low: float
    ci_high: float
    effect_size: float  # Cohen's d_z: mean difference / SD of the paired differences
    p: float
    p_equivalent: float  # TOST at ±margin
    margin: float  # equivalence margin, in the metric's units
    df: float
    se: float
    seed_sd: float  # SD of the difference across seeds (variance component; NaN with one seed)
    image_sd: float
    residual_sd: float
    suite_seeds: int = 0  # seeds in the suite
    p_holm: float = math.nan
    p_equivalent_holm: float = math.nan
    significant: bool = False
    verdict: Verdict = "undecided"
    seeds_needed: int | None = None  # seeds that would decide it (undecided comparisons; `seeds_to_decide`)
    family: str = ""  # the correction's family ("accuracy" or "metrics"; SuiteStats.families says how)
    p_noninferior: float = math.nan  # one-sided: no worse than the margin (safe compression's test)
    p_inferior: float = math.nan  # one-sided: worse by more than the margin
    prior_df: float = 0.0  # the moderated seed term's prior df (0: not moderated)
    floored: bool = False  # the standard error is the count floor's (few or no images changed)
    own_seed_sd: float = math.nan  # the seed SD before moderation
    # the levels its chains test it at now (NaN: not reached yet, it waits for a neighbouring CR to be decided)
    difference_level: float = math.nan
    equivalence_level: float = math.nan

    @property
    def better(self) -> bool | None:
        """Whether the pruned variant is better by the metric's direction (None when there is no difference)."""
        if not math.isfinite(self.mean_diff) or self.mean_diff == 0:
            return None
        return (self.mean_diff > 0) == self.higher_is_better

    @property
    def within_one_trained_model(self) -> bool:
        """One seed: the test is over images of one trained model and says nothing about another training run."""
        return self.n_seeds == 1

    @property
    def fewer_seeds_than_suite(self) -> bool:
        return self.n_seeds < self.suite_seeds

    @property
    def estimate(self) -> CrossedMean:
        """The comparison's crossed-design estimate, for planning (variance components as estimated)."""

        def square(sd: float) -> float:
            return sd**2 if math.isfinite(sd) else math.nan

        images = self.n_images // self.n_seeds if self.n_seeds else 0
        return CrossedMean(
            self.mean_diff,
            self.se,
            self.df,
            self.n_seeds,
            images,
            square(self.seed_sd),
            square(self.image_sd),
            square(self.residual_sd),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "better": self.better,
            "within_one_trained_model": self.within_one_trained_model,
            "fewer_seeds_than_suite": self.fewer_seeds_than_suite,
        }


@dataclass(frozen=True)
class Reliability:
    """How far a metric can be trusted: seed-to-seed stability of its cell ranking and its share of significant
    comparisons."""

    metric: str
    seed_tau: float  # mean Kendall tau between the cell rankings of every pair of seeds (NaN with one seed)
    seed_pairs: int
    comparisons: int
    significant: int
    # the suite's meta-evaluation (analyse.trust), over every explainer; NaN without one
    noise_resilience: float = math.nan
    adversary_reactivity: float = math.nan
    meta_consistency: float = math.nan
    # with a human study of the suite: how often the metric prefers what most people preferred
    human_agreement: float = math.nan

    @property
    def significant_share(self) -> float:
        return self.significant / self.comparisons if self.comparisons else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant_share": self.significant_share}


@dataclass
class SuiteStats:
    comparisons: list[Comparison]
    reliability: list[Reliability]
    seeds: list[int]
    margins: dict[str, str]  # metric -> how its margin was set, as people read it
    trust: list[MetricTrust] = field(default_factory=list)  # the meta-evaluation, per metric and explainer
    families: dict[str, str] = field(default_factory=dict)  # family -> what its correction covers, in words
    # the looks of the `--until-decided` run these seeds come from (`Sequential`), so safe compression pays for them
    sequential: Sequential | None = None

    @property
    def single_seed(self) -> bool:
        return len(self.seeds) < 2

    @property
    def verdicts(self) -> dict[str, int]:
        counts = dict.fromkeys(("better", "worse", "equivalent", "undecided"), 0)
        for comparison in self.comparisons:
            counts[comparison.verdict] += 1
        return counts


def _pruning(record: dict[str, Any]) -> tuple[str, str, str, str]:
    method, scope, granularity, schedule = (str(record.get(name)) for name in PRUNING_FIELDS)
    return method, scope, granularity, schedule


def _directions(records: list[dict[str, Any]]) -> dict[str, bool]:
    directions: dict[str, bool] = {}
    for record in records:
        for name, direction in record.get("metric_directions", {}).items():
            directions.setdefault(name, direction == "higher")
    return directions


def default_margin(reference: Mapping[int, np.ndarray]) -> float:
    """`DEFAULT_MARGIN_SHARE` of a lower 95 % confidence bound of the reference's SD across images: a difference
    smaller than a fifth of how much images differ from one another at CR 1 (below Cohen's 'small' effect).

    The SD is estimated on the very images the equivalence test then judges, so its own error would carry into the
    test (an SD that comes out large by chance makes a wide margin and a false "equivalent"). Taking its lower bound
    carries that error: the variance's standard error from the sample's kurtosis (so skewed and heavy-tailed scores
    widen it), on the images (not seeds × images: the seeds score the same images), one-sided at 95 %."""
    rows = [np.asarray(v, dtype=float) for v in reference.values()]
    rows = [row for row in rows if np.isfinite(row).sum() > 3]
    if not rows:
        return math.nan
    images = int(np.mean([np.isfinite(row).sum() for row in rows]))
    centred = np.concatenate([row[np.isfinite(row)] - np.nanmean(row) for row in rows])
    variance = float(np.mean(np.square(centred))) * images / (images - 1)
    if variance <= 0:
        return math.nan
    fourth = float(np.mean(centred**4))
    # Var(s²) ≈ (μ4 - σ⁴ (n - 3) / (n - 1)) / n; on the log scale, divided by σ⁴
    log_error = math.sqrt(max(fourth / variance**2 - (images - 3) / (images - 1), 2 / (images - 1)) / images)
    lower_sd = math.sqrt(variance * math.exp(-1.6448536269514722 * log_error))
    return DEFAULT_MARGIN_SHARE * lower_sd


def verdict_of(p_holm: float, p_equivalent_holm: float, better: bool | None) -> Verdict:
    """Equivalent when the equivalence test holds after correction (a difference, if any, is inside the margin);
    otherwise better or worse when the difference test does; otherwise undecided."""
    if math.isfinite(p_equivalent_holm) and p_equivalent_holm < ALPHA:
        return "equivalent"
    if math.isfinite(p_holm) and p_holm < ALPHA and better is not None:
        return "better" if better else "worse"
    return "undecided"


def suite_stats(
    records: list[dict[str, Any]],
    per_image: dict[str, dict[str, np.ndarray]],
    margins: Mapping[str, float] | None = None,
    meta: Mapping[str, Sequence[PerturbedScores]] | None = None,
    human: Sequence[Mapping[str, Any]] = (),
    sequential: Sequential | None = None,
) -> SuiteStats:
    """Every comparison of a suite (each metric, and accuracy) with its verdict, corrected over all of them (differences
    by weighted Benjamini-Hochberg, equivalence by chains of closed tests: `decide`) and, for the undecided, the
    seeds that would decide them.

    `margins` are the suite's `equivalence:` (metric -> margin in its units); a metric without one gets
    `default_margin` of its own reference, accuracy `DEFAULT_ACCURACY_MARGIN`. `meta` (run id -> the cell's scores
    under perturbation) adds each metric's meta-evaluation to its reliability (`analyse.trust`), `human` (the suite's
    human-study reports) its agreement with people. `sequential` (the record of an `--until-decided` run) is kept
    when these records hold exactly its last look's seeds; safe compression then pays for its looks."""
    margins = dict(margins or {})
    directions = _directions(records)
    suite_seeds = len({int(r.get("seed", 0)) for r in records})
    # scores[(model, explainer, pruning, CR)][metric][seed] = per-image scores
    scores: dict[tuple[Any, ...], dict[str, dict[int, np.ndarray]]] = defaultdict(lambda: defaultdict(dict))
    accuracy: dict[tuple[Any, ...], dict[int, np.ndarray]] = defaultdict(dict)
    for record in records:
        images = per_image.get(record["run_id"], {})
        seed = int(record.get("seed", 0))
        key = (record["model"], record["explainer"], _pruning(record), float(record["compression_rate"]))
        for metric in directions:
            if metric in images:
                scores[key][metric][seed] = images[metric]
        if "correct" in images:
            accuracy[(record["model"], _pruning(record), float(record["compression_rate"]))][seed] = images["correct"]

    questions: list[dict[str, Any]] = []
    identities: dict[str, tuple[str, str | None, tuple[str, ...], str, bool]] = {}
    for (model, explainer, pruning, rate), by_metric in sorted(scores.items(), key=lambda item: str(item[0])):
        if pruning[0] == "none":
            continue
        reference = scores.get((model, explainer, ("none",) * 4, 1.0), {})
        for metric, variant in by_metric.items():
            if metric not in reference:
                continue
            name = "|".join((model, *pruning, explainer, metric))
            if name not in identities:
                identities[name] = (model, explainer, pruning, metric, directions[metric])
                questions.append(
                    {
                        "name": name,
                        "metric": metric,
                        "higher_is_better": directions[metric],
                        "margin": margins.get(metric, default_margin(reference[metric])),
                        "reference": reference[metric],
                        "variants": {},
                    }
                )
            next(q for q in questions if q["name"] == name)["variants"][rate] = variant
    accuracy_margin = margins.get(ACCURACY, DEFAULT_ACCURACY_MARGIN)
    for (model, pruning, rate), variant in sorted(accuracy.items(), key=lambda item: str(item[0])):
        unpruned = accuracy.get((model, ("none",) * 4, 1.0))
        if pruning[0] != "none" and unpruned:
            name = "|".join((model, *pruning, ACCURACY))
            if name not in identities:
                identities[name] = (model, None, pruning, ACCURACY, True)
                questions.append(
                    {
                        "name": name,
                        "metric": ACCURACY,
                        "family": ACCURACY,
                        "binary": True,
                        "higher_is_better": True,
                        "margin": accuracy_margin,
                        "reference": unpruned,
                        "variants": {},
                    }
                )
            next(q for q in questions if q["name"] == name)["variants"][rate] = variant

    decided = decide(questions)
    comparisons: list[Comparison] = []
    for row in decided:
        model, explainer, pruning, metric, higher = identities[row["name"]]
        identity = _identity(model, explainer, pruning, row["cr"], metric, higher)
        figures = {k: row[k] for k in _FIGURES}
        comparison = Comparison(
            **identity,
            **figures,
            suite_seeds=suite_seeds,
            p_holm=row["p_adjusted"],
            p_equivalent_holm=row["p_equivalent_adjusted"],
            significant=math.isfinite(row["p_adjusted"]) and row["p_adjusted"] < ALPHA,
            verdict=row["verdict"],
            family=row["family"],
            p_noninferior=row["p_noninferior"],
            p_inferior=row["p_inferior"],
            prior_df=row["prior_df"],
            floored=row["floored"],
            own_seed_sd=row["own_seed_sd"],
            difference_level=row["difference_level"],
            equivalence_level=row["equivalence_level"],
        )
        needed = planned_seeds(comparison) if comparison.verdict == "undecided" else None
        comparisons.append(replace(comparison, seeds_needed=needed))
    seeds = sorted({int(r.get("seed", 0)) for r in records})
    described = {metric: f"±{value:g}" for metric, value in margins.items()}
    for metric in directions:
        described.setdefault(
            metric, f"±{DEFAULT_MARGIN_SHARE:g} × a lower 95 % bound of its SD across images at CR 1 (default)"
        )
    described.setdefault(ACCURACY, f"±{accuracy_margin:g} (default: the allowed accuracy drop)")
    trust = metric_trust(records, per_image, meta or {})
    overall = {t.metric: t for t in trust if t.explainer is None}
    agreement = human_agreement(human)
    reliable = []
    for r in reliability(records, comparisons, directions):
        if r.metric in overall:
            meta_evaluated = overall[r.metric]
            r = replace(
                r,
                noise_resilience=meta_evaluated.noise_resilience,
                adversary_reactivity=meta_evaluated.adversary_reactivity,
                meta_consistency=meta_evaluated.meta_consistency,
            )
        reliable.append(replace(r, human_agreement=agreement.get(r.metric, math.nan)))
    if sequential is not None and tuple(sorted(sequential.seeds)) != tuple(seeds):
        sequential = None  # other seeds than the run looked at: its looks say nothing about them
    return SuiteStats(comparisons, reliable, seeds, described, trust, families(questions), sequential)


_FIGURES = (
    "n_seeds",
    "n_images",
    "n_excluded",
    "reference_mean",
    "variant_mean",
    "mean_diff",
    "ci_low",
    "ci_high",
    "effect_size",
    "p",
    "p_equivalent",
    "margin",
    "df",
    "se",
    "seed_sd",
    "image_sd",
    "residual_sd",
)


def _identity(
    model: str, explainer: str | None, pruning: tuple[str, ...], rate: float, metric: str, higher: bool
) -> dict[str, Any]:
    return {
        "model": model,
        "explainer": explainer,
        **dict(zip(PRUNING_FIELDS, pruning, strict=True)),
        "compression_rate": rate,
        "metric": metric,
        "higher_is_better": higher,
    }


def reliability(
    records: list[dict[str, Any]], comparisons: list[Comparison], directions: dict[str, bool]
) -> list[Reliability]:
    """Per metric: mean Kendall tau between seeds of the ranking of cells by the metric, and the share of its
    comparisons that are significant."""
    from scipy.stats import kendalltau

    result = []
    for metric in directions:
        by_seed: dict[int, dict[tuple[Any, ...], float]] = defaultdict(dict)
        for record in records:
            value = record.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                cell = (record["model"], record["explainer"], _pruning(record), float(record["compression_rate"]))
                by_seed[int(record.get("seed", 0))][cell] = float(value)
        taus = []
        for first, second in itertools.combinations(sorted(by_seed), 2):
            shared = sorted(set(by_seed[first]) & set(by_seed[second]), key=str)
            if len(shared) >= 3:
                tau = kendalltau([by_seed[first][c] for c in shared], [by_seed[second][c] for c in shared]).statistic
                if math.isfinite(tau):
                    taus.append(float(tau))
        own = [c for c in comparisons if c.metric == metric]
        stability = float(np.mean(taus)) if taus else math.nan
        result.append(Reliability(metric, stability, len(taus), len(own), sum(c.significant for c in own)))
    return result


# ------------------------------------------------------------------------------------------------ safe compression


@dataclass(frozen=True)
class SafeCompression:
    """Per model × pruning config × explainer: the CR ladder walked up from the smallest CR, each step passing when
    accuracy and every metric are shown no worse than their margins (one-sided tests at the sequence's `level`);
    the safe CR is the last step that passed (none when the first failed), and the first failing step's blocking
    comparisons say why. Steps above the failure are not tested (a fixed sequence stops at its first failure)."""

    model: str
    pruning_method: str
    pruning_scope: str
    pruning_granularity: str
    pruning_schedule: str
    explainer: str
    safe_rate: float | None
    rates: tuple[float, ...]  # every CR of the group
    blocking: dict[float, list[Comparison | None]]  # tested CR -> the comparisons not shown non-inferior there
    metrics: tuple[str, ...] = ()  # the metrics the verdict rests on (accuracy besides)
    failed_rate: float | None = None  # the first CR that failed (None: every CR passed)
    shown_unsafe: bool = False  # at the failed CR some comparison is shown worse than its margin
    level: float = ALPHA  # the level each step was tested at (α split by Holm across the explainers)
    decided_at: int | None = None  # seeds of the `--until-decided` look that decided it, when before the last

    @property
    def found(self) -> bool:
        return self.safe_rate is not None

    @property
    def untested(self) -> tuple[float, ...]:
        return tuple(r for r in self.rates if self.failed_rate is not None and r > self.failed_rate)

    @property
    def decided(self) -> bool:
        """Every CR passed, or the first failure is shown unsafe (not only not shown safe)."""
        return self.failed_rate is None or self.shown_unsafe


def safe_compression(stats: SuiteStats, alpha: float | None = None) -> list[SafeCompression]:
    """Each explainer's ladder (`decide.safe_sequences`) at `alpha`; by default α, or, for the seeds of an
    `--until-decided` run (`stats.sequential`), its last look's share of α, with the ladders an earlier look decided
    keeping that look's verdict: the looks' shares add up to α, so the suite's error holds across them."""
    sequential = stats.sequential
    if alpha is None:
        alpha = sequential.levels[-1] if sequential is not None else ALPHA
    walked = _safe_ladders(stats, alpha)
    if sequential is None:
        return walked
    kept = []
    for safe in walked:
        decision = sequential.decided.get((safe.model, safe.pruning_method, safe.pruning_scope, safe.explainer))
        if decision is not None and decision[0] < sequential.looks[-1]:
            seeds, rate, failed, unsafe = decision
            blocking = safe.blocking if failed == safe.failed_rate else {}
            index = next((k for k, n in enumerate(sequential.looks) if n == seeds), len(sequential.looks) - 1)
            level = sequential.levels[index]
            safe = replace(safe, safe_rate=rate, failed_rate=failed, shown_unsafe=unsafe, blocking=blocking)
            safe = replace(safe, level=level, decided_at=seeds)
        kept.append(safe)
    return kept


def _safe_ladders(stats: SuiteStats, alpha: float) -> list[SafeCompression]:
    accuracy = {
        (c.model, c.pruning_method, c.pruning_scope, c.pruning_granularity, c.pruning_schedule, c.compression_rate): c
        for c in stats.comparisons
        if c.metric == ACCURACY
    }
    # (model, method, scope, granularity, schedule, explainer) -> CR -> comparisons
    groups: dict[tuple[str, str, str, str, str, str], dict[float, list[Comparison]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for c in stats.comparisons:
        if c.metric != ACCURACY and c.explainer is not None:
            pruning = (c.model, c.pruning_method, c.pruning_scope, c.pruning_granularity, c.pruning_schedule)
            groups[(*pruning, c.explainer)][c.compression_rate].append(c)
    sequences: dict[tuple[str, ...], dict[float, list[tuple[Comparison | None, float, float]]]] = {}
    for key, by_rate in sorted(groups.items(), key=lambda item: str(item[0])):
        ladder: dict[float, list[tuple[Comparison | None, float, float]]] = {}
        for rate, comparisons in by_rate.items():
            # accuracy's comparison; None where there is none, and then accuracy cannot be shown safe
            members: list[Comparison | None] = [*comparisons, accuracy.get((*key[:5], rate))]
            ladder[rate] = [
                (c, math.nan, math.nan) if c is None else (c, c.p_noninferior, c.p_inferior) for c in members
            ]
        sequences[key] = ladder
    result = []
    for walked in safe_sequences(sequences, alpha):
        key = walked.key
        model, method, scope, granularity, schedule, explainer = key
        by_rate = groups[key]
        blocking: dict[float, list[Comparison | None]] = {
            rate: [] for rate in walked.rates if walked.failed_rate is None or rate < walked.failed_rate
        }
        if walked.failed_rate is not None:
            blocking[walked.failed_rate] = list(walked.blocking)
        rests_on = tuple(sorted({c.metric for comparisons in by_rate.values() for c in comparisons}))
        result.append(
            SafeCompression(
                model,
                method,
                scope,
                granularity,
                schedule,
                explainer,
                walked.safe_rate,
                walked.rates,
                blocking,
                rests_on,
                walked.failed_rate,
                walked.shown_unsafe,
                walked.level,
            )
        )
    return result


# ------------------------------------------------------------------------------------------- cells across seeds


@dataclass(frozen=True)
class CellSummary:
    """One cell over its seeds: means of every figure, and 95 % intervals of accuracy and each metric (`crossed_mean`
    of the seeds × images table: seeds and images random; over images alone with one seed)."""

    model: str
    pruning_method: str
    pruning_scope: str
    pruning_granularity: str
    pruning_schedule: str
    compression_rate: float
    explainer: str
    seeds: tuple[int, ...]
    run_ids: tuple[str, ...]  # in seed order
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]

    @property
    def label(self) -> str:
        return f"{self.model} | {pruning_label(self.pruning_method, self.compression_rate)} | {self.explainer}"


def summarise_cells(
    records: list[dict[str, Any]], per_image: dict[str, dict[str, np.ndarray]], metrics: list[str]
) -> list[CellSummary]:
    groups: dict[tuple[str, tuple[str, str, str, str], float, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["model"], _pruning(record), float(record["compression_rate"]), record["explainer"])].append(
            record
        )
    summaries = []
    for (model, pruning, rate, explainer), replicates in sorted(groups.items(), key=lambda item: str(item[0])):
        replicates.sort(key=lambda r: int(r.get("seed", 0)))
        numeric = {k for r in replicates for k, v in r.items() if is_finite_number(v)}
        values = {
            key: float(np.mean(finite))
            for key in numeric
            if (finite := [r[key] for r in replicates if is_finite_number(r.get(key))])
        }
        intervals = {}
        for name in ["accuracy", *metrics]:
            column = "correct" if name == "accuracy" else name
            samples = {int(r.get("seed", 0)): per_image.get(r["run_id"], {}).get(column) for r in replicates}
            table, _ = crossed_table({seed: values for seed, values in samples.items() if values is not None})
            if table.size and table.shape[1] >= 2:
                intervals[name] = crossed_mean(table).interval()
        summaries.append(
            CellSummary(
                model,
                *pruning,
                rate,
                explainer,
                tuple(int(r.get("seed", 0)) for r in replicates),
                tuple(r["run_id"] for r in replicates),
                values,
                intervals,
            )
        )
    return summaries


# ---------------------------------------------------------------------------------------------------- sweet spots


@dataclass(frozen=True)
class SweetSpot:
    """Per model × pruning × explainer × metric: the CR whose improvement over CR 1 is significant and whose accuracy
    drop's upper confidence bound is within the allowed drop (the largest such improvement), or none."""

    model: str
    pruning_method: str
    explainer: str | None
    metric: str
    best: Comparison | None
    accuracy: Comparison | None
    note: str

    @property
    def found(self) -> bool:
        return self.best is not None


def sweet_spots(stats: SuiteStats, max_accuracy_drop: float) -> list[SweetSpot]:
    accuracy = {
        (c.model, c.pruning_method, c.pruning_scope, c.pruning_granularity, c.pruning_schedule, c.compression_rate): c
        for c in stats.comparisons
        if c.metric == ACCURACY
    }
    # (model, method, scope, granularity, schedule, explainer, metric) -> comparisons
    groups: dict[tuple[str, str, str, str, str, str | None, str], list[Comparison]] = defaultdict(list)
    for c in stats.comparisons:
        if c.metric != ACCURACY:
            pruning = (c.model, c.pruning_method, c.pruning_scope, c.pruning_granularity, c.pruning_schedule)
            groups[(*pruning, c.explainer, c.metric)].append(c)
    spots = []
    for key, comparisons in sorted(groups.items(), key=lambda item: str(item[0])):
        model, method, _scope, _granularity, _schedule, explainer, metric = key
        improved = [c for c in comparisons if c.significant and c.better]
        affordable = []
        for c in improved:
            drop = accuracy.get((*key[:5], c.compression_rate))
            # the accuracy drop's upper bound: -(lower bound of the accuracy difference)
            if drop is not None and math.isfinite(drop.ci_low) and -drop.ci_low <= max_accuracy_drop:
                affordable.append((c, drop))
        if affordable:
            best, drop = max(affordable, key=lambda pair: abs(pair[0].mean_diff))
            note = f"better at CR {best.compression_rate:g} (accuracy drop at most {max(0.0, -drop.ci_low):.3f})"
            spots.append(SweetSpot(model, method, explainer, metric, best, drop, note))
        elif improved:
            rates = ", ".join(f"{c.compression_rate:g}" for c in improved)
            note = f"better at CR {rates}, but the accuracy drop may exceed {max_accuracy_drop:g}"
            spots.append(SweetSpot(model, method, explainer, metric, None, None, note))
        else:
            spots.append(SweetSpot(model, method, explainer, metric, None, None, "no detectable improvement"))
    return spots
