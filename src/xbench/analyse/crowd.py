"""Crowd statistics: people's answers to a study against its manifest, with workers and images as crossed random
effects. Read by `xbench human analyse` (`human.answers` parses the files, `human.report` writes the report).

- pairwise: per pair of variants, the answers for each side and "equal"; the headline `p` (Holm-corrected over the
  study's pairs as `p_holm`) tests the mean preference (+1 for a, -1 for b, 0 for "equal") with workers and images as
  crossed random effects (`inference.clustered_mean`), so 600 answers of 20 workers count as what they are; the
  chi-squared and binomial tests over the answers that chose a side stay beside it (`chi2_p`, `binom_p`), labelled
  as the seed paper computed them: they treat every answer as independent;
- identify: accuracy per variant ("don't know" counts as not naming the class, the seed paper's convention; the
  accuracy over the answers that named a class beside it), each pair of variants' difference in accuracy with the same
  crossed-effects `p` (Holm over the pairs), and the seed paper's chi-squared test of independence across variants;
- Krippendorff's alpha (nominal, the `krippendorff` package) across workers per stimulus, with "equal" and "don't
  know" counted as answers, as the seed counted them;
- per worker: answers and attention-check accuracy; workers below a check accuracy can be excluded;
- humans against metrics: per automated metric, on the same images and pairs, how often the metric prefers the
  variant most people preferred (with a bootstrap interval), and whether the variant rankings agree (Kendall tau).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from xbench.analyse.inference import CrossedMean, clustered_mean, holm
from xbench.core.errors import XbenchInputError
from xbench.core.results import CellResult

DONT_KNOW = "dont_know"  # an identify answer that names no class
ALPHA_NOTE = 'Krippendorff\'s alpha (nominal) across workers per stimulus; "equal" and "don\'t know" count as answers.'


@dataclass(frozen=True)
class Manifest:
    design: str
    rows: dict[str, dict[str, str]]  # stimulus -> its manifest row
    options: frozenset[str] = frozenset()  # identify: the classes people could choose (the export's study.json)
    study_id: str | None = None  # the export's id, which every stimulus name carries (None: an older export)

    @functools.cached_property
    def real(self) -> dict[str, dict[str, str]]:
        """The stimuli that are tasks, not attention checks."""
        return {name: row for name, row in self.rows.items() if not row.get("expected")}

    @functools.cached_property
    def classes(self) -> set[str]:
        """The class names an identify answer can give (the manifest's classes and its checks' expected answers)."""
        names = {row["class"] for row in self.rows.values() if row.get("class")} | set(self.options)
        return names | {row["expected"] for row in self.rows.values() if row.get("expected")} - {DONT_KNOW}


@dataclass(frozen=True)
class Answer:
    worker: str
    stimulus: str
    answer: str  # pairwise: left | right | equal; identify: a class name or dont_know
    milliseconds: float | None


def worker_table(answers: Sequence[Answer], manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Per worker: answers, attention checks seen and passed, their accuracy and the median time per answer."""
    table: dict[str, dict[str, Any]] = {}
    for worker in sorted({a.worker for a in answers}):
        own = [a for a in answers if a.worker == worker]
        checks = [a for a in own if manifest.rows[a.stimulus].get("expected")]
        passed = sum(a.answer == manifest.rows[a.stimulus]["expected"] for a in checks)
        times = [a.milliseconds for a in own if a.milliseconds is not None]
        table[worker] = {
            "answers": len(own),
            "checks": len(checks),
            "checks_passed": passed,
            "check_accuracy": passed / len(checks) if checks else None,
            "median_seconds": float(np.median(times)) / 1000 if times else None,
        }
    return table


def krippendorff_alpha(answers: Sequence[Answer], stimuli: Sequence[str]) -> float | None:
    """Nominal alpha over a workers x stimuli table of answers (every answer value its own category); None when no
    stimulus has two answers or everyone gave the same answer (alpha is undefined)."""
    import krippendorff

    workers = sorted({a.worker for a in answers})
    values = sorted({a.answer for a in answers})
    if not workers or len(values) < 2:
        return None
    table = np.full((len(workers), len(stimuli)), np.nan)
    column = {name: index for index, name in enumerate(stimuli)}
    for answer in answers:
        if answer.stimulus in column:
            table[workers.index(answer.worker), column[answer.stimulus]] = values.index(answer.answer)
    if not ((~np.isnan(table)).sum(axis=0) >= 2).any():
        return None
    alpha = float(krippendorff.alpha(reliability_data=table, level_of_measurement="nominal"))
    return alpha if math.isfinite(alpha) else None


def _rate_key(label: str) -> tuple[float, str]:
    match = re.fullmatch(r"CR ([0-9.eE+-]+)", label)
    return (float(match.group(1)) if match else math.inf, label)


def pair_key(left: str, right: str) -> tuple[str, str]:
    """A pair of variant labels in a fixed order: the less compressed first."""
    a, b = sorted((left, right), key=_rate_key)
    return a, b


def winner(answer: Answer, row: Mapping[str, str]) -> str:
    """The variant a pairwise answer preferred, or "equal"."""
    return row["left"] if answer.answer == "left" else row["right"] if answer.answer == "right" else "equal"


PAIRWISE_P_NOTE = (
    "p: the mean preference (+1 a, -1 b, 0 equal) against 0, workers and images crossed random effects (two-way "
    "cluster-robust t), Holm over the pairs as p_holm; chi2_p and binom_p as the seed paper computed them, over the "
    "answers that chose a side, each answer independent"
)
IDENTIFY_P_NOTE = (
    "p: each pair of variants' accuracy difference against 0, workers and images crossed random effects (two-way "
    "cluster-robust t), Holm over the pairs as p_holm; chi2_p as the seed paper computed it, each answer independent"
)


def _crowd_figures(estimate: CrossedMean) -> dict[str, Any]:
    low, high = estimate.interval()
    finite = math.isfinite(estimate.se)
    return {
        "ci_low": low if finite else None,
        "ci_high": high if finite else None,
        "p": estimate.p if finite else None,
        "df": estimate.df if finite else None,
        "workers_in_test": estimate.n_replicates,
        "images_in_test": estimate.n_images,
    }


def _corrected(rows: list[dict[str, Any]], key: str = "p") -> list[float | None]:
    adjusted = holm([math.nan if row[key] is None else row[key] for row in rows])
    return [None if math.isnan(value) else float(value) for value in adjusted]


def pairwise_stats(answers: Sequence[Answer], manifest: Manifest) -> list[dict[str, Any]]:
    from scipy import stats

    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    scored: dict[tuple[str, str], list[tuple[float, str, str]]] = defaultdict(list)  # (score, worker, image)
    for answer in answers:
        row = manifest.real.get(answer.stimulus)
        if row is not None:
            pair = pair_key(row["left"], row["right"])
            chosen = winner(answer, row)
            counts[pair][chosen] += 1
            score = 1.0 if chosen == pair[0] else -1.0 if chosen == pair[1] else 0.0
            scored[pair].append((score, answer.worker, row.get("image_id") or answer.stimulus))
    pairs = []
    for (a, b), count in sorted(counts.items(), key=lambda item: (_rate_key(item[0][0]), _rate_key(item[0][1]))):
        a_count, b_count, equal = count[a], count[b], count["equal"]
        sided = a_count + b_count
        scores, workers, images = zip(*scored[(a, b)], strict=True)
        estimate = clustered_mean(np.asarray(scores), workers, images)
        pairs.append(
            {
                "a": a,
                "b": b,
                "a_count": a_count,
                "b_count": b_count,
                "equal_count": equal,
                "equal_rate": equal / (sided + equal) if sided + equal else None,
                "a_rate": a_count / sided if sided else None,
                "preference": estimate.mean,
                **_crowd_figures(estimate),
                "chi2_p": float(stats.chisquare([a_count, b_count]).pvalue) if sided else None,
                "binom_p": float(stats.binomtest(a_count, sided, 0.5).pvalue) if sided else None,
            }
        )
    # Several pairs are several tests: Holm's correction over the headline p is what "significant" reads.
    for figures, value, binomial in zip(pairs, _corrected(pairs), _corrected(pairs, "binom_p"), strict=True):
        figures["p_holm"] = value
        figures["binom_p_holm"] = binomial
    return pairs


def identify_stats(
    answers: Sequence[Answer], manifest: Manifest
) -> tuple[list[dict[str, Any]], float | None, list[dict[str, Any]]]:
    """(per variant accuracy, the seed paper's chi-squared p across variants, per pair of variants the accuracy
    difference with its crossed-effects p)."""
    from scipy import stats

    by_variant: dict[str, list[tuple[float, str, str]]] = defaultdict(list)  # (correct, worker, image)
    dont_know: Counter[str] = Counter()
    for answer in answers:
        row = manifest.real.get(answer.stimulus)
        if row is not None:
            correct = float(answer.answer == row["class"])
            by_variant[row["variant"]].append((correct, answer.worker, row.get("image_id") or answer.stimulus))
            dont_know[row["variant"]] += answer.answer == DONT_KNOW
    variants: list[dict[str, Any]] = []
    for name, hits in sorted(by_variant.items(), key=lambda item: _rate_key(item[0])):
        correct, known = int(sum(h[0] for h in hits)), len(hits) - dont_know[name]
        variants.append(
            {
                "variant": name,
                "answers": len(hits),
                "correct": correct,
                "dont_know": dont_know[name],
                "accuracy": correct / len(hits),
                "known_accuracy": correct / known if known else None,
            }
        )
    table = np.array([[v["correct"], v["answers"] - v["correct"]] for v in variants])
    chi2_p = None
    if len(variants) >= 2 and (table.sum(axis=0) > 0).all():
        chi2_p = float(stats.chi2_contingency(table).pvalue)
    contrasts = []
    for first, second in itertools.combinations([v["variant"] for v in variants], 2):
        estimate = accuracy_difference(by_variant[second], by_variant[first])
        contrasts.append({"a": first, "b": second, "difference": estimate.mean, **_crowd_figures(estimate)})
    for contrast, value in zip(contrasts, _corrected(contrasts), strict=True):
        contrast["p_holm"] = value
    return variants, chi2_p, contrasts


def accuracy_difference(
    variant: Sequence[tuple[float, str, str]], reference: Sequence[tuple[float, str, str]]
) -> CrossedMean:
    """Accuracy of `variant` minus that of `reference` from (correct, worker, image) answers, with workers and images
    crossed random effects: the two-way cluster-robust variance of the difference's influence scores (each answer's
    deviation from its side's accuracy over its side's share of the answers), whatever the pattern of who saw what."""
    both = [*variant, *reference]
    if not variant or not reference:
        return CrossedMean(math.nan, math.nan, math.nan, 0, 0, math.nan, math.nan, math.nan)
    accuracy_variant = float(np.mean([c for c, _, _ in variant]))
    accuracy_reference = float(np.mean([c for c, _, _ in reference]))
    share_variant, share_reference = len(variant) / len(both), len(reference) / len(both)
    influence = [(c - accuracy_variant) / share_variant for c, _, _ in variant]
    influence += [-(c - accuracy_reference) / share_reference for c, _, _ in reference]
    spread = clustered_mean(np.asarray(influence), [w for _, w, _ in both], [i for _, _, i in both])
    return replace(spread, mean=accuracy_variant - accuracy_reference)


def analyse(
    answers: Sequence[Answer], manifest: Manifest, min_check_accuracy: float | None = None, unusable: int = 0
) -> dict[str, Any]:
    """The study's report (the `--format json` of `xbench human analyse`): design, workers, answers, alpha and the
    design's statistics; workers whose attention-check accuracy is below `min_check_accuracy` are left out."""
    workers = worker_table(answers, manifest)
    excluded = sorted(
        worker
        for worker, row in workers.items()
        if min_check_accuracy is not None
        and row["check_accuracy"] is not None
        and row["check_accuracy"] < min_check_accuracy
    )
    kept = [a for a in answers if a.worker not in excluded]
    real = [a for a in kept if a.stimulus in manifest.real]
    report: dict[str, Any] = {
        "design": manifest.design,
        "workers": len({a.worker for a in kept}),
        "answers": len(real),
        "attention_check_answers": len(kept) - len(real),
        "unusable_rows": unusable,
        "alpha": krippendorff_alpha(real, sorted(manifest.real)),
        "alpha_note": ALPHA_NOTE,
        "excluded_workers": excluded,
        "min_check_accuracy": min_check_accuracy,
        "per_worker": workers,
    }
    if manifest.design == "pairwise":
        report["pairs"] = pairwise_stats(real, manifest)
        report["p_note"] = PAIRWISE_P_NOTE
    else:
        report["variants"], report["chi2_p"], report["contrasts"] = identify_stats(real, manifest)
        report["p_note"] = IDENTIFY_P_NOTE
    return report


def metric_agreement(
    answers: Sequence[Answer], manifest: Manifest, variants: Mapping[str, CellResult], seed: int = 0
) -> list[dict[str, Any]]:
    """Per metric of the cell results: on each pairwise stimulus with a human majority for one side, whether the
    metric's per-image scores prefer the same variant (a tie in the scores counts as not agreeing), with a 95 %
    percentile-bootstrap interval over stimuli; and Kendall tau between the variants' human win rates and their mean
    scores. Ranked by agreement."""
    from scipy import stats

    if manifest.design != "pairwise":
        return []
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    wins: Counter[str] = Counter()
    losses: Counter[str] = Counter()
    for answer in answers:
        row = manifest.real.get(answer.stimulus)
        if row is None:
            continue
        chosen = winner(answer, row)
        votes[answer.stimulus][chosen] += 1
        if chosen != "equal":
            wins[chosen] += 1
            losses[row["right"] if chosen == row["left"] else row["left"]] += 1
    majorities = {}
    for stimulus, count in votes.items():
        row = manifest.real[stimulus]
        left, right = count[row["left"]], count[row["right"]]
        if left != right:
            majorities[stimulus] = row["left"] if left > right else row["right"]
    missing = {label for name in majorities for label in (manifest.real[name]["left"], manifest.real[name]["right"])}
    missing -= set(variants)
    if missing:
        raise XbenchInputError(f"the suite's results have no variant {', '.join(sorted(missing))} of this study")
    any_result = next(iter(variants.values()))
    labels = sorted(set(wins) | set(losses), key=_rate_key)
    human = [wins[v] / (wins[v] + losses[v]) for v in labels]
    image_ids = sorted({int(manifest.real[s]["image_id"]) for s in majorities})
    rows = []
    for metric, first in any_result.metrics.items():
        sign = 1.0 if first.higher_is_better else -1.0

        def score(label: str, image_id: int, metric: str = metric, sign: float = sign) -> float | None:
            result = variants[label]
            value = result.metrics[metric].per_image[result.scored_images.index(image_id)]
            return None if value is None or not math.isfinite(value) else sign * value

        agree = []
        for stimulus, preferred in majorities.items():
            row = manifest.real[stimulus]
            image_id = int(row["image_id"])
            left_score, right_score = score(row["left"], image_id), score(row["right"], image_id)
            if left_score is None or right_score is None:
                continue
            metric_choice = (
                row["left"] if left_score > right_score else row["right"] if right_score > left_score else None
            )
            agree.append(float(metric_choice == preferred))
        if not agree:
            continue
        values = np.asarray(agree)
        low = high = float(values.mean())
        if len(values) >= 2 and values.min() != values.max():
            interval = stats.bootstrap(
                (values,), np.mean, method="percentile", n_resamples=2000, random_state=np.random.default_rng(seed)
            ).confidence_interval
            low, high = float(interval.low), float(interval.high)
        means = []
        for label in labels:
            scored = [score(label, image_id) for image_id in image_ids]
            finite = [s for s in scored if s is not None]
            means.append(float(np.mean(finite)) if finite else math.nan)
        tau = None
        if len(labels) >= 2 and all(math.isfinite(m) for m in means):
            value = stats.kendalltau(human, means).statistic
            tau = float(value) if math.isfinite(value) else None
        rows.append(
            {
                "metric": metric,
                "higher_is_better": first.higher_is_better,
                "stimuli": len(agree),
                "agreement": float(values.mean()),
                "ci_low": low,
                "ci_high": high,
                "kendall_tau": tau,
                "variants": len(labels),
            }
        )
    return sorted(rows, key=lambda r: -r["agreement"])
