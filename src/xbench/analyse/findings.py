"""What a suite's verdicts add up to: safe compression per explainer (the CR ladder walked up through `decide`'s
intersection-union test, paying for the looks of an `--until-decided` run), each cell summarised over its seeds with
its intervals, and the sweet spots (a significant improvement whose accuracy drop is bounded)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from xbench.analyse.decide import safe_sequences
from xbench.analyse.inference import ALPHA, crossed_mean, crossed_table
from xbench.analyse.stats import ACCURACY, Comparison, SuiteStats, pruning_of
from xbench.core.cells import pruning_label
from xbench.core.numbers import is_finite_number

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
        groups[(record["model"], pruning_of(record), float(record["compression_rate"]), record["explainer"])].append(
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
