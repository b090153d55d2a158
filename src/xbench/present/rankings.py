"""The front page's answer: which explainer keeps its explanations longest under pruning, per suite, from the
suite's verdicts (never hand-written), with ranks that are shared wherever the evidence does not order them.

Per suite × model × pruning config × explainer, two figures:
- **safe CR**: the largest CR at which accuracy and every metric are shown no worse than their margins (the suite's
  safe-compression ladder, `analyse.findings.safe_compression`); 1 when even the smallest CR is not shown safe.
- **area kept**: the area under each metric's CR curve normalised to CR 1: the curve is the metric's difference to
  CR 1 in units of its margin, signed so that positive is better, 0 at CR 1 by construction, over log₂ CR (each
  halving of the weights counts the same); its area (trapezoids) is divided by log₂ of the largest CR, so it reads
  as the curve's mean height: 0 = explanations as at CR 1 all the way, −1 = a margin worse on average. The metrics'
  areas are averaged with each metric weighted by how stable its ranking of cells is across seeds (its seed Kendall
  τ, the suite's trust figure, clipped at 0; equal weights with one seed or when no metric is stable). Its interval
  is the same area of the comparisons' 95 % bounds: the interval the area would have if the comparisons' errors
  moved together, so never narrower than the true one.

Ranks: by safe CR, then by area kept. Two explainers share a rank when their safe CRs are equal and their intervals
overlap; rows of different suites are never ranked against each other (a suite is one protocol).

Pruning methods are ranked at each CR they share by the same signed change in margins at that CR (one point of the
curve: no area).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from xbench.analyse.findings import SafeCompression, safe_compression
from xbench.analyse.stats import ACCURACY, Comparison, SuiteStats

METHOD = (
    "Ranked within each suite, model and pruning config (a suite is one protocol: rows of different suites are never "
    "ranked against each other): first by the safe CR, the largest CR at which accuracy and every metric are shown no "
    "worse than their margins (none: not even the smallest CR); then by the area kept: the area under each metric's "
    "CR curve normalised to CR 1 (its difference to CR 1 in units of its margin, positive = better, over log₂ CR, "
    "divided by log₂ of the largest CR: the curve's mean height, 0 = as at CR 1 throughout), averaged over the "
    "metrics, each weighted by the stability of its cell ranking across seeds (seed Kendall τ, clipped at 0). Its "
    "interval is the same area of the comparisons' 95 % bounds (never narrower than the true one). Explainers whose "
    "safe CRs are equal and whose intervals overlap share a rank (shown 1=)."
)
NAMES = {
    "gradcam": "Grad-CAM",
    "integrated_gradients": "Integrated Gradients",
    "saliency": "Saliency",
    "gradient_shap": "GradientSHAP",
    "occlusion": "Occlusion",
}


@dataclass(frozen=True)
class Ranked:
    """One explainer of one model and pruning config in one suite, with its rank."""

    suite: str
    model: str
    pruning: str
    explainer: str
    safe_rate: float  # 1.0: not even the smallest CR shown safe
    safe_text: str
    blocked_by: str  # what blocks the next CR, in words ("" when every CR passed)
    blockers: tuple[str, ...]  # the metrics (or accuracy) that block it
    smallest_rate: float  # the ladder's first CR
    change: float  # area kept (explainers) or change in margins at one CR (pruning methods); positive = better
    change_low: float
    change_high: float
    rank: int = 0
    shared: bool = False


def explainer_name(name: str) -> str:
    return NAMES.get(name, name.replace("_", " "))


def _weights(stats: SuiteStats) -> dict[str, float]:
    taus = {r.metric: r.seed_tau for r in stats.reliability if r.metric != ACCURACY}
    weights = {metric: max(tau, 0.0) if math.isfinite(tau) else math.nan for metric, tau in taus.items()}
    if not weights or any(math.isnan(w) for w in weights.values()) or sum(weights.values()) <= 0:
        return dict.fromkeys(taus, 1.0)
    return weights


def _signed(c: Comparison, value: float) -> float:
    return (value if c.higher_is_better else -value) / c.margin


def _by_metric(comparisons: list[Comparison]) -> dict[str, dict[float, tuple[float, float, float]]]:
    """metric -> CR -> the signed change in margins (positive = better) and its 95 % bounds, ordered low-high."""
    by_metric: dict[str, dict[float, tuple[float, float, float]]] = defaultdict(dict)
    for c in comparisons:
        if not (c.margin > 0 and all(math.isfinite(v) for v in (c.mean_diff, c.ci_low, c.ci_high))):
            continue
        low, high = sorted((_signed(c, c.ci_low), _signed(c, c.ci_high)))
        by_metric[c.metric][c.compression_rate] = (_signed(c, c.mean_diff), low, high)
    return by_metric


def _weighted(per_metric: dict[str, tuple[float, ...]], weights: dict[str, float]) -> tuple[float, ...]:
    total = sum(weights.get(metric, 0.0) for metric in per_metric)
    if total <= 0:
        return math.nan, math.nan, math.nan
    return tuple(
        sum(weights.get(metric, 0.0) / total * figures[position] for metric, figures in per_metric.items())
        for position in range(3)
    )


def curve_area(points: dict[float, float]) -> float:
    """The area under a metric's CR curve normalised to CR 1: the curve passes through 0 at CR 1, the x axis is
    log₂ CR, trapezoids between the CRs measured, divided by log₂ of the largest CR (the curve's mean height)."""
    rates = sorted(r for r in points if r > 1)
    if not rates:
        return math.nan
    xs = [0.0, *(math.log2(r) for r in rates)]
    ys = [0.0, *(points[r] for r in rates)]
    area = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))
    return area / xs[-1]


def _area(comparisons: list[Comparison], weights: dict[str, float]) -> tuple[float, ...]:
    """Area kept: per metric `curve_area` of the signed change in margins and of its bounds, then their weighted
    mean over metrics."""
    per_metric = {
        metric: tuple(curve_area({rate: figures[position] for rate, figures in curve.items()}) for position in range(3))
        for metric, curve in _by_metric(comparisons).items()
    }
    return _weighted({m: f for m, f in per_metric.items() if all(math.isfinite(v) for v in f)}, weights)


def _change(comparisons: list[Comparison], weights: dict[str, float]) -> tuple[float, ...]:
    """At one CR: the weighted mean over metrics of the signed change in margins (averaged over the comparisons of a
    metric, e.g. its explainers), and its bounds."""
    per_metric: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for c in comparisons:
        for figures in _by_metric([c]).values():
            per_metric[c.metric] += figures.values()
    means = {m: tuple(sum(v[i] for v in values) / len(values) for i in range(3)) for m, values in per_metric.items()}
    return _weighted(means, weights)


def _blocked(safe: SafeCompression) -> str:
    if safe.failed_rate is None:
        return ""
    names = ", ".join("accuracy" if c is None else c.metric for c in safe.blocking[safe.failed_rate])
    how = "shown worse than" if safe.shown_unsafe else "not shown within"
    return f"CR {safe.failed_rate:g}: {names} {how} the margin"


def explainer_rows(suite: str, stats: SuiteStats) -> list[Ranked]:
    """The ranked explainers of one suite, best first, ranks shared where the evidence does not order them."""
    weights = _weights(stats)
    metric_comparisons: dict[tuple[str, str, str], list[Comparison]] = defaultdict(list)
    for c in stats.comparisons:
        if c.metric != ACCURACY and c.explainer is not None:
            metric_comparisons[(c.model, c.pruning_method, c.explainer)].append(c)
    rows = []
    for safe in safe_compression(stats):
        change, low, high = _area(metric_comparisons[(safe.model, safe.pruning_method, safe.explainer)], weights)
        rows.append(
            Ranked(
                suite=suite,
                model=safe.model,
                pruning=f"{safe.pruning_method} ({safe.pruning_scope}, {safe.pruning_granularity}, "
                f"{safe.pruning_schedule})",
                explainer=safe.explainer,
                safe_rate=safe.safe_rate if safe.safe_rate is not None else 1.0,
                safe_text=f"CR {safe.safe_rate:g}" if safe.safe_rate is not None else "none",
                blocked_by=_blocked(safe),
                blockers=tuple(
                    "accuracy" if c is None else c.metric
                    for c in (safe.blocking[safe.failed_rate] if safe.failed_rate is not None else [])
                ),
                smallest_rate=min(safe.rates),
                change=change,
                change_low=low,
                change_high=high,
            )
        )
    return _rank(rows)


def _key(row: Ranked) -> tuple[float, float]:
    return (-row.safe_rate, -row.change if math.isfinite(row.change) else math.inf)


def _rank(rows: list[Ranked]) -> list[Ranked]:
    """Competition ranks within each (model, pruning) of a suite: a row shares the rank of the row that opened its
    group when their safe CRs are equal and their intervals overlap."""
    ranked: list[Ranked] = []
    groups: dict[tuple[str, str], list[Ranked]] = defaultdict(list)
    for row in rows:
        groups[(row.model, row.pruning)].append(row)
    for members in groups.values():
        members.sort(key=_key)
        leader: Ranked | None = None
        for position, row in enumerate(members, start=1):
            ties = leader is not None and leader.safe_rate == row.safe_rate and _overlap(leader, row)
            if ties and leader is not None:
                row = Ranked(**{**row.__dict__, "rank": leader.rank, "shared": True})
                if not leader.shared:
                    index = ranked.index(leader)
                    leader = Ranked(**{**leader.__dict__, "shared": True})
                    ranked[index] = leader
            else:
                row = Ranked(**{**row.__dict__, "rank": position})
                leader = row
            ranked.append(row)
    return ranked


def _overlap(a: Ranked, b: Ranked) -> bool:
    if not all(math.isfinite(v) for v in (a.change_low, a.change_high, b.change_low, b.change_high)):
        return True  # no interval: nothing orders them
    return a.change_low <= b.change_high and b.change_low <= a.change_high


def answer(suite: str, rows: list[Ranked]) -> str:
    """One sentence per suite, from its safe-compression verdicts: up to which CR each explainer keeps accuracy and
    every metric within their margins, or that none is shown safe and what blocks the first CR."""
    if not rows:
        return f"On {suite}, nothing has been compared yet."
    parts = []
    for (model, pruning), members in _by_model(rows).items():
        where = f"{model} {_compressed_by(pruning)}"
        safe = sorted((r for r in members if r.safe_rate > 1), key=_key)
        if not safe:
            first = min(r.smallest_rate for r in members)
            blockers = sorted({name for r in members for name in r.blockers})
            parts.append(
                f"{where}: no explainer keeps accuracy and every metric within their margins even at CR {first:g}"
                + (f" ({', '.join(blockers)} not shown within them)" if blockers else "")
            )
            continue
        kept = ", ".join(f"{explainer_name(r.explainer)} to CR {r.safe_rate:g}" for r in safe)
        unsafe = [explainer_name(r.explainer) for r in members if r.safe_rate <= 1]
        parts.append(
            f"{where}: accuracy and every metric stay within their margins for {kept}"
            + (f"; for {', '.join(unsafe)} not even at CR {min(r.smallest_rate for r in members):g}" if unsafe else "")
        )
    return f"On {suite}, " + "; ".join(parts) + "."


def _compressed_by(pruning: str) -> str:
    """`pruned by magnitude`, `pruned by magnitude and quantized to int8_static`, or `quantized to int8_static` (the
    unpruned model quantized), from a ranking row's pruning column."""
    method = pruning.rsplit(" (", 1)[0]
    pruned, _, quantized = method.partition(" + ")
    if pruned == "none" and quantized:
        return f"quantized to {quantized}"
    return f"pruned by {pruned}" + (f" and quantized to {quantized}" if quantized else "")


def _by_model(rows: list[Ranked]) -> dict[tuple[str, str], list[Ranked]]:
    groups: dict[tuple[str, str], list[Ranked]] = defaultdict(list)
    for row in rows:
        groups[(row.model, row.pruning)].append(row)
    return groups


def _shown(r: Ranked) -> dict[str, Any]:
    """A ranked row's rank and its area kept (or change in margins) as the page shows and sorts them."""
    return {
        "rank": f"{r.rank}=" if r.shared else str(r.rank),
        "rank_value": r.rank,
        "change": "—" if not math.isfinite(r.change) else f"{r.change:+.2f}".replace("-", "−"),
        "change_value": r.change if math.isfinite(r.change) else -1e9,
        "interval": "—"
        if not math.isfinite(r.change_low)
        else f"[{r.change_low:+.2f}, {r.change_high:+.2f}]".replace("-", "−"),
    }


def ranking_view(
    suite: str,
    href: str,
    stats: SuiteStats,
    protocol: str = "",
    source: str = "",
    records: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What the front page shows of one suite from one source: its answer sentence and its explainer ranking, as
    text, with the protocol key and the source it came from."""
    rows = explainer_rows(suite, stats)
    return {
        "suite": suite,
        "href": href,
        "protocol": protocol,
        "source": source,
        "methods": method_view(stats),
        "models": model_view(stats, records or []),
        "answer": answer(suite, rows),
        "rows": [
            {
                **_shown(r),
                "model": r.model,
                "pruning": r.pruning,
                "explainer": explainer_name(r.explainer),
                "safe": r.safe_text,
                "safe_value": r.safe_rate,
                "blocked_by": r.blocked_by,
            }
            for r in rows
        ],
    }


def method_view(stats: SuiteStats) -> list[dict[str, Any]]:
    """Pruning methods of each model ranked at each CR they share: by the change in margins of their explanations
    (averaged over explainers and metrics as for the explainers), ranks shared where the intervals overlap."""
    weights = _weights(stats)
    by_method: dict[tuple[str, float, str], list[Comparison]] = defaultdict(list)
    for c in stats.comparisons:
        if c.metric != ACCURACY and c.explainer is not None:
            by_method[(c.model, c.compression_rate, c.pruning_method)].append(c)
    methods: dict[tuple[str, float], list[str]] = defaultdict(list)
    for model, rate, method in by_method:
        methods[(model, rate)].append(method)
    out = []
    for (model, rate), names in sorted(methods.items()):
        if len(names) < 2:
            continue  # one method at this CR: nothing to rank
        rows = []
        for method in names:
            change, low, high = _change(by_method[(model, rate, method)], weights)
            rows.append(
                Ranked(
                    suite="",
                    model=model,
                    pruning=f"CR {rate:g}",
                    explainer=method,
                    safe_rate=1.0,
                    safe_text="",
                    blocked_by="",
                    blockers=(),
                    smallest_rate=rate,
                    change=change,
                    change_low=low,
                    change_high=high,
                )
            )
        for r in _rank(rows):
            out.append(
                {
                    "model": model,
                    "rate": f"{rate:g}",
                    "rate_value": rate,
                    "method": r.explainer,
                    **_shown(r),
                }
            )
    return out


def model_view(stats: SuiteStats, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Models of a suite: the largest safe CR any of their explainers reaches under any pruning config, and the
    accuracy kept per stored megabyte at that CR (mean accuracy over seeds over the bytes of the nonzero weights at 4
    bytes each: what a sparse format stores as values, before its indices; CR 1 when none is safe)."""
    best: dict[str, float] = {}
    for safe in safe_compression(stats):
        best[safe.model] = max(best.get(safe.model, 1.0), safe.safe_rate or 1.0)
    out = []
    for model, rate in sorted(best.items(), key=lambda item: (-item[1], item[0])):
        at_rate = [
            r
            for r in records
            if r["model"] == model
            and float(r["compression_rate"]) == rate
            and r.get("accuracy") is not None
            and r.get("params_nonzero")
        ]
        accuracy = sum(r["accuracy"] for r in at_rate) / len(at_rate) if at_rate else math.nan
        megabytes = sum(r["params_nonzero"] * 4 / 1e6 for r in at_rate) / len(at_rate) if at_rate else math.nan
        per_mb = accuracy / megabytes if at_rate and megabytes > 0 else math.nan
        out.append(
            {
                "model": model,
                "safe": f"CR {rate:g}" if rate > 1 else "none",
                "safe_value": rate,
                "accuracy": "—" if math.isnan(accuracy) else f"{accuracy:.3f}",
                "megabytes": "—" if math.isnan(megabytes) else f"{megabytes:.3g}",
                "per_mb": "—" if math.isnan(per_mb) else f"{per_mb:.3g}",
                "per_mb_value": per_mb if math.isfinite(per_mb) else -1.0,
            }
        )
    return out
