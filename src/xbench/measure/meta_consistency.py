"""MetaQuantus's consistency tests (Hedstrom et al., TMLR 2023; its `compute_iac_score` and `compute_iec_*`) on the
scores a cell logged under its meta-evaluation perturbations (`measure.perturbations`). `analyse.trust` turns them
into each metric's noise resilience and adversary reactivity. NumPy and SciPy only, so the store can log them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

from xbench.core.results import PerturbedScores


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
