"""MetaQuantus's consistency tests (Hedstrom et al., TMLR 2023; its `compute_iac_score` and `compute_iec_*`) on the
scores a cell logged under its meta-evaluation perturbations (`measure.perturbations`). The executor puts each
cell's share into its figures (`consistency_figures`), which the store logs as given; `analyse.trust` turns them into
each metric's noise resilience and adversary reactivity over the suite. NumPy and SciPy only.

Why here and not in `analyse`: the per-cell tests are part of measuring a cell (MetaQuantus computes them with the
metric), and the executor, which runs before analysis, must be able to compute them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

from xbench.core.results import MetricResult, PerturbedScores


def intra_consistency(q: np.ndarray, q_hat: np.ndarray, images: np.ndarray, adversary: bool) -> float:
    """MetaQuantus's IAC: the Wilcoxon signed-rank p of q vs q_hat over `images` (1 - p for the adversary test);
    NaN with no image to compare."""
    first, second = q[images], q_hat[images]
    if not len(first):
        return math.nan
    if np.all(first == second):
        p = 1.0  # the same scores: no evidence of a difference (SciPy cannot rank zero differences alone)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SciPy warns that few samples make the normal approximation rough
            p = float(wilcoxon(first, second, zero_method="zsplit", alternative="two-sided").pvalue)
    return 1 - p if adversary else p


def inter_consistency_noise(q: np.ndarray, q_hat: np.ndarray, images: np.ndarray) -> float:
    """MetaQuantus's IEC for minor perturbations: q and q_hat are (explainers, images); the share of places in the
    per-image ranking of the explainers that keep their explainer (stable sorts: ties keep the explainers' order)."""
    if q.shape[0] < 2 or not images.any():
        return math.nan
    before = np.argsort(q[:, images], axis=0, kind="stable")
    after = np.argsort(q_hat[:, images], axis=0, kind="stable")
    return float((before == after).mean())


def inter_consistency_adversary(q: np.ndarray, q_hat: np.ndarray, images: np.ndarray, higher_is_better: bool) -> float:
    """MetaQuantus's IEC for disruptive perturbations: the share of `images` whose unperturbed score is strictly
    better than the disrupted one."""
    if not images.any():
        return math.nan
    better = q[images] > q_hat[images] if higher_is_better else q[images] < q_hat[images]
    return float(better.mean())


@dataclass
class CellConsistency:
    iac_nr: list[float]
    iec_nr: list[float]
    iac_ar: list[float]
    iec_ar: list[float]
    minor_change: list[float]
    disruptive_change: list[float]

    @classmethod
    def empty(cls) -> CellConsistency:
        return cls([], [], [], [], [], [])

    def add(self, other: CellConsistency) -> None:
        for name in ("iac_nr", "iec_nr", "iac_ar", "iec_ar", "minor_change", "disruptive_change"):
            getattr(self, name).extend(getattr(other, name))


def cell_consistency(
    metric: str, higher: bool, q: np.ndarray | None, perturbations: Sequence[PerturbedScores]
) -> CellConsistency:
    """One cell's MetaQuantus tests for `metric`: q its unperturbed per-image scores, one test per draw of each
    perturbation (IEC_NR, which ranks explainers, needs the other cells of the variant: `analyse.trust`)."""
    collected = CellConsistency.empty()
    for perturbed in perturbations:
        q_hat = perturbed.metric_scores(metric)
        for draw, kept in enumerate(perturbed.kept_prediction):
            change = abs(perturbed.accuracy[draw] - perturbed.reference_accuracy)
            (collected.disruptive_change if perturbed.disruptive else collected.minor_change).append(change)
            if q is None or draw >= len(q_hat):
                continue
            finite = np.isfinite(q) & np.isfinite(q_hat[draw])
            kept_images = np.asarray(kept, dtype=bool)
            if perturbed.disruptive:
                images = finite & ~kept_images
                collected.iac_ar.append(intra_consistency(q, q_hat[draw], images, adversary=True))
                collected.iec_ar.append(inter_consistency_adversary(q, q_hat[draw], images, higher))
            else:
                images = finite & kept_images
                collected.iac_nr.append(intra_consistency(q, q_hat[draw], images, adversary=False))
    return collected


def consistency_figures(
    metrics: Mapping[str, MetricResult], perturbations: Sequence[PerturbedScores]
) -> tuple[dict[str, float], dict[str, str]]:
    """A cell's share of the meta-evaluation as figures: per metric scored per image the mean of its IAC_NR, IAC_AR
    and IEC_AR tests over the draws (`meta.<metric>.<test>`; IEC_NR ranks explainers, so it is a suite figure only),
    and per perturbation the mean change in accuracy (`meta.accuracy_change.<perturbation>`). A test with no finite
    draw is left out of the figures and said in the second dict (figures are finite numbers)."""
    figures: dict[str, float] = {}
    missing: dict[str, str] = {}
    if not perturbations:
        return figures, missing
    for name, metric in metrics.items():
        if metric.batch_level:
            continue
        tests = cell_consistency(name, metric.higher_is_better, metric.scores, perturbations)
        for test in ("iac_nr", "iac_ar", "iec_ar"):
            finite = [v for v in getattr(tests, test) if math.isfinite(v)]
            if finite:
                figures[f"meta.{name}.{test}"] = float(np.mean(finite))
            else:
                missing[f"meta.{name}.{test}"] = "no draw left an image to compare"
    for perturbed in perturbations:
        changes = [abs(a - perturbed.reference_accuracy) for a in perturbed.accuracy]
        if changes:
            figures[f"meta.accuracy_change.{perturbed.perturbation}"] = float(np.mean(changes))
    return figures, missing
