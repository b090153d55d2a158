"""Statistics of a suite: every pruned variant against its unpruned model, paired by seed and image, with confidence
intervals, effect sizes and Holm-corrected p-values; and how far each metric can be trusted across seeds.

The method, in one sentence (the leaderboard prints `METHOD`): for each model × pruning × explainer × metric and each
CR ≠ 1, the per-image difference to CR 1 is taken within each seed on the images both maps could score; its mean
gets a 95 % hierarchical bootstrap interval (seeds resampled, then images within each seed); p comes from a test
that treats both training seeds and images as random (Clark's min F', scipy's F distribution), or, with one seed, from
a paired sign-flip test across images (scipy: Monte Carlo permutations below 30 pairs, the test's normal limit
above); Holm's correction runs over all comparisons of the suite (statsmodels), and a difference is significant only
when the corrected p is below 0.05 and the interval excludes 0.

Reads records (`results.to_record`) and per-image scores (`results.per_image_scores`, with `correct` for accuracy):
no torch, no MLflow.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000
PERMUTATION_RESAMPLES = 9999
ACCURACY = "accuracy"
METHOD = (
    "Each CR is compared with CR 1 of the same model, seed and images (images a constant map cannot score are left "
    "out of both sides); the mean difference has a 95 % hierarchical bootstrap interval (seeds, then images within "
    f"seed; {BOOTSTRAP_RESAMPLES} resamples), p treats both training seeds and images as random (Clark's min F'; "
    "with one seed, a paired sign-flip test across images), Holm's correction runs over every comparison of the "
    "suite, and a difference counts only when the corrected p < 0.05 and the interval excludes 0."
)
PRUNING_FIELDS = ("pruning_method", "pruning_scope", "pruning_granularity", "pruning_schedule")


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
    n_seeds: int
    n_images: int  # (seed, image) pairs compared
    n_excluded: int  # pairs left out because either side could not be scored (a constant map)
    reference_mean: float
    variant_mean: float
    mean_diff: float  # variant - reference
    ci_low: float
    ci_high: float
    effect_size: float  # Cohen's d_z: mean difference / SD of the paired differences
    p: float
    p_holm: float = math.nan
    significant: bool = False

    @property
    def better(self) -> bool | None:
        """Whether the pruned variant is better by the metric's direction (None when there is no difference)."""
        if not math.isfinite(self.mean_diff) or self.mean_diff == 0:
            return None
        return (self.mean_diff > 0) == self.higher_is_better

    @property
    def within_one_model(self) -> bool:
        return self.n_seeds == 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "better": self.better}


@dataclass(frozen=True)
class Reliability:
    """How far a metric can be trusted: seed-to-seed stability of its cell ranking and its share of significant
    comparisons."""

    metric: str
    seed_tau: float  # mean Kendall tau between the cell rankings of every pair of seeds (NaN with one seed)
    seed_pairs: int
    comparisons: int
    significant: int

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

    @property
    def single_seed(self) -> bool:
        return len(self.seeds) < 2


# ------------------------------------------------------------------------------------------------------ primitives


def hierarchical_bootstrap(
    differences: list[np.ndarray], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """Bootstrap distribution of the mean over seeds of each seed's mean difference.

    Two levels, as the data were made: seeds are resampled with replacement, then images within each drawn seed.
    With one seed it is the ordinary bootstrap over images.
    """
    rng = np.random.default_rng(seed)
    # Level 2 first: for every seed, `resamples` means of its images resampled.
    per_seed = np.stack(
        [values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1) for values in differences]
    )  # (seeds, resamples)
    if len(differences) == 1:
        return per_seed[0]
    drawn = rng.integers(0, len(differences), size=(resamples, len(differences)))  # level 1: seeds
    return per_seed[drawn, np.arange(resamples)[:, None]].mean(axis=1)


EXACT_BELOW = 30  # pairs; from here on the sign-flip distribution is normal to well within the p-values that matter


def paired_permutation_p(differences: list[np.ndarray], resamples: int = PERMUTATION_RESAMPLES, seed: int = 0) -> float:
    """Two-sided p of a paired sign-flip test of the mean over seeds of per-seed mean differences.

    Each (seed, image) pair keeps its weight 1 / (seeds × images of its seed), so every seed counts equally. Under
    the null each pair's sign is a fair coin, so the statistic T = Σ wᵢdᵢ has mean 0 and variance Σ (wᵢdᵢ)². Below
    EXACT_BELOW pairs, p comes from `scipy.stats.permutation_test` (Monte Carlo over sign flips); from there on from
    that normal limit (`scipy.stats.norm`), because a Monte Carlo p cannot go below 2 / (resamples + 1), and Holm
    multiplies the smallest p by the number of comparisons (64 for `quick`): resampling would put a floor under
    every corrected p.
    """
    from scipy.stats import norm, permutation_test

    pooled = np.concatenate(differences)
    if not np.any(pooled):
        return 1.0
    weights = np.concatenate([np.full(len(d), 1 / (len(differences) * len(d))) for d in differences])
    if len(pooled) >= EXACT_BELOW:
        weighted = weights * pooled
        return float(2 * norm.sf(abs(weighted.sum()) / np.sqrt(np.sum(weighted**2))))

    def statistic(values: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum(values * weights, axis=axis)

    result = permutation_test(
        (pooled,), statistic, permutation_type="samples", n_resamples=resamples, vectorized=True,
        alternative="two-sided", rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(result.pvalue)


def seed_and_image_p(differences: np.ndarray) -> float:
    """Two-sided p of a mean paired difference that generalises over training seeds and over images: Clark's (1973)
    min F', the quasi-F test for crossed random factors, with p from `scipy.stats.f`.

    `differences` is (seeds, images) with NaN where an image could not be scored. F1 tests the seeds' means (its
    error is the seed-to-seed spread, df = seeds - 1), F2 the images' means over seeds (df = images - 1);
    min F' = F1·F2 / (F1 + F2) with denominator df (F1 + F2)² / (F1²/df2 + F2²/df1). It is never larger than either,
    so a difference is significant only when it holds across training runs *and* across images: three seeds that
    agree in sign with little spread can be enough, one seed that disagrees is not. (A sign-flip test over every
    (seed, image) pair treats 3 × 64 pairs as independent and called seed-to-seed noise significant: with a second
    set of seeds one such effect reversed.)
    """
    from scipy.stats import f

    seed_means = np.array([np.nanmean(row) for row in differences if np.isfinite(row).sum() >= 1])
    scorable = np.isfinite(differences).any(axis=0)
    image_means = np.nanmean(differences[:, scorable], axis=0)
    if len(seed_means) < 2 or len(image_means) < 2:
        return math.nan
    mean = float(np.mean(seed_means))
    if mean == 0:
        return 1.0

    def f_statistic(means: np.ndarray) -> float:
        spread = float(np.std(means, ddof=1))
        return math.inf if spread == 0 else (float(np.mean(means)) / (spread / math.sqrt(len(means)))) ** 2

    f1, f2 = f_statistic(seed_means), f_statistic(image_means)
    df1, df2 = len(seed_means) - 1, len(image_means) - 1
    if math.isinf(f1) and math.isinf(f2):
        return 0.0
    if math.isinf(f1) or math.isinf(f2):  # the limits of min F' and its df as one F grows without bound
        statistic, denominator_df = (f2, df2) if math.isinf(f1) else (f1, df1)
    else:
        statistic = f1 * f2 / (f1 + f2)
        denominator_df = (f1 + f2) ** 2 / (f1**2 / df2 + f2**2 / df1)
    return float(f.sf(statistic, 1, denominator_df))


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels' multipletests); NaNs stay NaN and are not counted."""
    from statsmodels.stats.multitest import multipletests

    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    if finite:
        corrected = multipletests([p_values[i] for i in finite], method="holm")[1]
        for index, value in zip(finite, corrected, strict=True):
            adjusted[index] = float(value)
    return adjusted


def compare_paired(
    reference: dict[int, np.ndarray], variant: dict[int, np.ndarray], seed: int = 0
) -> dict[str, float | int]:
    """The figures of one comparison from per-seed per-image scores of both sides (same images, same order)."""
    differences, excluded, reference_values, variant_values, rows = [], 0, [], [], []
    for replicate in sorted(set(reference) & set(variant)):
        before, after = reference[replicate], variant[replicate]
        usable = np.isfinite(before) & np.isfinite(after)
        excluded += int((~usable).sum())
        if usable.sum() >= 2:
            differences.append(after[usable] - before[usable])
            rows.append(np.where(usable, after - before, np.nan))
            reference_values.append(before[usable].mean())
            variant_values.append(after[usable].mean())
    figures: dict[str, float | int] = {"n_seeds": len(differences), "n_excluded": excluded}
    if not differences:
        return {**figures, "n_images": 0, "reference_mean": math.nan, "variant_mean": math.nan, "mean_diff": math.nan,
                "ci_low": math.nan, "ci_high": math.nan, "effect_size": math.nan, "p": math.nan}  # fmt: skip
    pooled = np.concatenate(differences)
    mean = float(np.mean([d.mean() for d in differences]))
    low, high = np.percentile(hierarchical_bootstrap(differences, seed=seed), [2.5, 97.5])
    spread = float(pooled.std(ddof=1)) if len(pooled) > 1 else math.nan
    return {
        **figures,
        "n_images": len(pooled),
        "reference_mean": float(np.mean(reference_values)),
        "variant_mean": float(np.mean(variant_values)),
        "mean_diff": mean,
        "ci_low": float(low),
        "ci_high": float(high),
        "effect_size": mean / spread if spread > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean)),
        "p": paired_permutation_p(differences, seed=seed) if len(differences) == 1 else seed_and_image_p(_matrix(rows)),
    }


def _matrix(rows: list[np.ndarray]) -> np.ndarray:
    """(seeds, images), NaN-padded should seeds ever have different eval sets (they share one: `data_seed`)."""
    width = max(len(row) for row in rows)
    return np.stack([np.pad(row, (0, width - len(row)), constant_values=np.nan) for row in rows])


# ----------------------------------------------------------------------------------------------------- suite level


def _pruning(record: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(record.get(name)) for name in PRUNING_FIELDS)


def _directions(records: list[dict[str, Any]]) -> dict[str, bool]:
    directions: dict[str, bool] = {}
    for record in records:
        for name, direction in record.get("metric_directions", {}).items():
            directions.setdefault(name, direction == "higher")
    return directions


def suite_stats(records: list[dict[str, Any]], per_image: dict[str, dict[str, np.ndarray]]) -> SuiteStats:
    """Every comparison of a suite (each metric, and accuracy) with Holm's correction over all of them."""
    directions = _directions(records)
    # scores[(model, explainer, pruning, CR)][metric][seed] = per-image scores
    scores: dict[tuple, dict[str, dict[int, np.ndarray]]] = defaultdict(lambda: defaultdict(dict))
    accuracy: dict[tuple, dict[int, np.ndarray]] = defaultdict(dict)
    for record in records:
        images = per_image.get(record["run_id"], {})
        seed = int(record.get("seed", 0))
        key = (record["model"], record["explainer"], _pruning(record), float(record["compression_rate"]))
        for metric in directions:
            if metric in images:
                scores[key][metric][seed] = images[metric]
        if "correct" in images:
            accuracy[(record["model"], _pruning(record), float(record["compression_rate"]))][seed] = images["correct"]

    rows: list[tuple[dict[str, Any], dict[str, float | int]]] = []
    for (model, explainer, pruning, rate), by_metric in sorted(scores.items(), key=lambda item: str(item[0])):
        if pruning[0] == "none":
            continue
        reference = scores.get((model, explainer, ("none",) * 4, 1.0), {})
        for metric, variant in by_metric.items():
            if metric in reference:
                identity = _identity(model, explainer, pruning, rate, metric, directions[metric])
                rows.append((identity, compare_paired(reference[metric], variant)))
    for (model, pruning, rate), variant in sorted(accuracy.items(), key=lambda item: str(item[0])):
        reference = accuracy.get((model, ("none",) * 4, 1.0))
        if pruning[0] != "none" and reference:
            rows.append((_identity(model, None, pruning, rate, ACCURACY, True), compare_paired(reference, variant)))

    adjusted = holm([float(figures["p"]) for _, figures in rows])
    comparisons = []
    for (identity, figures), p_holm in zip(rows, adjusted, strict=True):
        significant = (
            math.isfinite(p_holm) and p_holm < ALPHA and (figures["ci_low"] > 0 or figures["ci_high"] < 0)  # type: ignore[operator]
        )
        comparisons.append(Comparison(**identity, **figures, p_holm=p_holm, significant=significant))  # type: ignore[arg-type]
    seeds = sorted({int(r.get("seed", 0)) for r in records})
    return SuiteStats(comparisons, reliability(records, comparisons, directions), seeds)


def _identity(model: str, explainer: str | None, pruning: tuple[str, ...], rate: float, metric: str,
              higher: bool) -> dict[str, Any]:  # fmt: skip
    return {
        "model": model, "explainer": explainer, **dict(zip(PRUNING_FIELDS, pruning, strict=True)),
        "compression_rate": rate, "metric": metric, "higher_is_better": higher,
    }  # fmt: skip


def reliability(
    records: list[dict[str, Any]], comparisons: list[Comparison], directions: dict[str, bool]
) -> list[Reliability]:
    """Per metric: mean Kendall tau between seeds of the ranking of cells by the metric, and the share of its
    comparisons that are significant."""
    from scipy.stats import kendalltau

    result = []
    for metric in directions:
        by_seed: dict[int, dict[tuple, float]] = defaultdict(dict)
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


# ------------------------------------------------------------------------------------------- cells across seeds


@dataclass(frozen=True)
class CellSummary:
    """One cell over its seeds: means of every figure, and 95 % intervals of accuracy and each metric (hierarchical
    bootstrap: seeds, then images within seed; over images alone with one seed)."""

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
        pruning = "dense" if self.pruning_method == "none" else self.pruning_method
        return f"{self.model} | {pruning} CR {self.compression_rate:g} | {self.explainer}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summarise_cells(
    records: list[dict[str, Any]], per_image: dict[str, dict[str, np.ndarray]], metrics: list[str]
) -> list[CellSummary]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["model"], _pruning(record), float(record["compression_rate"]), record["explainer"])].append(
            record
        )
    summaries = []
    for (model, pruning, rate, explainer), replicates in sorted(groups.items(), key=lambda item: str(item[0])):
        replicates.sort(key=lambda r: int(r.get("seed", 0)))
        numeric = {k for r in replicates for k, v in r.items() if _finite(v)}
        values = {
            key: float(np.mean(finite))
            for key in numeric
            if (finite := [r[key] for r in replicates if _finite(r.get(key))])
        }
        intervals = {}
        for name in ["accuracy", *metrics]:
            column = "correct" if name == "accuracy" else name
            samples = [per_image.get(r["run_id"], {}).get(column) for r in replicates]
            usable = [s[np.isfinite(s)] for s in samples if s is not None]
            usable = [s for s in usable if len(s) >= 2]
            if usable:
                low, high = np.percentile(hierarchical_bootstrap(usable), [2.5, 97.5])
                intervals[name] = (float(low), float(high))
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
    explainer: str
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
    groups: dict[tuple, list[Comparison]] = defaultdict(list)
    for c in stats.comparisons:
        if c.metric != ACCURACY:
            key = (c.model, c.pruning_method, c.pruning_scope, c.pruning_granularity, c.pruning_schedule, c.explainer)
            groups[(*key, c.metric)].append(c)
    spots = []
    for key, comparisons in sorted(groups.items(), key=lambda item: str(item[0])):
        model, method, *_, explainer, metric = key
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
