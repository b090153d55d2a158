"""Verdicts for a whole suite: `decide(questions)` turns per-seed per-image scores into comparisons with intervals,
p-values and verdicts whose error rates hold for the suite, and `safe_sequences` walks each explainer's CR ladder.

The design (checked by simulation in `benchmarks/calibration.py`, whose small version runs in the tests):

- **One comparison** is a seeds × images table of differences d[s, i] = δ + a_s + b_i + e_si (both random). Its
  mean's variance is row/S + column/n - residual/(Sn) (Clark's quasi-F decomposition, as `inference.crossed_mean`).
- **Moderated seed term** (Smyth 2004, limma's `squeezeVar`): with 3 seeds the seed mean square has 2 degrees of
  freedom, and a t with 2 df needs t > 4.3 at 0.05 and t > 27 after a correction over 76 comparisons. The seed mean
  squares of a suite's comparisons share a scaled inverse-χ² prior (its scale per metric, its spread d0 across the
  suite, both estimated from the suite as `fitFDist` does), so each comparison's seed term is shrunk towards its
  metric's typical value and gains d0 degrees of freedom (`fit_priors` can also fit limma-trend's line in a
  covariate; in log CR it doubled the far tail of p, so the suite does not use it). The prior's own scale is
  estimated from the metric's pooled seed df, so the gained df are cut to what that pool can carry (`_moderated_df`).
- **No certainty from no variation**: an image whose score changed in no seed still may change in another; the share
  of images that changed has a Wilson upper bound, and the variance of the mean is never below the range of the
  scores squared times that bound's excess over the observed share, over the images (`_count_floor`). With 0/1
  outcomes (accuracy) this is the count model of changed predictions; with no change at all the interval is
  ±(a few) × range × sqrt(bound / n), never [0, 0].
- **Families shaped to the questions**: the difference verdicts (better, worse) are one family over the suite,
  corrected by weighted Benjamini-Hochberg (`weighted_bh`) with half the weight for accuracy's comparisons and half
  for the metrics' (accuracy asks whether the model changed, the metrics whether its explanations did): of the
  better/worse verdicts a suite makes, at most 5 % are expected false, and with no effect anywhere some better/worse
  appears in at most 5 % of suites. Weighted Holm (the family-wise error over the whole suite) decided 12 of the 27
  comparisons of `quick` whose 95 % interval lies wholly beyond the margin; the false discovery rate, limma's own
  companion to the moderated t, decides all 27. The equivalence verdicts are a second family, closed tests: each
  question's ladder walked up from its smallest CR as a chain (`chained_holm`). Safe compression (`safe_sequences`) is
  a third: per explainer, an intersection-union test (accuracy and every metric non-inferior within its margin, each
  at the sequence's level; a conjunction needs no correction) walked up the CR ladder as a fixed sequence that stops
  at the first failure, with Holm across the explainers' sequences.

Pure numpy/scipy: no torch, no MLflow.

Why one module of ~700 lines: moments, the moderated prior, the families and the safe-compression ladders are the
steps of one procedure whose error rates are calibrated together (benchmarks/suite_level.py); split, a change to one
step could not be read beside the others it is calibrated with.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xbench.core.errors import XbenchInputError

ALPHA = 0.05
SEED_BOUND_QUANTILE = 0.15  # as `inference.SEED_BOUND_QUANTILE`: the seed term's upper bound used for the df
WILSON_Z = 1.959963984540054  # the count floor's bound: two-sided 95 % Wilson upper bound of the changed share
ACCURACY_SHARE = 0.5  # of each family's error rate, for accuracy's comparisons when there are metrics too
# The prior spread is held at least at this many standard errors of its own estimate (`fit_priors`); 0 lets the far
# tail of p double in suites whose comparisons share seeds, 1 costs a tenth of the power at 3 seeds (calibration.py).
SPREAD_BOUND = 0.25
MIN_TO_MODERATE = 3  # comparisons of a metric needed before its seed terms borrow from one another


def t_tail(statistic: float | np.ndarray, df: float | np.ndarray) -> Any:
    from scipy.special import stdtr

    return stdtr(df, -np.asarray(statistic, dtype=float))


def t_quantile(probability: float, df: float | np.ndarray) -> Any:
    from scipy.special import stdtrit

    return stdtrit(df, probability)


# ---------------------------------------------------------------------------------------------- one comparison


@dataclass(frozen=True)
class Moments:
    """The sufficient figures of one comparison's seeds × images table of differences (variant - reference)."""

    mean: float
    row_square: float  # variance of the seed means (df seeds - 1); E = σ²_seed + σ²_e / images
    column_square: float  # variance of the image means (df images - 1); E = σ²_image + σ²_e / seeds
    residual_square: float  # E = σ²_e
    seeds: int
    images: int
    excluded: int  # (seed, image) pairs left out: some seed could not score the image
    floor: float  # the count model's floor on Var(mean) (`_count_floor`)
    reference_mean: float
    variant_mean: float
    spread: float  # SD of all the differences (Cohen's d_z's denominator)
    seed_means: tuple[float, ...] = ()  # per kept seed, the mean difference (for how comparisons share seeds)

    @property
    def usable(self) -> bool:
        return self.seeds >= 1 and self.images >= 2


def wilson_upper(count: int, total: int, z: float = WILSON_Z) -> float:
    """The Wilson score interval's upper bound of a share `count / total`."""
    if total <= 0:
        return 1.0
    share = count / total
    centre = share + z * z / (2 * total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    return min(1.0, (centre + half) / (1 + z * z / total))


def _count_floor(differences: np.ndarray, values_range: float) -> float:
    """The least Var(mean) the data allow: images whose score changed in no seed may still change, on up to the
    Wilson upper bound of the share that changed; each such change is at most the scores' range. Zero when every
    image changed (then the measured spread says all there is)."""
    images = differences.shape[1]
    changed = int((differences != 0).any(axis=0).sum())
    unseen = wilson_upper(changed, images) - changed / images
    return float(values_range**2 * max(unseen, 0.0) / images)


def check_lengths(reference: Mapping[int, Any], variant: Mapping[int, Any]) -> None:
    """Every seed's per-image scores, on both sides, 1-D and of one length; else an input error naming the seed."""
    lengths = {}
    for side, arrays in (("reference", reference), ("variant", variant)):
        for seed in sorted(set(reference) & set(variant)):
            array = np.asarray(arrays[seed], dtype=float)
            if array.ndim != 1:
                raise XbenchInputError(f"seed {seed}: per-image scores must be 1-D, got shape {array.shape}", side)
            lengths[(side, seed)] = len(array)
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        odd = next(k for k, n in lengths.items() if n != lengths[first])
        raise XbenchInputError(
            f"seed {odd[1]} has {lengths[odd]} images, but seed {first[1]} ({first[0]}) has {lengths[first]}: every "
            "seed must score the same images in the same order",
            odd[0],
        )


def moments(reference: Mapping[int, Any], variant: Mapping[int, Any], binary: bool = False) -> Moments:
    """The table's figures from per-seed per-image scores of both sides (the same images in the same order; NaN = not
    scorable). An image some seed could not score is left out of every seed, so the design stays crossed; a seed
    with fewer than two images left is dropped. Arrays of different lengths are an error naming the seed."""
    seeds = sorted(set(reference) & set(variant))
    check_lengths(reference, variant)
    if not seeds:
        return Moments(*(math.nan,) * 4, 0, 0, 0, 0.0, math.nan, math.nan, math.nan)
    ref = np.stack([np.asarray(reference[s], dtype=float) for s in seeds])
    var = np.stack([np.asarray(variant[s], dtype=float) for s in seeds])
    difference = var - ref
    total = difference.size
    keep_rows = np.isfinite(difference).sum(axis=1) >= 2
    difference, ref, var = difference[keep_rows], ref[keep_rows], var[keep_rows]
    columns = np.isfinite(difference).all(axis=0) if len(difference) else np.zeros(0, dtype=bool)
    difference, ref, var = difference[:, columns], ref[:, columns], var[:, columns]
    rows, images = difference.shape if difference.size else (0, 0)
    excluded = total - difference.size
    if rows == 0 or images < 2:
        return Moments(*(math.nan,) * 4, rows, images, excluded, 0.0, math.nan, math.nan, math.nan)
    mean = float(difference.mean())
    row_means, column_means = difference.mean(axis=1), difference.mean(axis=0)
    row_square = float(row_means.var(ddof=1)) if rows > 1 else math.nan
    column_square = float(column_means.var(ddof=1)) if rows > 1 else float(difference[0].var(ddof=1))
    if rows > 1:
        residuals = difference - row_means[:, None] - column_means[None, :] + mean
        residual_square = float((residuals**2).sum()) / ((rows - 1) * (images - 1))
    else:
        residual_square = math.nan
    values_range = 1.0 if binary else float(max(ref.max(), var.max()) - min(ref.min(), var.min()))
    return Moments(
        mean,
        row_square,
        column_square,
        residual_square,
        rows,
        images,
        excluded,
        _count_floor(difference, values_range),
        float(ref.mean()),
        float(var.mean()),
        float(difference.std(ddof=1)),
        tuple(float(x) for x in row_means),
    )


@dataclass(frozen=True)
class Prior:
    """The moderated seed term's prior for one metric: scale `s0_square`, prior df `d0`, and the pooled seed df of
    the comparisons it was estimated from."""

    s0_square: float
    d0: float
    pooled_df: float


NO_PRIOR = Prior(math.nan, 0.0, 0.0)


def _trigamma_inverse(value: float) -> float:
    """y with trigamma(y) = value (Newton's method as in limma's `trigammaInverse`)."""
    from scipy.special import polygamma

    if value > 1e7:
        return 1 / math.sqrt(value)
    if value < 1e-6:
        return 1 / value
    y = 0.5 + 1 / value
    for _ in range(50):
        tri = float(polygamma(1, y))
        step = tri * (1 - tri / value) / float(polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def _shared_square(members: Sequence[Moments], seed_means: Sequence[np.ndarray]) -> float:
    """The mean squared correlation of the comparisons' seed effects (ρ̄²), from how well their centred seed-mean
    vectors align: under independence cos² averages 1 / (seeds - 1), under one shared effect 1. A suite's comparisons
    share trained models (every metric and explainer at one CR and seed prunes the same model), so their seed mean
    squares are not independent and pool fewer degrees of freedom than they count."""
    vectors = [v - v.mean() for v in seed_means]
    lengths = {len(v) for v in vectors}
    if len(vectors) < 2 or len(lengths) != 1:
        return 1.0  # seeds that differ between comparisons: assume the worst
    dimension = lengths.pop() - 1
    if dimension < 1:
        return 1.0
    units = np.stack([v / n if (n := np.linalg.norm(v)) > 0 else v for v in vectors])
    cosines = units @ units.T
    pairs = cosines[np.triu_indices(len(units), 1)] ** 2
    chance = 1 / dimension
    return float(np.clip((pairs.mean() - chance) / (1 - chance), 0.0, 1.0)) if dimension > 1 else 1.0


def fit_priors(
    groups: Mapping[str, Sequence[Moments]],
    seed_means: Mapping[str, Sequence[np.ndarray]] | None = None,
    trends: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, list[Prior]]:
    """limma's `fitFDist` on the seed mean squares, with a trend (limma-trend): within each group (a metric) the log
    mean square's centre is a line in a covariate (log CR: heavier pruning varies more from seed to seed), and one
    prior df d0 for the suite comes from the spread of log mean squares around their group's line, minus what their
    own df explain. The comparisons' seed effects are correlated (`_shared_square`), which narrows that spread by
    (1 - ρ̄²) and cuts the pooled df to Σdf / (1 + (k - 1) ρ̄²). Returns each group's priors in its members' order;
    a group of fewer than `MIN_TO_MODERATE` comparisons, or a member with a zero mean square, gets `NO_PRIOR`."""
    from scipy.special import digamma, polygamma

    seed_means = seed_means or {}
    trends = trends or {}
    centred: list[float] = []
    excess_trigamma: list[float] = []
    fourth: list[float] = []  # the log mean squares' 4th cumulants, for the spread estimate's own error
    effective = 0.0  # comparisons, counted after their shared seed effects
    lines: dict[str, tuple[list[int], np.ndarray, float]] = {}  # group -> (members, fitted centres, pooled df)
    for name, members in groups.items():
        chosen = [i for i, m in enumerate(members) if m.seeds >= 2 and math.isfinite(m.row_square) and m.row_square > 0]
        usable = [members[i] for i in chosen]
        if len(usable) < MIN_TO_MODERATE:
            continue
        means = seed_means.get(name)
        shared = _shared_square(usable, [means[i] for i in chosen]) if means is not None else 1.0
        df = np.array([m.seeds - 1.0 for m in usable])
        logs = np.log([m.row_square for m in usable]) - digamma(df / 2) + np.log(df / 2)
        k = len(usable)
        covariate = np.asarray([trends[name][i] for i in chosen], dtype=float) if name in trends else np.zeros(k)
        spread_x = covariate - covariate.mean()
        fitted_parameters = 1
        slope = 0.0
        if k > MIN_TO_MODERATE and float(np.square(spread_x).sum()) > 0:
            slope = float((spread_x * (logs - logs.mean())).sum() / np.square(spread_x).sum())
            fitted_parameters = 2
        fitted = logs.mean() + slope * spread_x
        lines[name] = (chosen, fitted, float(df.sum()) / (1 + (k - 1) * shared))
        # unbiased within-group spread around its line: divided by (k - parameters), pooled
        centred += list((logs - fitted) * math.sqrt(k / (k - fitted_parameters)))
        excess_trigamma += list(polygamma(1, df / 2) * (1 - shared))
        fourth += list(polygamma(3, df / 2) * (1 - shared) ** 2)
        effective += k / (1 + (k - 1) * shared)
    if not lines:
        return {}
    spread = float(np.mean(np.square(centred))) - float(np.mean(excess_trigamma))
    # The spread is estimated from few, correlated comparisons: when it comes out small by chance, d0 comes out large
    # and every comparison of the suite is overconfident at once (the far tail of p then doubles). So the spread is
    # held at least at SPREAD_BOUND standard errors of its own estimate, which caps d0 by how much the suite can
    # tell (benchmarks/calibration.py measures the tail with and without).
    error = math.sqrt((float(np.mean(fourth)) + 2 * float(np.mean(excess_trigamma)) ** 2) / max(effective, 1.0))
    spread = max(spread, SPREAD_BOUND * error)
    d0 = 2 * _trigamma_inverse(spread) if spread > 0 else math.inf
    # limma's scale: exp(fitted log s² + digamma(d0/2) - log(d0/2)); the correction vanishes as d0 grows
    correction = 0.0 if math.isinf(d0) else float(digamma(d0 / 2)) - math.log(d0 / 2)
    priors: dict[str, list[Prior]] = {}
    for name, (chosen, fitted, pooled) in lines.items():
        own = [NO_PRIOR] * len(groups[name])
        for index, centre in zip(chosen, fitted, strict=True):
            own[index] = Prior(math.exp(float(centre) + correction), d0, pooled)
        priors[name] = own
    return priors


def _moderated_df(own_df: float, prior: Prior) -> float:
    """The moderated seed term's df: own + d0 if the prior's scale were known; its scale comes from `pooled_df`
    degrees of freedom, whose error adds w² · 2 / pooled to the relative variance (w = the prior's weight)."""
    if prior.d0 <= 0 or prior.pooled_df <= 0:
        return own_df
    if math.isinf(prior.d0):
        return prior.pooled_df
    weight = prior.d0 / (prior.d0 + own_df)
    return 1 / (1 / (prior.d0 + own_df) + weight**2 / prior.pooled_df)


@dataclass(frozen=True)
class Estimate:
    """One comparison's mean difference with its standard error and t df (moderated, floored)."""

    mean: float
    se: float
    df: float
    seed_var: float  # variance components of the differences (moderated seed term; NaN with one seed)
    image_var: float
    residual_var: float

    def interval(self, level: float = 1 - ALPHA) -> tuple[float, float]:
        if not (math.isfinite(self.se) and self.se > 0):
            return math.nan, math.nan
        half = float(t_quantile(0.5 + level / 2, self.df)) * self.se
        return self.mean - half, self.mean + half

    @property
    def p(self) -> float:
        if not (math.isfinite(self.se) and self.se > 0):
            return math.nan
        return float(2 * t_tail(abs(self.mean) / self.se, self.df))

    def p_equivalent(self, margin: float) -> float:
        """TOST: the larger of the two one-sided p; below α exactly when the (1 - 2α) interval lies in ±margin."""
        if not (math.isfinite(self.se) and self.se > 0 and math.isfinite(margin) and margin > 0):
            return math.nan
        return float(t_tail((margin - abs(self.mean)) / self.se, self.df))

    def p_one_sided(self, bound: float, above: bool) -> float:
        """p of the hypothesis that the mean is at most `bound` (`above`: shown above it) or at least `bound`."""
        if not (math.isfinite(self.se) and self.se > 0 and math.isfinite(bound)):
            return math.nan
        statistic = (self.mean - bound) / self.se if above else (bound - self.mean) / self.se
        return float(t_tail(statistic, self.df))


def estimate(m: Moments, prior: Prior = NO_PRIOR) -> Estimate:
    """The comparison's standard error and df: the crossed variance with the seed term moderated by `prior`, held at
    least at each of its terms and at the count floor; Satterthwaite's df with the seed term at its upper bound."""
    from scipy.special import gammaincinv

    if not m.usable:
        return Estimate(m.mean, math.nan, math.nan, math.nan, math.nan, math.nan)
    images = m.images
    if m.seeds == 1:
        variance = max(m.column_square / images, m.floor)
        if variance == 0:
            return Estimate(m.mean, math.nan, math.nan, math.nan, math.nan, math.nan)
        se = math.sqrt(variance)
        return Estimate(m.mean, se, images - 1.0, math.nan, m.column_square, math.nan)
    own_df = m.seeds - 1.0
    row_square = m.row_square
    row_df = own_df
    if prior.d0 > 0 and math.isfinite(prior.s0_square):
        if math.isinf(prior.d0):
            row_square = prior.s0_square
        else:
            row_square = (prior.d0 * prior.s0_square + own_df * m.row_square) / (prior.d0 + own_df)
        row_df = _moderated_df(own_df, prior)
    row_term = row_square / m.seeds
    column_term = m.column_square / images
    residual_term = m.residual_square / (m.seeds * images)
    measured = max(row_term + column_term - residual_term, row_term, column_term)
    if measured == 0 and m.floor == 0:
        # every difference identical, in every seed and image, and nothing to borrow: no information, not certainty
        return Estimate(m.mean, math.nan, math.nan, math.nan, math.nan, math.nan)
    variance = max(measured, m.floor)
    # Satterthwaite's df with the seed term at its upper confidence bound: with few seed df the df estimate leans
    # towards the image df exactly when the seed term is small by chance (see `inference._se_and_df`).
    bounded = row_term * row_df / (2 * float(gammaincinv(row_df / 2, SEED_BOUND_QUANTILE)))
    bounded_variance = max(bounded + column_term - residual_term, bounded, column_term)
    spread = bounded**2 / row_df + column_term**2 / (images - 1) + residual_term**2 / ((m.seeds - 1) * (images - 1))
    df = bounded_variance**2 / spread if spread > 0 else math.inf
    df = max(min(df, math.inf), row_df)
    return Estimate(
        m.mean,
        math.sqrt(variance),
        df,
        max(row_square - m.residual_square / images, 0.0),
        max(m.column_square - m.residual_square / m.seeds, 0.0),
        m.residual_square,
    )


# ---------------------------------------------------------------------------------------------------- families


def weighted_bh(p_values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """Adjusted p-values (q-values) of the weighted Benjamini-Hochberg procedure (Genovese, Roeder & Wasserman 2006):
    each p divided by its weight relative to the mean weight, then Benjamini and Hochberg's step-up. Rejecting where
    q < α keeps the false discovery rate, the expected share of false verdicts among those made, at most α when the
    p-values are independent or positively dependent (PRDS: comparisons that share a suite's seeds and images); with
    no effect anywhere every verdict is false, so some verdict appears in at most α of suites. NaN p stays NaN."""
    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    total = math.fsum(weights[i] for i in finite)  # exact, so equal weights are exactly 1 relative to their mean
    if not finite or total <= 0:
        return adjusted
    m = len(finite)
    mean = total / m
    scaled = {i: p_values[i] / (weights[i] / mean) if weights[i] > 0 else math.inf for i in finite}
    order = sorted(finite, key=lambda i: scaled[i])
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, scaled[i] * m / rank)
        adjusted[i] = running
    return adjusted


def chained_holm(p_values: Sequence[float], chains: Sequence[Sequence[int]], weights: Sequence[float]) -> list[float]:
    """Adjusted p-values of a sequentially rejective procedure made of weighted chains (a graphical procedure in the
    sense of Bretz et al. 2009). Each chain is an ordered walk over hypotheses; its head is its first hypothesis not
    yet rejected, and a head is tested at α × (the weights of the chains whose head it is) / (the weights of the
    chains not yet exhausted). A rejection moves each chain on to its next unrejected hypothesis at the same weight
    (a fixed sequence: no correction along it); an exhausted chain hands its weight on to the others (Holm). A chain
    stops at a head that is not rejected, or whose p is NaN.

    Family-wise error ≤ α under any dependence: a hypothesis's level can only grow as others are rejected (its
    chains stay its own until it is rejected, and exhausted chains only shrink the total), so a first false rejection
    implies p ≤ α × its weight in the state where exactly the false hypotheses are rejected, and those weights of the
    true hypotheses add up to at most 1 (Bonferroni).

    Exact adjusted p-values as Bretz et al.'s Algorithm 2: repeatedly take the head with the least p / its share of
    the weight; its adjusted p is that ratio, at least the previous one."""
    adjusted = [math.nan] * len(p_values)
    rejected: set[int] = set()
    positions = [0] * len(chains)
    running = 0.0
    while True:
        heads: dict[int, float] = defaultdict(float)
        for c, chain in enumerate(chains):
            while positions[c] < len(chain) and chain[positions[c]] in rejected:
                positions[c] += 1
            if positions[c] < len(chain) and weights[c] > 0:
                heads[chain[positions[c]]] += weights[c]
        total = sum(heads.values())
        if not heads or total <= 0:
            break

        def ratio(index: int, total: float = total, heads: dict[int, float] = heads) -> float:
            p = p_values[index]
            return p * total / heads[index] if math.isfinite(p) else math.inf

        best = min(sorted(heads), key=ratio)
        level = ratio(best)
        if not math.isfinite(level):
            break  # every head has a NaN p: nothing behind them can be reached
        running = max(running, min(1.0, level))
        adjusted[best] = running
        rejected.add(best)
    for chain in chains:
        for index in chain:
            if index not in rejected and math.isfinite(p_values[index]):
                adjusted[index] = 1.0  # behind a NaN p: never tested
    return adjusted


def family_weights(families: Sequence[str]) -> tuple[list[float], dict[str, str]]:
    """Each question's weight in the suite's correction (one entry per question, named by its family), and each
    family's description: accuracy's questions share `ACCURACY_SHARE` of the error rate when there are metric
    questions too, the metrics the rest; equal within each."""
    counts: dict[str, int] = defaultdict(int)
    for family in families:
        counts[family] += 1
    shares = {"accuracy": ACCURACY_SHARE, "metrics": 1 - ACCURACY_SHARE} if len(counts) > 1 else {}
    weights = []
    for family in families:
        share = shares.get(family, 1.0 / len(counts))
        weights.append(share / counts[family])
    described = {
        family: (
            f"{counts[family]} {'question' if counts[family] == 1 else 'questions'} of {family}: "
            f"{shares.get(family, 1.0 / len(counts)):.0%} of the suite's weight, split over their CRs"
        )
        for family in counts
    }
    return weights, described


# ------------------------------------------------------------------------------------------------------- decide


def question_family(question: Mapping[str, Any]) -> str:
    return str(
        question.get("family") or ("accuracy" if question.get("metric", question["name"]) == "accuracy" else "metrics")
    )


def decide(questions: Sequence[Mapping[str, Any]], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Every comparison of a suite with its verdict.

    `questions`: plain dicts {"name": str, "higher_is_better": bool, "margin": float, "reference": {seed: 1-D array},
    "variants": {cr: {seed: 1-D array}}} (per-image scores, the same images per seed, NaN = not scorable); optional
    "metric" (whose comparisons share a moderation prior; default the name), "binary" (0/1 outcomes such as
    per-image correctness; default: inferred) and "family" ("accuracy" or "metrics"; default from the metric).

    Returns one dict per (question, CR) with name, cr, verdict, mean_diff, ci_low, ci_high, p, p_equivalent, margin,
    family, the family-adjusted p_adjusted and p_equivalent_adjusted, p_noninferior (non-inferiority within the
    margin, the safe-compression test), p_inferior (shown worse than the margin), and the table's figures."""
    cells: list[tuple[Mapping[str, Any], float, Moments]] = []
    for question in questions:
        for key in ("name", "higher_is_better", "margin", "reference", "variants"):
            if key not in question:
                raise XbenchInputError(f"a question needs {key!r}", "questions")
        binary = question.get("binary")
        for rate, variant in sorted(question["variants"].items(), key=lambda item: float(item[0])):
            if binary is None:
                values = np.concatenate(
                    [np.asarray(v, dtype=float).ravel() for v in [*question["reference"].values(), *variant.values()]]
                )
                finite = values[np.isfinite(values)]
                binary = bool(finite.size and np.isin(finite, (0.0, 1.0)).all())
            try:
                m = moments(question["reference"], variant, bool(binary))
            except XbenchInputError as error:
                raise XbenchInputError(f"{question['name']} CR {float(rate):g}: {error}", "questions") from None
            cells.append((question, float(rate), m))
    groups: dict[str, list[Moments]] = defaultdict(list)
    position: list[tuple[str, int]] = []
    for question, _rate, m in cells:
        group = str(question.get("metric", question["name"]))
        position.append((group, len(groups[group])))
        groups[group].append(m)
    means = {name: [np.asarray(m.seed_means) for m in members] for name, members in groups.items()}
    # no trend in log CR: fitted to a suite's 4-5 CR levels, whose comparisons share each level's pruned models, the
    # line follows chance and the far tail of p doubled (calibration.py); the prior has one centre per metric
    priors = fit_priors(groups, means)
    rows = []
    for (question, rate, m), (group, index) in zip(cells, position, strict=True):
        prior = priors[group][index] if group in priors else NO_PRIOR
        e = estimate(m, prior)
        margin = float(question["margin"])
        higher = bool(question["higher_is_better"])
        low, high = e.interval(1 - alpha)
        # non-inferior: the change in the bad direction is shown smaller than the margin
        p_noninferior = e.p_one_sided(-margin, above=True) if higher else e.p_one_sided(margin, above=False)
        p_inferior = e.p_one_sided(-margin, above=False) if higher else e.p_one_sided(margin, above=True)
        rows.append(
            {
                "name": question["name"],
                "cr": rate,
                "family": question_family(question),
                "higher_is_better": higher,
                "margin": margin,
                "mean_diff": m.mean,
                "ci_low": low,
                "ci_high": high,
                "p": e.p,
                "p_equivalent": e.p_equivalent(margin),
                "p_noninferior": p_noninferior,
                "p_inferior": p_inferior,
                "se": e.se,
                "df": e.df,
                "n_seeds": m.seeds,
                "n_images": m.seeds * m.images,
                "n_excluded": m.excluded,
                "reference_mean": m.reference_mean,
                "variant_mean": m.variant_mean,
                "effect_size": _effect_size(m),
                "seed_sd": math.sqrt(e.seed_var) if math.isfinite(e.seed_var) else math.nan,
                # the comparison's own seed SD, before moderation (what `--plan` plans from when it is larger)
                "own_seed_sd": math.sqrt(max(m.row_square - m.residual_square / m.images, 0.0))
                if m.seeds > 1 and math.isfinite(m.row_square)
                else math.nan,
                "image_sd": math.sqrt(e.image_var) if math.isfinite(e.image_var) else math.nan,
                "residual_sd": math.sqrt(e.residual_var) if math.isfinite(e.residual_var) else math.nan,
                "prior_df": prior.d0 if prior.d0 > 0 else 0.0,
                "floored": bool(m.usable and e.se > 0 and e.se**2 <= m.floor * (1 + 1e-12)),
            }
        )
    # one ladder per question: differences walked down from the largest CR ("from which CR does it change?"),
    # equivalence up from the smallest ("up to which CR does it stay?")
    ladders: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        ladders[row["name"]].append(index)
    ascending = [sorted(members, key=lambda i: rows[i]["cr"]) for members in ladders.values()]
    chain_weights, _ = family_weights([rows[chain[0]]["family"] for chain in ascending])
    # differences: half of each question's weight walks down from its largest CR, half up from its smallest (so a
    # change at heavy pruning and one at mild pruning, the seed paper's finding, are both reachable); equivalence
    # walks up from the smallest CR
    # differences: each comparison on its own at its question's share split over the question's CRs (weighted
    # Holm); chains walked from either end lost comparisons behind a CR that did not differ (a non-monotone
    # metric), so only equivalence walks a chain, up from the smallest CR
    singles = [i for chain in ascending for i in chain]
    single_weights = [w / len(chain) for chain, w in zip(ascending, chain_weights, strict=True) for _ in chain]
    adjusted = [math.nan] * len(rows)
    for i, q in zip(singles, weighted_bh([rows[i]["p"] for i in singles], single_weights), strict=True):
        adjusted[i] = q
    adjusted_equivalent = chained_holm([row["p_equivalent"] for row in rows], ascending, chain_weights)
    for row, p_adjusted, p_equivalent_adjusted in zip(rows, adjusted, adjusted_equivalent, strict=True):
        row["p_adjusted"] = p_adjusted
        row["p_equivalent_adjusted"] = p_equivalent_adjusted
        row["verdict"] = _verdict(row, alpha)
    # Where each question's chains now stand: more seeds can only decide a comparison its chain has reached (the
    # first undecided from either end for a difference, from the smallest CR for equivalence), at the chain's level.
    for chain, weight in zip(ascending, chain_weights, strict=True):
        equivalent = [i for i in chain if math.isfinite(adjusted_equivalent[i]) and adjusted_equivalent[i] < alpha]
        open_equivalence = [i for i in chain if i not in equivalent]
        for i in chain:
            rows[i]["difference_level"] = alpha * weight / len(chain)
            reachable = bool(open_equivalence) and i == open_equivalence[0]
            rows[i]["equivalence_level"] = alpha * weight if reachable else math.nan
            rows[i]["question_weight"] = weight
    return rows


def _effect_size(m: Moments) -> float:
    if not math.isfinite(m.mean):
        return math.nan
    if m.spread > 0:
        return m.mean / m.spread
    return 0.0 if m.mean == 0 else math.copysign(math.inf, m.mean)


def _verdict(row: Mapping[str, Any], alpha: float) -> str:
    if math.isfinite(row["p_equivalent_adjusted"]) and row["p_equivalent_adjusted"] < alpha:
        return "equivalent"
    if math.isfinite(row["p_adjusted"]) and row["p_adjusted"] < alpha and row["mean_diff"] != 0:
        return "better" if (row["mean_diff"] > 0) == row["higher_is_better"] else "worse"
    return "undecided"


def families(questions: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """How each family's correction was made, in words (for the output)."""
    labels = [question_family(q) for q in questions for _ in q["variants"]]
    return family_weights(labels)[1]


# ----------------------------------------------------------------------------------------------- safe compression


@dataclass(frozen=True)
class SequenceResult:
    """One explainer's CR ladder walked up: the safe CR (the last that passed, None when the first failed), the first
    CR that failed and the comparisons that failed it, the level each step was tested at, and whether the failure
    is decided (some comparison shown worse than its margin) or only not shown safe."""

    key: Any
    rates: tuple[float, ...]
    safe_rate: float | None
    failed_rate: float | None
    blocking: tuple[Any, ...]  # the comparisons (their caller's handles) not shown non-inferior at `failed_rate`
    shown_unsafe: bool
    level: float

    @property
    def decided(self) -> bool:
        return self.failed_rate is None or self.shown_unsafe


def safe_sequences(
    sequences: Mapping[Any, Mapping[float, Sequence[tuple[Any, float, float]]]], alpha: float = ALPHA
) -> list[SequenceResult]:
    """Safe compression per sequence (an explainer of one model and pruning config).

    `sequences[key][cr]` = the components at that CR: (handle, p_noninferior, p_inferior) for accuracy and every
    metric. A CR passes when every component's p_noninferior < the sequence's level (an intersection-union test: no
    correction within the conjunction, and a missing or NaN p fails it). The ladder is walked up from the smallest
    CR and stops at the first that fails (a fixed sequence: no correction along it). Across sequences Holm: each
    starts at α / (sequences); a sequence that passes every CR hands its level on to those still failing, which are
    walked again at the larger level. The suite's chance of calling any unsafe CR safe stays ≤ α."""
    keys = list(sequences)
    if not keys:
        return []
    open_keys = set(keys)
    results: dict[Any, SequenceResult] = {}
    while open_keys:
        level = alpha / len(open_keys)
        finished = []
        for key in sorted(open_keys, key=str):
            result = _walk(key, sequences[key], level)
            results[key] = result
            if result.failed_rate is None:
                finished.append(key)
        if not finished:
            break
        open_keys -= set(finished)
    return [results[key] for key in keys]


def _walk(key: Any, ladder: Mapping[float, Sequence[tuple[Any, float, float]]], level: float) -> SequenceResult:
    rates = tuple(sorted(float(r) for r in ladder))
    safe: float | None = None
    for rate in rates:
        components = ladder[rate]
        blocking = tuple(handle for handle, p_noninferior, _ in components if not _passes(p_noninferior, level))
        if blocking or not components:
            shown = any(math.isfinite(p_inferior) and p_inferior < level for _, _, p_inferior in components)
            return SequenceResult(key, rates, safe, rate, blocking, shown, level)
        safe = rate
    return SequenceResult(key, rates, safe, None, (), False, level)


def _passes(p: float, level: float) -> bool:
    return math.isfinite(p) and p < level


# ------------------------------------------------------------------------------------------------ seeds until decided


def spent_levels(seed_counts: Sequence[int], max_seeds: int, alpha: float = ALPHA) -> list[float]:
    """The level of each look of a run that adds seeds until decided (`xbench run suite --until-decided`): Pocock-type
    α spending (Lan & DeMets 1983), α(t) = α · ln(1 + (e - 1) t) with t = seeds / max_seeds, and each look tested at
    the increment α(t_k) - α(t_k-1). The increments add up to at most α whatever the looks' correlation (Bonferroni
    over looks), so a verdict kept from any look keeps the family's error rate; Pocock's shape spends much of α early,
    where a run that can stop early wants it."""

    def spent(seeds: int) -> float:
        fraction = min(max(seeds / max_seeds, 0.0), 1.0)
        return alpha * math.log(1 + (math.e - 1) * fraction)

    levels, before = [], 0.0
    for seeds in seed_counts:
        now = spent(seeds)
        levels.append(max(now - before, 0.0))
        before = max(before, now)
    return levels
