"""Statistics of a suite: every pruned variant against its unpruned model, paired by seed and image, as a verdict
(better, worse, equivalent within a margin, or undecided) with a confidence interval, p-values corrected over the
suite (`decide`), and the seeds it would take to decide what is still undecided; and how far each metric can be trusted.

The method, in one sentence (the leaderboard prints `METHOD`): for each model × pruning × explainer × metric and each
CR ≠ 1, the per-image difference to CR 1 is taken within each seed; the table of differences (seeds × images, both
random: a crossed design) gives the mean, its standard error and one t distribution (`inference`), from which the 95 %
interval, the p of "no difference" and the two one-sided p of "equivalent within ±margin" all come, so they never
disagree. The suite's corrections are `decide`'s; what the verdicts add up to (safe compression, cell summaries,
sweet spots) is `findings`.

Reads records (`results.to_record`) and per-image scores (`results.per_image_scores`, with `correct` for accuracy):
no torch, no MLflow.

Just over 450 lines, one purpose: a suite's records made into `decide`'s questions and its rows back into typed
comparisons, with their margins, reliability and plans; `METHOD` alone, the sentence the pages print, is 20 lines.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

# `decide` is re-exported: the issue and the docs name it `xbench.analyse.stats.decide(questions)`
from xbench.analyse.decide import decide as decide
from xbench.analyse.decide import families
from xbench.analyse.inference import ALPHA, CrossedMean, Verdict, seeds_to_decide
from xbench.analyse.trust import MetricTrust, human_agreement, metric_trust
from xbench.core.cells import compression_method
from xbench.core.results import PRUNING_FIELDS, PerturbedScores
from xbench.core.sequential import Sequential

ACCURACY = "accuracy"
DEFAULT_MARGIN_SHARE = 0.2  # default equivalence margin of a metric: this share of its CR-1 SD across images
DEFAULT_ACCURACY_MARGIN = 0.01  # "one point" of accuracy, the leaderboard's default allowed drop
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


def pruning_of(record: dict[str, Any]) -> tuple[str, str, str, str]:
    """The record's compression: its method (the pruning method, with ` + <quantization>` when quantized: every
    grouping, ladder and page row then keeps fp32 and quantized variants apart), scope, granularity and schedule."""
    method, scope, granularity, schedule = (str(record.get(name)) for name in PRUNING_FIELDS)
    return compression_method(method, record.get("quantization")), scope, granularity, schedule


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
        key = (record["model"], record["explainer"], pruning_of(record), float(record["compression_rate"]))
        for metric in directions:
            if metric in images:
                scores[key][metric][seed] = images[metric]
        if "correct" in images:
            accuracy[(record["model"], pruning_of(record), float(record["compression_rate"]))][seed] = images["correct"]

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
                cell = (record["model"], record["explainer"], pruning_of(record), float(record["compression_rate"]))
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
