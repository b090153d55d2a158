"""Which metric to trust: MetaQuantus's meta-evaluation (Hedstrom et al., TMLR 2023) of a suite's metrics, from the
scores its cells logged under minor and disruptive perturbations (`meta_evaluation:` in a suite).

For one metric, q is a cell's per-image scores and q_hat those of one perturbation draw (fresh explanations of the
perturbed model or inputs). As in MetaQuantus's `compute_iac_score` / `compute_iec_*`:

- intra-consistency, noise (IAC_NR): the Wilcoxon signed-rank p (two-sided, `zsplit`) of q against q_hat over the
  images whose prediction a minor perturbation left alone; high = the scores did not move;
- intra-consistency, adversary (IAC_AR): 1 - that p over the images whose prediction a disruptive perturbation
  changed; high = the scores moved;
- inter-consistency, noise (IEC_NR): the share of (rank, image) places where the explainers, ranked by the metric,
  keep their order under a minor perturbation (needs two or more explainers);
- inter-consistency, adversary (IEC_AR): the share of (explainer, image) pairs where the unperturbed explanation
  scores better than the disrupted one.

Noise resilience = mean(IAC_NR, IEC_NR), adversary reactivity = mean(IAC_AR, IEC_AR), and the meta-consistency
MC = the mean of the four, each in [0, 1], higher better. Where xbench differs from MetaQuantus: the minor tests pool
weight and input noise, and the disruptive test re-initialises the last layers instead of adding large weight noise
(the model-randomisation test); all four are means over cells (model variants and seeds) and draws; a test with no
images to compare (no prediction changed) is left out rather than scored 0 or 1; identical scores (all differences 0)
give p = 1, where SciPy gives none.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from xbench.core.results import PRUNING_FIELDS, PerturbedScores
from xbench.measure.meta_consistency import CellConsistency, cell_consistency, inter_consistency_noise

READING = (
    "Noise resilience: how little a metric moves when the weights or inputs get a little noise that leaves the "
    "predictions alone (1 = not at all). Adversary reactivity: how much it moves when the last layers are "
    "randomised (1 = always, and always for the worse). A metric worth trusting is high on both; one that ignores "
    "the explanation is resilient but not reactive, one that is noise is reactive but not resilient. MC is their "
    "mean (MetaQuantus's meta-consistency)."
)


@dataclass(frozen=True)
class MetricTrust:
    """One metric's meta-evaluation, for one explainer or (explainer None) over all of them."""

    metric: str
    explainer: str | None
    iac_nr: float
    iec_nr: float
    iac_ar: float
    iec_ar: float
    minor_accuracy_change: float  # mean |accuracy change| under the minor perturbations, in accuracy points (0-100)
    disruptive_accuracy_change: float
    tests: int  # perturbation draws that went into the figures

    @property
    def noise_resilience(self) -> float:
        return _mean([self.iac_nr, self.iec_nr])

    @property
    def adversary_reactivity(self) -> float:
        return _mean([self.iac_ar, self.iec_ar])

    @property
    def meta_consistency(self) -> float:
        return _mean([self.iac_nr, self.iec_nr, self.iac_ar, self.iec_ar])

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "noise_resilience": self.noise_resilience,
            "adversary_reactivity": self.adversary_reactivity,
            "meta_consistency": self.meta_consistency,
        }


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _trust(tests: CellConsistency, metric: str, explainer: str | None) -> MetricTrust:
    return MetricTrust(
        metric,
        explainer,
        _mean(tests.iac_nr),
        _mean(tests.iec_nr),
        _mean(tests.iac_ar),
        _mean(tests.iec_ar),
        100 * _mean(tests.minor_change),
        100 * _mean(tests.disruptive_change),
        len(tests.minor_change) + len(tests.disruptive_change),
    )


def human_agreement(reports: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """metric -> how often it prefers what most people preferred, from the newest human study of the suite that
    measured it (`xbench human analyse --suite`; reports come newest first)."""
    agreement: dict[str, float] = {}
    for report in reports:
        for row in report.get("agreement") or []:
            if row.get("agreement") is not None:
                agreement.setdefault(str(row["metric"]), float(row["agreement"]))
    return agreement


def metric_trust(
    records: Sequence[Mapping[str, Any]],
    per_image: Mapping[str, Mapping[str, np.ndarray]],
    meta: Mapping[str, Sequence[PerturbedScores]],
) -> list[MetricTrust]:
    """Per metric: its meta-evaluation over every explainer (explainer None), then per explainer; empty when no
    cell was meta-evaluated. `records` are the flat cell records, `per_image` the unperturbed per-image scores and
    `meta` the perturbed ones, both by run id."""
    groups: dict[tuple[Any, ...], dict[str, str]] = defaultdict(dict)  # variant and seed -> explainer -> run id
    directions: dict[str, bool] = {}
    for record in records:
        run = record["run_id"]
        if meta.get(run):
            pruning = tuple(record[name] for name in PRUNING_FIELDS)
            key = (
                record["model"],
                *pruning,
                record.get("quantization", "none"),
                float(record["compression_rate"]),
                int(record["seed"]),
            )
            groups[key][str(record["explainer"])] = run
            for name, direction in record.get("metric_directions", {}).items():
                directions[name] = direction == "higher"
    result = []
    for metric, higher in sorted(directions.items()):
        by_explainer: dict[str, CellConsistency] = defaultdict(CellConsistency.empty)
        inter_noise: list[float] = []
        for runs in groups.values():
            inter_noise += _inter_noise(metric, runs, per_image, meta)
            for explainer, run in runs.items():
                by_explainer[explainer].add(cell_consistency(metric, higher, per_image[run].get(metric), meta[run]))
        if not by_explainer:
            continue
        overall = CellConsistency.empty()
        for collected in by_explainer.values():
            overall.add(collected)
        overall.iec_nr = inter_noise
        result.append(_trust(overall, metric, None))
        for explainer in sorted(by_explainer):
            # inter-consistency under noise is a property of the metric over the explainers, not of one explainer
            collected = by_explainer[explainer]
            collected.iec_nr = inter_noise
            result.append(_trust(collected, metric, explainer))
    return result


def _inter_noise(
    metric: str,
    runs: Mapping[str, str],
    per_image: Mapping[str, Mapping[str, np.ndarray]],
    meta: Mapping[str, Sequence[PerturbedScores]],
) -> list[float]:
    """IEC_NR of one model variant and seed: its explainers ranked by the metric, per minor perturbation draw (every
    explainer of a variant saw the same draws: they are seeded by seed, perturbation and draw)."""
    explainers = sorted(e for e, run in runs.items() if metric in per_image[runs[e]])
    if len(explainers) < 2:
        return []
    q = np.stack([per_image[runs[e]][metric] for e in explainers])
    values = []
    for index, perturbed in enumerate(meta[runs[explainers[0]]]):
        if perturbed.disruptive:
            continue
        draws = [meta[runs[e]][index].metric_scores(metric) for e in explainers]
        for draw, kept in enumerate(perturbed.kept_prediction):
            if any(draw >= len(d) for d in draws):
                continue
            q_hat = np.stack([d[draw] for d in draws])
            images = np.asarray(kept, dtype=bool) & np.isfinite(q).all(0) & np.isfinite(q_hat).all(0)
            values.append(inter_consistency_noise(q, q_hat, images))
    return values
