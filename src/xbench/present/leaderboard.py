"""Static leaderboard: a self-contained site (no CDN, no server, opens from file://) built from the MLflow store.

`load_suite` reads a suite's cell records, per-image scores (scores.csv) and gallery images from the store; the rest
is pure: records and `xbench.analyse.stats` in, a view model out, rendered by the jinja2 templates in `templates/`
(autoescaped, so every string from a suite or the store is shown as text). No torch import.

Why ~1,000 lines in one module: loading, the chart engine, the suite page's views and the pages wait for #43's split
along those seams; the front page's rankings already live in `rankings`.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xbench import __version__
from xbench.analyse.orderings import kendall_tau, pareto_front
from xbench.analyse.stats import (
    ACCURACY,
    DEFAULT_ACCURACY_MARGIN,
    METHOD,
    CellSummary,
    Comparison,
    Reliability,
    SuiteStats,
    safe_compression,
    suite_stats,
    summarise_cells,
    sweet_spots,
)
from xbench.analyse.trust import READING as TRUST_READING
from xbench.core.numbers import is_finite_number
from xbench.core.references import Reference, load_reference, replication_rows
from xbench.core.results import PerturbedScores
from xbench.core.sequential import Sequential
from xbench.present.jinja import environment
from xbench.present.rankings import METHOD as RANKING_METHOD
from xbench.present.rankings import ranking_view
from xbench.store.links import run_url, runs_url

DEFAULT_MAX_ACCURACY_DROP = DEFAULT_ACCURACY_MARGIN  # "one point" of accuracy
PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
    "#636363",
    "#9c9ede",
]
GALLERY_KINDS = {"gallery_overlay.png": "jet heatmap overlay", "gallery_occlusion.png": "top-10 % pixels shown"}


@dataclass
class SuiteResults:
    """What a suite page shows: one record per cell run (a cell and seed), and per run_id its per-image scores and
    gallery PNGs."""

    name: str
    records: list[dict[str, Any]]
    per_image: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    gallery: dict[str, dict[str, bytes]] = field(default_factory=dict)
    reference: Reference | None = None
    human: list[dict[str, Any]] = field(default_factory=list)  # human-study reports (`xbench human analyse --suite`)
    equivalence: dict[str, float] = field(default_factory=dict)  # the suite's equivalence margins (`equivalence:`)
    experiment_id: str | None = None  # the suite's MLflow experiment, for links into the MLflow UI
    meta: dict[str, tuple[PerturbedScores, ...]] = field(default_factory=dict)  # run_id -> meta-evaluation scores
    protocol: str = ""  # `protocol_key`: studies with the same key ran the same protocol
    protocol_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)  # `Store.protocol_fields`
    source: str = ""  # where the results came from (a store's URI, or a bundle), shown as provenance
    page_name: str = ""  # the page's name, when two sources hold suites of one name
    sequential: Sequential | None = None  # the looks of an `--until-decided` run, paid for by safe compression

    @property
    def page(self) -> str:
        return suite_filename(self.page_name or self.name)

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for record in self.records:
            names += [n for n in record.get("metric_directions", {}) if n not in names]
        return names

    def higher_is_better(self, metric: str) -> bool:
        for record in self.records:
            if metric in record.get("metric_directions", {}):
                return bool(record["metric_directions"][metric] == "higher")
        return True


def load_suite(store: Any, suite: str) -> SuiteResults:
    """Records, per-image scores and gallery pictures of `suite` from a `tracking.Store`: all from the cell results;
    the pictures are drawn here from their raw arrays."""
    from xbench.core.progress import track
    from xbench.present import drawing

    records = store.load_results(suite)
    reference = store.reference(suite)
    results = SuiteResults(
        suite,
        records,
        store.per_image_scores(records),
        reference=load_reference(reference) if reference else None,
        human=store.human_studies(suite),
        equivalence=store.equivalence(suite),
        experiment_id=store.experiment_id(suite),
        meta=store.meta_evaluations(records),
        protocol=store.protocol_key(records),
        protocol_fields=store.protocol_fields(records),
        sequential=store.sequential(suite),
        source=str(store.uri),
    )
    for record in track(records, f"drawing {suite}'s gallery"):
        arrays = store.arrays(record["run_id"], ("gallery_images", "gallery_attributions"))
        if len(arrays) == 2:
            images = arrays["gallery_images"].astype(np.float64) / 255
            results.gallery[record["run_id"]] = drawing.gallery_strips(images, arrays["gallery_attributions"])
    return results


# ---------------------------------------------------------------------------------------------------- numbers


_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def readable(value: Any, unit: str = "") -> str:
    """A number for reading: 3 significant digits, large counts with an SI prefix (4.93 M params, 179 MFLOPs)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if not isinstance(value, int | float):
        return str(value)
    if unit:
        for scale, prefix in _SI:
            if abs(value) >= scale:
                return f"{value / scale:.3g} {prefix}{unit}"
        return f"{value:.3g} {unit}"
    return f"{value:.3g}"


# ---------------------------------------------------------------------------------------------------- page parts


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    text: bool = False
    cost: bool = False  # folded away unless the reader asks for cost columns
    unit: str = ""
    higher: bool | None = None  # best value per model is highlighted when set


def _columns(results: SuiteResults) -> list[Column]:
    arrows = {True: "↑", False: "↓"}
    return [
        Column("model", "model", text=True),
        Column("pruning_method", "pruning", text=True),
        Column("compression_rate", "CR (scope)"),
        Column("explainer", "explainer", text=True),
        Column("seeds", "seeds"),
        Column(ACCURACY, "accuracy ↑", higher=True),
        *(
            Column(m, f"{m} {arrows[results.higher_is_better(m)]}", higher=results.higher_is_better(m))
            for m in results.metric_names
        ),
        Column("attribution_tie_share", "tie share"),
        Column("attribution_constant_count", "constant maps"),
        Column("compression_rate_model", "CR (model)", cost=True),
        Column("sparsity", "sparsity (model)", cost=True),
        Column("params_nonzero", "params nonzero", cost=True, unit=" "),
        Column("flops", "FLOPs dense", cost=True, unit="FLOPs"),
        Column("flops_effective", "FLOPs effective", cost=True, unit="FLOPs"),
        Column("latency_ms_p50", "latency p50 (ms)", cost=True),
        Column("throughput", "throughput (img/s)", cost=True),
    ]


def _cell_value(summary: CellSummary, key: str) -> Any:
    if key == "seeds":
        return len(summary.seeds)
    if key in ("model", "pruning_method", "explainer", "compression_rate"):
        return getattr(summary, key)
    return summary.values.get(key)


def cells_view(results: SuiteResults, summaries: list[CellSummary], mlflow_url: str | None = None) -> dict[str, Any]:
    """The cells table; with `mlflow_url` (the MLflow UI's address) each row links to its runs there, one per seed."""
    columns = _columns(results)
    best: dict[str, set[int]] = {}
    for column in columns:
        if column.higher is None:
            continue
        per_model: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for index, summary in enumerate(summaries):
            value = summary.values.get(column.key)
            if is_finite_number(value):
                number = float(value)
                per_model[summary.model].append((number if column.higher else -number, index))
        best[column.key] = {i for entries in per_model.values() for v, i in entries if v == max(entries)[0]}
    rows = []

    def position(index: int) -> tuple[Any, ...]:
        summary = summaries[index]
        return summary.model, summary.compression_rate, summary.pruning_method, summary.explainer

    order = sorted(range(len(summaries)), key=position)
    for index in order:
        summary = summaries[index]
        cells = []
        for column in columns:
            value = _cell_value(summary, column.key)
            interval = summary.intervals.get(column.key)
            cells.append(
                {
                    "text": readable(value, column.unit) if not column.text else str(value),
                    "sort": "" if value is None else value,
                    "interval": f"[{interval[0]:.3g}, {interval[1]:.3g}]" if interval else None,
                    "best": index in best.get(column.key, ()),
                    "column": column,
                }
            )
        runs = []
        if mlflow_url and results.experiment_id:
            runs = [
                {"seed": seed, "href": run_url(mlflow_url, results.experiment_id, run_id)}
                for seed, run_id in zip(summary.seeds, summary.run_ids, strict=True)
            ]
        rows.append({"cells": cells, "runs": runs})
    return {"columns": columns, "rows": rows, "mlflow": bool(mlflow_url and results.experiment_id)}


VERDICT_TEXT = {
    "better": "better",
    "worse": "worse",
    "equivalent": "equivalent (within the margin)",
    "undecided": "undecided",
}


def comparison_anchor(c: Comparison) -> str:
    """A stable id of a comparison's row, so the safe-compression table can link to its evidence."""
    parts = [
        c.model,
        c.pruning_method,
        c.pruning_scope,
        c.pruning_granularity,
        c.pruning_schedule,
        c.explainer or "accuracy",
        c.metric,
        f"{c.compression_rate:g}",
    ]
    return "cmp-" + "-".join("".join(ch if ch.isalnum() else "_" for ch in part) for part in parts)


def _effect_row(c: Comparison, arrow: str) -> dict[str, Any]:
    pruning = f"{c.pruning_method} ({c.pruning_scope}, {c.pruning_granularity}, {c.pruning_schedule})"
    verdict = VERDICT_TEXT[c.verdict]
    if c.verdict == "undecided" and c.seeds_needed:
        verdict += f" (about {c.seeds_needed} seeds would decide it)"
    return {
        "id": comparison_anchor(c),
        "model": c.model,
        "pruning": pruning,
        "explainer": c.explainer or "–",
        "metric": f"{c.metric} {arrow}",
        "rate": f"{c.compression_rate:g}",
        "reference": readable(c.reference_mean),
        "variant": readable(c.variant_mean),
        "diff": readable(c.mean_diff),
        "interval": f"[{c.ci_low:.3g}, {c.ci_high:.3g}]",
        "effect": readable(c.effect_size),
        "p": f"{c.p:.2g}",
        "p_holm": f"{c.p_holm:.2g}",
        "verdict": verdict,
        "margin": f"±{c.margin:.3g}",
        "p_equivalent_holm": f"{c.p_equivalent_holm:.2g}",
        "state": c.verdict,
        "images": c.n_images,
        "excluded": c.n_excluded,
        "seeds": c.n_seeds,
        "significant": c.significant,
        "better": c.better,
        "fewer_seeds": c.fewer_seeds_than_suite,
        "suite_seeds": c.suite_seeds,
    }


def effects_view(results: SuiteResults, stats: SuiteStats) -> dict[str, Any]:
    def arrow(metric: str) -> str:
        return "↑" if metric == ACCURACY or results.higher_is_better(metric) else "↓"

    ordered = sorted(
        stats.comparisons,
        key=lambda c: (c.model, c.pruning_method, c.explainer is None, c.explainer or "", c.metric, c.compression_rate),
    )
    rows = [_effect_row(c, arrow(c.metric)) for c in ordered]
    return {
        "decided": [r for r in rows if r["state"] in ("better", "worse")],
        "all": rows,
        "count": len(rows),
        "verdicts": stats.verdicts,
        "margins": _margins_text(stats.margins),
        "families": "; ".join(stats.families.values())
        + " (differences by weighted Benjamini-Hochberg over the suite: at most 5 % of its better/worse verdicts "
        "expected false; equivalence walked up each CR ladder by closed tests: at most a 5 % chance of any false "
        "equivalent in the suite)"
        if stats.families
        else "none",
        "fewer_seeds": sum(r["fewer_seeds"] for r in rows),
    }


def _margins_text(margins: dict[str, str]) -> str:
    """'accuracy ±0.01 (…); a, b and c ±0.2 × …': the figures that share a margin rule named together."""
    by_rule: dict[str, list[str]] = defaultdict(list)
    for figure, rule in margins.items():
        by_rule[rule].append(figure)
    parts = [f"{', '.join(figures)} {rule}" for rule, figures in by_rule.items()]
    return "; ".join(parts)


def safe_view(stats: SuiteStats) -> dict[str, Any]:
    """The page's headline: per model × pruning × explainer, the largest CR at which accuracy and every metric are
    equivalent to CR 1 or better, each CR's blocking comparisons one click away."""
    rows = []
    trust = {r.metric: r for r in stats.reliability}
    safes = safe_compression(stats)
    for safe in safes:
        steps = []
        for rate in safe.rates:
            if rate in safe.untested:
                steps.append({"rate": f"{rate:g}", "safe": False, "untested": True, "blockers": []})
                continue
            blockers = safe.blocking[rate]
            steps.append(
                {
                    "rate": f"{rate:g}",
                    "safe": not blockers,
                    "untested": False,
                    "blockers": [
                        {"text": "accuracy: no comparison"}
                        if c is None
                        else {
                            "text": (
                                f"{c.metric}: not shown within ±{c.margin:.3g} (Δ {c.mean_diff:.3g}, p no worse "
                                f"{c.p_noninferior:.2g} against the level {safe.level:.2g}; {VERDICT_TEXT[c.verdict]})"
                            ),
                            "href": "#" + comparison_anchor(c),
                        }
                        for c in blockers
                    ],
                }
            )
        if safe.failed_rate is None:
            answer = f"safe up to CR {safe.safe_rate:g}, the largest tested"
        else:
            names = ", ".join("accuracy" if c is None else c.metric for c in safe.blocking[safe.failed_rate])
            how = "shown worse than its margin" if safe.shown_unsafe else "not shown within its margin"
            answer = f"CR {safe.failed_rate:g} blocked by {names} ({how})"
        rows.append(
            {
                "model": safe.model,
                "explainer": safe.explainer,
                "pruning": f"{safe.pruning_method} ({safe.pruning_scope}, {safe.pruning_granularity}, "
                f"{safe.pruning_schedule})",
                "safe_rate": f"{safe.safe_rate:g}" if safe.found else "none",
                "found": safe.found,
                "answer": answer,
                "steps": steps,
                "rests_on": ", ".join(_trusted(trust.get(metric), metric) for metric in safe.metrics),
            }
        )
    level = min((safe.level for safe in safes), default=0.05)
    return {"rows": rows, "found": sum(r["found"] for r in rows), "level": f"{level:.2g}"}


def _trusted(reliability: Reliability | None, metric: str) -> str:
    """A metric's name with what says how far to trust it: its meta-consistency, else its seed stability."""
    if reliability is not None and is_finite_number(reliability.meta_consistency):
        return f"{metric} (MC {reliability.meta_consistency:.2f})"
    if reliability is not None and is_finite_number(reliability.seed_tau):
        return f"{metric} (seed τ {reliability.seed_tau:.2f})"
    return metric


def sweet_view(results: SuiteResults, stats: SuiteStats, max_accuracy_drop: float) -> dict[str, Any]:
    spots = sweet_spots(stats, max_accuracy_drop)
    rows = []
    for spot in spots:
        arrow = "↑" if results.higher_is_better(spot.metric) else "↓"
        rows.append(
            {
                "model": spot.model,
                "pruning": spot.pruning_method,
                "explainer": spot.explainer,
                "metric": f"{spot.metric} {arrow}",
                "found": spot.found,
                "note": spot.note,
                "rate": f"{spot.best.compression_rate:g}" if spot.best else "",
                "diff": f"{spot.best.mean_diff:.3g} [{spot.best.ci_low:.3g}, {spot.best.ci_high:.3g}]"
                if spot.best
                else "",
                "p_holm": f"{spot.best.p_holm:.2g}" if spot.best else "",
            }
        )
    return {"rows": rows, "found": sum(s.found for s in spots), "count": len(spots), "drop": max_accuracy_drop}


# ------------------------------------------------------------------------------------------------------- charts

WIDTH, HEIGHT, PAD_L, PAD_B, PAD_T, PAD_R = 300, 200, 46, 30, 34, 22


def _ticks(low: float, high: float) -> list[float]:
    return [low] if low == high else [low + (high - low) * i / 3 for i in range(4)]


def _frame(x_low: float, x_high: float, y_low: float, y_high: float, log_x: bool) -> tuple[Any, Any]:
    def sx(value: float) -> float:
        value = math.log2(value) if log_x else value
        return PAD_L + (value - x_low) / ((x_high - x_low) or 1.0) * (WIDTH - PAD_L - PAD_R)

    def sy(value: float) -> float:
        return HEIGHT - PAD_B - (value - y_low) / ((y_high - y_low) or 1.0) * (HEIGHT - PAD_B - PAD_T)

    return sx, sy


def line_chart(
    title: str, subtitle: str, series: dict[str, list[tuple[float, float, float, float, str]]], colors: dict[str, str]
) -> dict[str, Any]:
    """One panel: x = CR on a log2 axis; per series a line through the means and a band from the 95 % intervals;
    each point's title names its cell (hover)."""
    points = [p for values in series.values() for p in values if is_finite_number(p[1])]
    chart: dict[str, Any] = {"title": title, "subtitle": subtitle, "series": [], "x_ticks": [], "y_ticks": []}
    if not points:
        chart["message"] = "no finite values"
        return chart
    rates = sorted({p[0] for p in points})
    bounds = [v for p in points for v in (p[1], p[2], p[3]) if is_finite_number(v)]
    y_low, y_high = min(bounds), max(bounds)
    if y_low == y_high:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    sx, sy = _frame(math.log2(min(rates)), math.log2(max(rates)), y_low, y_high, log_x=True)
    chart["x_ticks"] = [{"x": sx(r), "label": f"{r:g}"} for r in rates]
    chart["y_ticks"] = [{"y": sy(t), "label": f"{t:.3g}"} for t in _ticks(y_low, y_high)]
    chart["x_label"] = "compression rate (log scale)"
    for name, values in series.items():
        finite = sorted((p for p in values if is_finite_number(p[1])), key=lambda p: p[0])
        banded = [p for p in finite if is_finite_number(p[2]) and is_finite_number(p[3])]
        band = ""
        if len(banded) > 1:
            upper = [f"{sx(r):.1f},{sy(high):.1f}" for r, _, _, high, _ in banded]
            lower = [f"{sx(r):.1f},{sy(low):.1f}" for r, _, low, _, _ in reversed(banded)]
            band = " ".join(upper + lower)
        chart["series"].append(
            {
                "color": colors.get(name, "#333"),
                "band": band,
                "line": " ".join(f"{sx(r):.1f},{sy(v):.1f}" for r, v, *_ in finite) if len(finite) > 1 else "",
                "dots": [
                    {
                        "x": sx(r),
                        "y": sy(v),
                        "title": f"{label}: {v:.4g}" + (f" [{low:.3g}, {high:.3g}]" if is_finite_number(low) else ""),
                    }
                    for r, v, low, high, label in finite
                ],
            }
        )
    return chart


def scatter_chart(
    title: str, subtitle: str, x_label: str, y_label: str, points: list[tuple[float, float, str, bool]]
) -> dict[str, Any]:
    """Accuracy (y) against a metric (x); Pareto-optimal points in red and joined, the rest grey."""
    finite = [p for p in points if is_finite_number(p[0]) and is_finite_number(p[1])]
    chart: dict[str, Any] = {
        "title": title,
        "subtitle": subtitle,
        "series": [],
        "x_ticks": [],
        "y_ticks": [],
        "x_label": x_label,
    }
    if not finite:
        chart["message"] = "no finite values"
        return chart
    x_low, x_high = min(p[0] for p in finite), max(p[0] for p in finite)
    y_low, y_high = min(p[1] for p in finite), max(p[1] for p in finite)
    sx, sy = _frame(x_low, x_high, y_low, y_high, log_x=False)
    chart["x_ticks"] = [{"x": sx(t), "label": f"{t:.3g}"} for t in _ticks(x_low, x_high)]
    chart["y_ticks"] = [{"y": sy(t), "label": f"{t:.3g}"} for t in _ticks(y_low, y_high)]
    front = sorted((p for p in finite if p[3]), key=lambda p: p[0])
    chart["front"] = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _, _ in front) if len(front) > 1 else ""
    chart["dots"] = [
        {
            "x": sx(x),
            "y": sy(y),
            "r": 4 if optimal else 3,
            "color": "#d62728" if optimal else "#aaa",
            "title": f"{label}: {x_label} {x:.4g}, {y_label} {y:.4g}" + (" (Pareto-optimal)" if optimal else ""),
        }
        for x, y, label, optimal in finite
    ]
    return chart


def _curves(summaries: list[CellSummary]) -> dict[tuple[str, str, str], dict[float, CellSummary]]:
    """(model, pruning method, explainer) -> CR -> cell; the unpruned cell (CR 1) starts every method's curve."""
    methods = sorted({s.pruning_method for s in summaries if s.pruning_method != "none"})
    curves: dict[tuple[str, str, str], dict[float, CellSummary]] = defaultdict(dict)
    for summary in summaries:
        targets = methods if summary.pruning_method == "none" else [summary.pruning_method]
        for method in targets or ["none"]:
            curves[(summary.model, method, summary.explainer)][summary.compression_rate] = summary
    return dict(curves)


def curves_view(results: SuiteResults, summaries: list[CellSummary]) -> dict[str, Any]:
    curves = _curves(summaries)
    explainer_names = sorted({key[2] for key in curves})
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(explainer_names)}
    panels = sorted({(key[0], key[1]) for key in curves})
    charts = []
    for metric in [ACCURACY, *results.metric_names]:
        arrow = "↑" if metric == ACCURACY or results.higher_is_better(metric) else "↓"
        for model, pruning in panels:
            series = {}
            for (m, p, explainer), cells in curves.items():
                if (m, p) != (model, pruning):
                    continue
                series[explainer] = [
                    (rate, s.values.get(metric, math.nan), *s.intervals.get(metric, (math.nan, math.nan)), s.label)
                    for rate, s in cells.items()
                ]
            if metric == ACCURACY:  # accuracy does not depend on the explainer: one line
                series = {ACCURACY: next(iter(series.values()))}
            charts.append(line_chart(f"{metric} {arrow}", f"{model} · {pruning}", series, {**colors, ACCURACY: "#222"}))
    return {"charts": charts, "legend": [{"name": n, "color": colors[n]} for n in explainer_names]}


def _rate_basis(method: str, cells: Iterable[CellSummary], records: Iterable[dict[str, Any]] = ()) -> str:
    """What a method's requested CR counts: as its cells recorded it (`compression_rate_counts`, from the method's
    kind: structured methods count the whole model, the others the pruned scope); for results from before that was
    recorded, the figure (`compression_rate_scope` or `compression_rate_model`) that its requested rates match best.
    No pruner is loaded here (that would import torch into the pages)."""
    recorded = {r.get("compression_rate_counts") for r in records if r.get("pruning_method") == method} - {None}
    if len(recorded) == 1:
        return str(recorded.pop())
    misses: dict[str, list[float]] = {"the pruned scope": [], "the whole model": []}
    for cell in cells:
        for basis, figure in (
            ("the pruned scope", "compression_rate_scope"),
            ("the whole model", "compression_rate_model"),
        ):
            achieved = cell.values.get(figure)
            if is_finite_number(achieved) and achieved > 0 and cell.compression_rate > 1:
                misses[basis].append(abs(math.log(achieved / cell.compression_rate)))
    scored = {basis: float(np.mean(values)) for basis, values in misses.items() if values}
    return min(scored, key=lambda basis: scored[basis]) if scored else "the pruned scope"


def methods_view(results: SuiteResults, summaries: list[CellSummary]) -> dict[str, Any]:
    """Pruning methods side by side, one line each through the same compression rates, per model, explainer and
    metric; only methods whose CR counts the same thing share a panel (unstructured: the pruned scope; structured:
    the whole model). Empty for suites with one method."""
    curves = _curves(summaries)
    methods = sorted({key[1] for key in curves if key[1] != "none"})
    groups: dict[str, list[str]] = defaultdict(list)
    for method in methods:
        pruned = [s for s in summaries if s.pruning_method == method]
        groups[_rate_basis(method, pruned, results.records)].append(method)
    groups = {basis: names for basis, names in groups.items() if len(names) > 1}
    if not groups:
        return {"charts": [], "legend": []}
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(methods)}
    charts = []
    for basis, names in sorted(groups.items()):
        panels = sorted({(key[0], key[2]) for key in curves if key[1] in names})
        for metric in [ACCURACY, *results.metric_names]:
            arrow = "↑" if metric == ACCURACY or results.higher_is_better(metric) else "↓"
            seen_models = set()
            for model, explainer in panels:
                if metric == ACCURACY and model in seen_models:  # accuracy does not depend on the explainer
                    continue
                seen_models.add(model)
                series = {
                    method: [
                        (rate, s.values.get(metric, math.nan), *s.intervals.get(metric, (math.nan, math.nan)), s.label)
                        for rate, s in sorted(curves.get((model, method, explainer), {}).items())
                    ]
                    for method in names
                }
                where = model if metric == ACCURACY else f"{model} · {explainer}"
                short = "CR of the model" if basis == "the whole model" else "CR of the scope"
                charts.append(line_chart(f"{metric} {arrow}", f"{where} · {short}", series, colors))
    legend = [{"name": n, "color": colors[n]} for n in methods if any(n in names for names in groups.values())]
    return {"charts": charts, "legend": legend}


def pareto_view(results: SuiteResults, summaries: list[CellSummary]) -> list[dict[str, Any]]:
    charts = []
    for metric in results.metric_names:
        sign = 1.0 if results.higher_is_better(metric) else -1.0
        cells = [
            s for s in summaries if is_finite_number(s.values.get(metric)) and is_finite_number(s.values.get(ACCURACY))
        ]
        front = pareto_front([(sign * s.values[metric], s.values[ACCURACY]) for s in cells])
        points = [
            (s.values[metric], s.values[ACCURACY], s.label, optimal) for s, optimal in zip(cells, front, strict=True)
        ]
        arrow = "↑" if results.higher_is_better(metric) else "↓"
        charts.append(
            scatter_chart(
                f"accuracy ↑ vs {metric} {arrow}",
                f"{sum(front)} Pareto-optimal of {len(cells)} cells",
                metric,
                "accuracy",
                points,
            )
        )
    return charts


def agreement_view(results: SuiteResults, summaries: list[CellSummary], stats: SuiteStats) -> dict[str, Any]:
    names = results.metric_names
    oriented = {
        m: [
            s.values.get(m) if results.higher_is_better(m) or not is_finite_number(s.values.get(m)) else -s.values[m]
            for s in summaries
        ]
        for m in names
    }
    rows, disagreements = [], []
    for a in names:
        cells = []
        for b in names:
            tau, count = kendall_tau(oriented[a], oriented[b])
            if not is_finite_number(tau):
                cells.append({"text": "–", "style": "", "title": ""})
                continue
            red, blue = (255, 40) if tau < 0 else (40, 255)
            cells.append(
                {
                    "text": f"{tau:.2f}",
                    "style": f"background:rgba({red},80,{blue},{abs(tau) * 0.45:.2f})",
                    "title": f"{a} vs {b}: tau {tau:.3f} over {count} cells",
                }
            )
            if a < b:
                disagreements.append((tau, a, b))
        rows.append({"name": a, "cells": cells})
    disagreements.sort()
    reliability = [
        {
            "metric": r.metric,
            "tau": readable(r.seed_tau),
            "pairs": r.seed_pairs,
            "comparisons": r.comparisons,
            "significant": r.significant,
            "share": f"{r.significant_share:.0%}" if r.comparisons else "–",
            "resilience": readable(r.noise_resilience),
            "reactivity": readable(r.adversary_reactivity),
            "mc": readable(r.meta_consistency),
            "people": readable(r.human_agreement),
        }
        for r in stats.reliability
    ]
    per_explainer = [
        {
            "metric": t.metric,
            "explainer": t.explainer,
            "iac_nr": readable(t.iac_nr),
            "iec_nr": readable(t.iec_nr),
            "iac_ar": readable(t.iac_ar),
            "iec_ar": readable(t.iec_ar),
            "resilience": readable(t.noise_resilience),
            "reactivity": readable(t.adversary_reactivity),
            "mc": readable(t.meta_consistency),
            "minor_accuracy": readable(t.minor_accuracy_change),
            "tests": t.tests,
        }
        for t in stats.trust
        if t.explainer is not None
    ]
    return {
        "names": names,
        "rows": rows,
        "worst": [{"a": a, "b": b, "tau": f"{tau:.2f}"} for tau, a, b in disagreements[:5]],
        "reliability": reliability,
        "trust": per_explainer,
        "trust_reading": TRUST_READING if per_explainer else "",
    }


def gallery_view(results: SuiteResults, summaries: list[CellSummary]) -> list[dict[str, Any]]:
    """The first seed's gallery images per model × pruning, one row per CR and one column per explainer."""
    if not any(results.gallery.values()):
        return []
    curves = _curves(summaries)
    blocks = []
    for model, pruning in sorted({(k[0], k[1]) for k in curves}):
        explainer_names = sorted({k[2] for k in curves if (k[0], k[1]) == (model, pruning)})
        rates = sorted({rate for k, c in curves.items() if (k[0], k[1]) == (model, pruning) for rate in c})
        for kind, description in GALLERY_KINDS.items():
            rows = []
            for rate in rates:
                cells = []
                for explainer in explainer_names:
                    summary = curves[(model, pruning, explainer)].get(rate)
                    image = results.gallery.get(summary.run_ids[0], {}).get(kind) if summary else None
                    cells.append(
                        None
                        if image is None
                        else {
                            "src": "data:image/png;base64," + base64.b64encode(image).decode(),
                            "alt": f"{summary.label} | seed {summary.seeds[0]}",  # type: ignore[union-attr]
                        }
                    )
                rows.append({"rate": f"{rate:g}", "cells": cells})
            blocks.append(
                {"title": f"{model} · {pruning} · {description}", "explainers": explainer_names, "rows": rows}
            )
    return blocks


def replication_view(results: SuiteResults, summaries: list[CellSummary]) -> dict[str, Any] | None:
    """The suite beside its published reference: per CR the reference, our mean and 95 % interval, the difference."""
    if results.reference is None:
        return None
    rows = replication_rows(results.reference, summaries)
    for row in rows:
        row["text"] = {key: readable(row[key]) for key in ("reference", "ours", "low", "high")}
        row["text"]["difference"] = f"{row['difference']:+.2f}"
    return {"reference": results.reference, "rows": rows, "inside": sum(r["inside"] for r in rows)}


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def human_view(results: SuiteResults) -> list[dict[str, Any]]:
    """Each human study of the suite (newest first): its answers' statistics, and the metrics ranked by how often
    they prefer what most people preferred."""
    studies = []
    for report in results.human:
        rows = []
        if report["design"] == "pairwise":
            for pair in report["pairs"]:
                holm_p = pair.get("p_holm")  # crossed workers and images; older reports had only the seed paper's
                significant = holm_p is not None and holm_p < 0.05
                rows.append(
                    {
                        "label": f"{pair['a']} vs {pair['b']}",
                        "a": pair["a_count"],
                        "b": pair["b_count"],
                        "equal": pair["equal_count"],
                        "equal_rate": readable(pair["equal_rate"]),
                        "chi2_p": _p(pair["chi2_p"]),
                        "binom_p": _p(pair["binom_p"]),
                        "p": _p(pair.get("p")),
                        "holm_p": _p(holm_p),
                        "verdict": (
                            f"people prefer {pair['a'] if pair['a_count'] > pair['b_count'] else pair['b']}"
                            if significant
                            else "no detectable preference"
                        ),
                    }
                )
        else:
            rows = [
                {
                    "label": v["variant"],
                    "answers": v["answers"],
                    "accuracy": readable(v["accuracy"]),
                    "dont_know": v.get("dont_know", 0),
                    "known_accuracy": readable(v.get("known_accuracy")),
                }
                for v in report["variants"]
            ]
        contrasts = [
            {
                "label": f"{c['b']} - {c['a']}",
                "difference": readable(c["difference"]),
                "p": _p(c["p"]),
                "holm_p": _p(c["p_holm"]),
                "interval": f"[{readable(c['ci_low'])}, {readable(c['ci_high'])}]",
            }
            for c in report.get("contrasts", [])
        ]
        agreement = [
            {
                **row,
                "text": {
                    "agreement": readable(row["agreement"]),
                    "low": readable(row["ci_low"]),
                    "high": readable(row["ci_high"]),
                    "tau": "n/a" if row["kendall_tau"] is None else f"{row['kendall_tau']:+.2f}",
                },
            }
            for row in report.get("agreement", [])
        ]
        studies.append(
            {
                "design": report["design"],
                "workers": report["workers"],
                "answers": report["answers"],
                "alpha": "undefined" if report["alpha"] is None else f"{report['alpha']:.3f}",
                "alpha_note": report.get("alpha_note", ""),
                "excluded": len(report.get("excluded_workers", [])),
                "chi2_p": _p(report.get("chi2_p")),
                "rows": rows,
                "agreement": agreement,
                "run_id": report.get("run_id"),
                "contrasts": contrasts,
                "p_note": report.get("p_note", ""),
            }
        )
    return studies


def provenance_view(results: SuiteResults) -> list[tuple[str, str]]:
    keys = dict.fromkeys(k for r in results.records for k in (r.get("provenance") or {}))
    rows = [
        (key, ", ".join(sorted({str((r.get("provenance") or {}).get(key, "")) for r in results.records})))
        for key in keys
    ]
    return [*rows, ("date", _date(results.records))]


def _date(records: Iterable[dict[str, Any]]) -> str:
    newest = max((r.get("start_time") or 0 for r in records), default=0)
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest / 1000)) if newest else ""


# ------------------------------------------------------------------------------------------------------ render


def suite_filename(suite: str) -> str:
    return "suite-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in suite) + ".html"


def _suite_stats(results: SuiteResults, max_accuracy_drop: float | None) -> tuple[SuiteStats, float]:
    """The suite's statistics and its accuracy margin: `max_accuracy_drop` when given (the command line), else the
    suite's `equivalence.accuracy`, else `DEFAULT_MAX_ACCURACY_DROP`."""
    margins = dict(results.equivalence)
    if max_accuracy_drop is not None:
        margins[ACCURACY] = max_accuracy_drop
    margin = margins.setdefault(ACCURACY, DEFAULT_MAX_ACCURACY_DROP)
    stats = suite_stats(results.records, results.per_image, margins, results.meta, results.human, results.sequential)
    return stats, margin


def suite_page(
    results: SuiteResults,
    max_accuracy_drop: float | None = None,
    mlflow_url: str | None = None,
    computed: tuple[SuiteStats, float] | None = None,
) -> str:
    """A suite's page (the accuracy margin as `_suite_stats` says). With `mlflow_url`, links into that MLflow UI;
    `computed` is the suite's `_suite_stats` when the caller has it already."""
    stats, max_accuracy_drop = computed or _suite_stats(results, max_accuracy_drop)
    summaries = summarise_cells(results.records, results.per_image, results.metric_names)
    return str(
        environment("xbench.present")
        .get_template("suite.html.j2")
        .render(
            name=results.name,
            runs=len(results.records),
            cells=len(summaries),
            seeds=stats.seeds,
            single_seed=stats.single_seed,
            devices=", ".join(sorted({str(r.get("device")) for r in results.records})),
            date=_date(results.records),
            built=time.strftime("%Y-%m-%d %H:%M"),
            version=__version__,
            method=METHOD,
            table=cells_view(results, summaries, mlflow_url),
            mlflow_runs=runs_url(mlflow_url, results.experiment_id) if mlflow_url and results.experiment_id else None,
            effects=effects_view(results, stats),
            safe=safe_view(stats),
            sweet=sweet_view(results, stats, max_accuracy_drop),
            curves=curves_view(results, summaries),
            methods=methods_view(results, summaries),
            pareto=pareto_view(results, summaries),
            agreement=agreement_view(results, summaries, stats),
            gallery=gallery_view(results, summaries),
            provenance=provenance_view(results),
            replication=replication_view(results, summaries),
            human=human_view(results),
            chart_frame={
                "width": WIDTH,
                "height": HEIGHT,
                "left": PAD_L,
                "bottom": PAD_B,
                "top": PAD_T,
                "right": PAD_R,
            },
        )
    )


def protocol_differences(suites: list[SuiteResults], shown: int = 6) -> list[dict[str, Any]]:
    """Each protocol on the page after the first, with the fields in which its cells' specifications differ from the
    first protocol's (`Store.protocol_fields`): at most `shown` fields, then how many more."""
    first: dict[str, tuple[str, ...]] | None = None
    first_key = ""
    seen: set[str] = set()
    notes = []
    for results in suites:
        if results.protocol in seen:
            continue
        seen.add(results.protocol)
        if first is None:
            first, first_key = results.protocol_fields, results.protocol
            continue
        names = sorted(set(first) | set(results.protocol_fields))
        differ = [n for n in names if first.get(n) != results.protocol_fields.get(n)]

        def values(found: tuple[str, ...] | None) -> str:
            return "absent" if not found else " or ".join(found) if len(found) <= 3 else f"{len(found)} values"

        notes.append(
            {
                "key": results.protocol,
                "against": first_key,
                "suites": sorted({r.name for r in suites if r.protocol == results.protocol}),
                "fields": [
                    {"name": n, "theirs": values(results.protocol_fields.get(n)), "first": values(first.get(n))}
                    for n in differ[:shown]
                ],
                "more": max(len(differ) - shown, 0),
            }
        )
    return notes


def index_page(suites: list[SuiteResults], rankings: list[dict[str, Any]] | None = None) -> str:
    """The front page: the answer sentence and explainer ranking of every suite (`rankings.ranking_view`), then the
    suites themselves."""
    protocols: dict[str, set[str]] = defaultdict(set)
    for results in suites:
        protocols[results.name].add(results.protocol)
    differing = {name: sorted(keys) for name, keys in protocols.items() if len(keys) > 1}
    protocol_notes = protocol_differences(suites)
    rows = [
        {
            "name": results.name,
            "href": results.page,
            "source": results.source,
            "protocol": results.protocol,
            "versions": ", ".join(sorted({str((r.get("provenance") or {}).get("xbench", "")) for r in results.records}))
            or "?",
            "date": _date(results.records),
            "devices": ", ".join(sorted({str(r.get("device")) for r in results.records})),
            "models": len({r["model"] for r in results.records}),
            "seeds": len({r.get("seed", 0) for r in results.records}),
            "runs": len(results.records),
        }
        for results in suites
    ]
    return str(
        environment("xbench.present")
        .get_template("index.html.j2")
        .render(
            rows=rows,
            differing=differing,
            protocol_notes=protocol_notes,
            rankings=rankings or [],
            ranking_method=RANKING_METHOD,
            built=time.strftime("%Y-%m-%d %H:%M"),
            version=__version__,
        )
    )


def build(
    suites: list[SuiteResults], out: Path, max_accuracy_drop: float | None = None, mlflow_url: str | None = None
) -> Path:
    """Write index.html, one page per suite and each suite's records as JSON; returns the index path."""
    out.mkdir(parents=True, exist_ok=True)
    rankings = []
    names = [results.name for results in suites]
    for position, results in enumerate(suites):
        if names.count(results.name) > 1 and not results.page_name:  # one suite from several sources: a page each
            results.page_name = f"{results.name}-{names[:position].count(results.name) + 1}"
        page = results.page
        computed = _suite_stats(results, max_accuracy_drop)
        (out / page).write_text(suite_page(results, max_accuracy_drop, mlflow_url, computed))
        (out / page.replace(".html", ".json")).write_text(json.dumps(results.records, indent=1, default=str))
        rankings.append(
            ranking_view(results.name, page, computed[0], results.protocol, results.source, results.records)
        )
    index = out / "index.html"
    index.write_text(index_page(suites, rankings))
    return index
