"""Static leaderboard: a self-contained site (no CDN, no server, opens from file://) built from the MLflow store.

`load_suite` reads a suite's cell records, per-image scores (scores.csv) and gallery images from the store;
everything after that is pure: records in, HTML and inline SVG out. No torch import.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xbench import __version__

DEFAULT_MAX_ACCURACY_DROP = 0.01  # "one point" of accuracy
BOOTSTRAP_RESAMPLES = 1000
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363", "#9c9ede"]  # fmt: skip
GALLERY_KINDS = {"gallery_overlay.png": "jet heatmap overlay", "gallery_occlusion.png": "top-10 % pixels shown"}


@dataclass
class SuiteResults:
    """What a suite page shows: one record per cell, and per cell (run_id) its per-image scores and gallery PNGs."""

    name: str
    records: list[dict[str, Any]]
    per_image: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    gallery: dict[str, dict[str, bytes]] = field(default_factory=dict)

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for record in self.records:
            names += [n for n in record.get("metric_directions", {}) if n not in names]
        return names

    def higher_is_better(self, metric: str) -> bool:
        for record in self.records:
            if metric in record.get("metric_directions", {}):
                return record["metric_directions"][metric] == "higher"
        return True


def load_suite(store: Any, suite: str) -> SuiteResults:
    """Records, per-image scores and gallery images of `suite` from a `tracking.Store`."""
    records = store.load_results(suite)
    results = SuiteResults(suite, records)
    from xbench.progress import track

    with tempfile.TemporaryDirectory(prefix="xbench-leaderboard-") as workdir:
        for index, record in enumerate(track(records, f"reading {suite} from the store")):
            run_id = record["run_id"]
            destination = Path(workdir) / str(index)
            destination.mkdir()
            scores = store.artifact(run_id, "scores.csv", destination)
            if scores is not None:
                results.per_image[run_id] = read_scores(scores)
            images = {}
            for name in GALLERY_KINDS:
                path = store.artifact(run_id, name, destination)
                if path is not None:
                    images[name] = path.read_bytes()
            results.gallery[run_id] = images
    return results


def read_scores(path: Path) -> dict[str, np.ndarray]:
    """scores.csv (image, label, one column per metric) as metric -> per-image scores."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in (rows[0].keys() if rows else []) if c not in ("image", "label")]
    return {c: np.array([float(row[c]) if row[c] not in ("", "nan") else np.nan for row in rows]) for c in columns}


# ---------------------------------------------------------------------------------------------------- statistics


def bootstrap_ci(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean over images (NaN-free values; NaNs if fewer than 2)."""
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def kendall_tau(a: list[float | None], b: list[float | None]) -> tuple[float, int]:
    """Kendall's tau-b between two score lists over the cells where both are finite, and that count."""
    from scipy.stats import kendalltau

    pairs = [(x, y) for x, y in zip(a, b, strict=True) if _finite(x) and _finite(y)]
    if len(pairs) < 3:
        return math.nan, len(pairs)
    tau = kendalltau([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    return float(tau), len(pairs)


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Which points no other point dominates, both coordinates higher-is-better."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((ox >= x and oy >= y) and (ox > x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
        front.append(not dominated)
    return front


@dataclass(frozen=True)
class SweetSpot:
    model: str
    pruning: str
    explainer: str
    metric: str
    dense_score: float
    best_rate: float
    best_score: float
    eligible_rates: tuple[float, ...]

    @property
    def beats_dense(self) -> bool:
        return self.best_rate != 1.0


def sweet_spots(results: SuiteResults, max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> list[SweetSpot]:
    """Per model x pruning method x explainer x metric: among the CRs whose accuracy is within `max_accuracy_drop` of
    the unpruned model's, the one with the best score; CR 1 wins ties, so "beats CR 1" means strictly better."""
    spots = []
    for (model, pruning, explainer), curve in _curves(results.records).items():
        dense = curve.get(1.0)
        if dense is None or not _finite(dense.get("accuracy")):
            continue
        eligible = {
            rate: record for rate, record in curve.items()
            if _finite(record.get("accuracy")) and record["accuracy"] >= dense["accuracy"] - max_accuracy_drop
        }  # fmt: skip
        for metric in results.metric_names:
            sign = 1.0 if results.higher_is_better(metric) else -1.0
            scored = {rate: r[metric] for rate, r in eligible.items() if _finite(r.get(metric))}
            if 1.0 not in scored:
                continue
            best = max(sorted(scored), key=lambda rate: (sign * scored[rate], rate == 1.0))
            spots.append(SweetSpot(model, pruning, explainer, metric, scored[1.0], best, scored[best],
                                   tuple(sorted(eligible))))  # fmt: skip
    return spots


def _curves(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[float, dict[str, Any]]]:
    """(model, pruning method, explainer) -> CR -> record; the unpruned cell (CR 1) starts every method's curve."""
    methods = sorted({r["pruning_method"] for r in records if r["pruning_method"] not in (None, "none")})
    curves: dict[tuple[str, str, str], dict[float, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        targets = methods if record["pruning_method"] in (None, "none") else [record["pruning_method"]]
        for method in targets or ["none"]:
            curves[(record["model"], method, record["explainer"])][float(record["compression_rate"])] = record
    return dict(curves)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# ------------------------------------------------------------------------------------------------------------ HTML

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1800px}
h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f0f0f0}
table.cells th{cursor:pointer;user-select:none;position:sticky;top:0}
td.text{text-align:left}
td.best{background:#d9f2d9;font-weight:bold}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
input{margin:0 0 1em 0;padding:4px;width:24em}
.meta,.ci{color:#666;font-size:11px}
.ci{display:block;white-space:nowrap}
.charts{display:flex;flex-wrap:wrap;gap:8px}
.chart{border:1px solid #eee}
.legend span{display:inline-block;margin-right:1em;font-size:12px}
.legend i{display:inline-block;width:14px;height:3px;margin-right:4px;vertical-align:middle}
.gallery img{image-rendering:pixelated;height:72px;display:block}
.gallery td{text-align:center}
nav a{margin-right:1em}
"""

# Sorting: numbers numerically (blank last), text alphabetically; the filter matches any cell text.
_SCRIPT = """
document.querySelectorAll('table.cells').forEach(function(table){
  var headers=table.querySelectorAll('th');
  headers.forEach(function(th,col){th.addEventListener('click',function(){
    var asc=!th.classList.contains('sorted-asc');
    headers.forEach(function(h){h.classList.remove('sorted-asc','sorted-desc')});
    th.classList.add(asc?'sorted-asc':'sorted-desc');
    var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[col].dataset.value, y=b.cells[col].dataset.value;
      var nx=parseFloat(x), ny=parseFloat(y);
      if(!isNaN(nx)||!isNaN(ny)){ if(isNaN(nx)) return 1; if(isNaN(ny)) return -1; return asc?nx-ny:ny-nx; }
      return asc?String(x).localeCompare(y):String(y).localeCompare(x);
    });
    rows.forEach(function(r){body.appendChild(r)});
  })});
});
document.querySelectorAll('input.filter').forEach(function(input){
  input.addEventListener('input',function(){
    var needle=input.value.toLowerCase();
    document.querySelectorAll('table.cells tbody tr').forEach(function(row){
      row.style.display=row.textContent.toLowerCase().indexOf(needle)>=0?'':'none';
    });
  });
});
"""

_FIXED_COLUMNS = [
    ("model", "model", "text"),
    ("pruning_method", "pruning", "text"),
    ("compression_rate", "CR (scope)", "num"),
    ("compression_rate_model", "CR (model)", "num"),
    ("explainer", "explainer", "text"),
    ("accuracy", "accuracy ↑", "num"),
]
_COST_COLUMNS = [
    ("sparsity", "sparsity (model)", "num"),
    ("params_nonzero", "params nonzero", "num"),
    ("flops", "FLOPs dense", "num"),
    ("flops_effective", "FLOPs effective", "num"),
    ("latency_ms_p50", "latency p50 ms", "num"),
    ("throughput", "throughput img/s", "num"),
]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return "NaN"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}"
        f"<script>{_SCRIPT}</script></body></html>"
    )


def suite_filename(suite: str) -> str:
    return "suite-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in suite) + ".html"


def _arrow(results: SuiteResults, metric: str) -> str:
    return "↑" if results.higher_is_better(metric) else "↓"


def _best_per_model(results: SuiteResults, key: str, higher: bool) -> set[str]:
    """run_ids holding the best value of `key` within each model."""
    best: dict[str, tuple[float, list[str]]] = {}
    for record in results.records:
        value = record.get(key)
        if not _finite(value):
            continue
        signed = value if higher else -value
        current = best.get(record["model"])
        if current is None or signed > current[0]:
            best[record["model"]] = (signed, [record["run_id"]])
        elif signed == current[0]:
            current[1].append(record["run_id"])
    return {run_id for _, run_ids in best.values() for run_id in run_ids}


def cells_table(results: SuiteResults) -> str:
    metric_columns = [(m, f"{m} {_arrow(results, m)}", "num") for m in results.metric_names]
    columns = _FIXED_COLUMNS + metric_columns + _COST_COLUMNS
    highlighted = {"accuracy": _best_per_model(results, "accuracy", True)}
    for metric in results.metric_names:
        highlighted[metric] = _best_per_model(results, metric, results.higher_is_better(metric))
    head = "".join(f"<th>{_e(label)}</th>" for _, label, _ in columns)
    rows = []
    ordered = sorted(results.records, key=lambda r: (r["model"], r["compression_rate"], str(r["pruning_method"]),
                                                     r["explainer"]))  # fmt: skip
    for record in ordered:
        cells = []
        for key, _, kind in columns:
            value = record.get(key)
            classes = [c for c in ("text" if kind == "text" else "", "best" if record["run_id"] in
                       highlighted.get(key, ()) else "") if c]  # fmt: skip
            shown = _e(_format(value))
            scores = results.per_image.get(record["run_id"], {}).get(key)
            if scores is not None and key in results.metric_names:
                low, high = bootstrap_ci(scores)
                if _finite(low):
                    shown += f"<span class='ci'>[{low:.3g}, {high:.3g}]</span>"
            css = f" class='{' '.join(classes)}'" if classes else ""
            cells.append(f"<td{css} data-value='{_e(value if value is not None else '')}'>{shown}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "<input class='filter' placeholder='filter rows (model, explainer, …)'>"
        f"<table class='cells'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# ------------------------------------------------------------------------------------------------------------ SVG

_W, _H, _PAD_L, _PAD_B, _PAD_T, _PAD_R = 300, 200, 46, 30, 34, 22


def _ticks(low: float, high: float) -> list[float]:
    if low == high:
        return [low]
    return [low + (high - low) * i / 3 for i in range(4)]


def _titles(title: str, subtitle: str) -> str:
    return (f"<text x='{_PAD_L}' y='13' font-size='11' font-weight='bold'>{_e(title)}</text>"
            f"<text x='{_PAD_L}' y='25' font-size='10' fill='#666'>{_e(subtitle)}</text>")  # fmt: skip


def line_chart(
    title: str, subtitle: str, series: dict[str, list[tuple[float, float, str]]], colors: dict[str, str]
) -> str:
    """One panel: x = CR on a log2 axis, one line per series; each point's <title> names its cell (hover)."""
    points = [p for values in series.values() for p in values if _finite(p[1])]
    if not points:
        return (f"<svg class='chart' width='{_W}' height='{_H}' role='img'>{_titles(title, subtitle)}"
                f"<text x='{_PAD_L}' y='60' font-size='11'>no finite values</text></svg>")  # fmt: skip
    rates = sorted({p[0] for p in points})
    x_low, x_high = math.log2(min(rates)), math.log2(max(rates))
    y_low, y_high = min(p[1] for p in points), max(p[1] for p in points)
    if y_low == y_high:
        y_low, y_high = y_low - 0.5, y_high + 0.5

    def sx(rate: float) -> float:
        span = x_high - x_low or 1.0
        return _PAD_L + (math.log2(rate) - x_low) / span * (_W - _PAD_L - _PAD_R)

    def sy(value: float) -> float:
        return _H - _PAD_B - (value - y_low) / (y_high - y_low) * (_H - _PAD_B - _PAD_T)

    parts = [f"<svg class='chart' width='{_W}' height='{_H}' role='img' aria-label='{_e(title)} {_e(subtitle)}'>",
             _titles(title, subtitle),
             f"<line x1='{_PAD_L}' y1='{_H - _PAD_B}' x2='{_W - _PAD_R}' y2='{_H - _PAD_B}' stroke='#999'/>",
             f"<line x1='{_PAD_L}' y1='{_PAD_T}' x2='{_PAD_L}' y2='{_H - _PAD_B}' stroke='#999'/>"]  # fmt: skip
    for rate in rates:
        parts.append(f"<text x='{sx(rate):.1f}' y='{_H - _PAD_B + 13}' font-size='10' text-anchor='middle'>"
                     f"{rate:g}</text>")  # fmt: skip
    parts.append(f"<text x='{(_W + _PAD_L) / 2:.0f}' y='{_H - 3}' font-size='10' text-anchor='middle'>"
                 "compression rate (log scale)</text>")  # fmt: skip
    for tick in _ticks(y_low, y_high):
        parts.append(f"<text x='{_PAD_L - 3}' y='{sy(tick) + 3:.1f}' font-size='10' text-anchor='end'>"
                     f"{tick:.3g}</text>")  # fmt: skip
    for name, values in series.items():
        finite = sorted((p for p in values if _finite(p[1])), key=lambda p: p[0])
        color = colors.get(name, "#333")
        if len(finite) > 1:
            path = " ".join(f"{sx(r):.1f},{sy(v):.1f}" for r, v, _ in finite)
            parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.6' points='{path}'/>")
        for rate, value, label in finite:
            parts.append(f"<circle cx='{sx(rate):.1f}' cy='{sy(value):.1f}' r='3' fill='{color}'>"
                         f"<title>{_e(label)}: {value:.4g}</title></circle>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def scatter_chart(
    title: str, subtitle: str, x_label: str, y_label: str, points: list[tuple[float, float, str, bool]]
) -> str:
    """Accuracy (y) against a metric (x); Pareto-optimal points in red and joined, the rest grey."""
    finite = [p for p in points if _finite(p[0]) and _finite(p[1])]
    if not finite:
        return (f"<svg class='chart' width='{_W}' height='{_H}' role='img'>{_titles(title, subtitle)}"
                f"<text x='{_PAD_L}' y='60' font-size='11'>no finite values</text></svg>")  # fmt: skip
    x_low, x_high = min(p[0] for p in finite), max(p[0] for p in finite)
    y_low, y_high = min(p[1] for p in finite), max(p[1] for p in finite)
    x_span, y_span = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0

    def sx(v: float) -> float:
        return _PAD_L + (v - x_low) / x_span * (_W - _PAD_L - _PAD_R)

    def sy(v: float) -> float:
        return _H - _PAD_B - (v - y_low) / y_span * (_H - _PAD_B - _PAD_T)

    parts = [
        f"<svg class='chart' width='{_W}' height='{_H}' role='img' aria-label='{_e(title)}'>",
        _titles(title, subtitle),
        f"<line x1='{_PAD_L}' y1='{_H - _PAD_B}' x2='{_W - _PAD_R}' y2='{_H - _PAD_B}' stroke='#999'/>",
        f"<line x1='{_PAD_L}' y1='{_PAD_T}' x2='{_PAD_L}' y2='{_H - _PAD_B}' stroke='#999'/>",
        f"<text x='{(_W + _PAD_L) / 2:.0f}' y='{_H - 3}' font-size='10' text-anchor='middle'>{_e(x_label)}</text>",
    ]
    for tick in _ticks(x_low, x_high):
        parts.append(f"<text x='{sx(tick):.1f}' y='{_H - _PAD_B + 13}' font-size='10' text-anchor='middle'>"
                     f"{tick:.3g}</text>")  # fmt: skip
    for tick in _ticks(y_low, y_high):
        parts.append(f"<text x='{_PAD_L - 3}' y='{sy(tick) + 3:.1f}' font-size='10' text-anchor='end'>"
                     f"{tick:.3g}</text>")  # fmt: skip
    front = sorted((p for p in finite if p[3]), key=lambda p: p[0])
    if len(front) > 1:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _, _ in front)
        parts.append(f"<polyline fill='none' stroke='#d62728' stroke-dasharray='3,2' points='{path}'/>")
    for x, y, label, optimal in finite:
        color = "#d62728" if optimal else "#aaa"
        parts.append(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='{4 if optimal else 3}' fill='{color}'>"
                     f"<title>{_e(label)}: {x_label} {x:.4g}, {y_label} {y:.4g}"
                     f"{' (Pareto-optimal)' if optimal else ''}</title></circle>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _cell_label(record: dict[str, Any]) -> str:
    pruning = "dense" if record["pruning_method"] in (None, "none") else f"{record['pruning_method']}"
    return f"{record['model']} | {pruning} CR {record['compression_rate']:g} | {record['explainer']}"


def curves_section(results: SuiteResults) -> str:
    curves = _curves(results.records)
    explainer_names = sorted({key[2] for key in curves})
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(explainer_names)}
    panels = sorted({(key[0], key[1]) for key in curves})
    legend = "".join(f"<span><i style='background:{colors[n]}'></i>{_e(n)}</span>" for n in explainer_names)
    charts = []
    for metric in ["accuracy", *results.metric_names]:
        arrow = "↑" if metric == "accuracy" else _arrow(results, metric)
        for model, pruning in panels:
            series = {
                explainer: [(rate, record.get(metric), _cell_label(record))
                            for rate, record in curves[(m, p, explainer)].items()]
                for (m, p, explainer) in curves if (m, p) == (model, pruning)
            }  # fmt: skip
            if metric == "accuracy":  # accuracy does not depend on the explainer: one line
                series = {"accuracy": next(iter(series.values()))}
            charts.append(line_chart(f"{metric} {arrow}", f"{model} · {pruning}", series,
                                     {**colors, "accuracy": "#222"}))  # fmt: skip
    return (
        "<p>Accuracy and each metric against the compression rate (log scale): one line per explainer, one panel per "
        "model and pruning method; CR 1 is the unpruned model. Hover a point for its cell.</p>"
        f"<div class='legend'>{legend}</div><div class='charts'>{''.join(charts)}</div>"
    )


def pareto_section(results: SuiteResults) -> str:
    charts = []
    for metric in results.metric_names:
        sign = 1.0 if results.higher_is_better(metric) else -1.0
        records = [r for r in results.records if _finite(r.get(metric)) and _finite(r.get("accuracy"))]
        front = pareto_front([(sign * r[metric], r["accuracy"]) for r in records])
        points = [
            (r[metric], r["accuracy"], _cell_label(r), optimal) for r, optimal in zip(records, front, strict=True)
        ]
        title = f"accuracy ↑ vs {metric} {_arrow(results, metric)}"
        charts.append(scatter_chart(title, f"{sum(front)} Pareto-optimal of {len(records)} cells", metric,
                                    "accuracy", points))  # fmt: skip
    return (
        "<p>Accuracy (y) against each metric (x) over every cell; red cells are Pareto-optimal (no other cell is both "
        "as accurate and as good on the metric, and better on one).</p>"
        f"<div class='charts'>{''.join(charts)}</div>"
    )


def sweet_spot_section(results: SuiteResults, max_accuracy_drop: float) -> str:
    spots = sweet_spots(results, max_accuracy_drop)
    if not spots:
        return "<p>No pruned variants to compare with the unpruned model.</p>"
    rows = []
    for spot in spots:
        verdict = "yes" if spot.beats_dense else "no"
        rows.append(
            f"<tr><td class='text'>{_e(spot.model)}</td><td class='text'>{_e(spot.pruning)}</td>"
            f"<td class='text'>{_e(spot.explainer)}</td><td class='text'>{_e(spot.metric)} "
            f"{_arrow(results, spot.metric)}</td><td>{spot.dense_score:.4g}</td><td>{spot.best_rate:g}</td>"
            f"<td>{spot.best_score:.4g}</td><td class='text{' best' if spot.beats_dense else ''}'>{verdict}</td>"
            f"<td class='text'>{_e(', '.join(f'{r:g}' for r in spot.eligible_rates))}</td></tr>"
        )
    wins = sum(s.beats_dense for s in spots)
    return (
        f"<p>{wins} of {len(spots)} model × pruning × explainer × metric combinations have a sweet spot: a pruned "
        f"model within {max_accuracy_drop * 100:g} accuracy points of the unpruned one that explains better.</p>"
        "<table class='cells'><thead><tr><th>model</th><th>pruning</th><th>explainer</th><th>metric</th>"
        "<th>CR 1 score</th><th>best CR</th><th>best score</th><th>beats CR 1</th><th>CRs within the accuracy drop"
        f"</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def agreement_section(results: SuiteResults) -> str:
    names = results.metric_names
    oriented = {
        m: [None if not _finite(r.get(m)) else (r[m] if results.higher_is_better(m) else -r[m])
            for r in results.records]
        for m in names
    }  # fmt: skip
    head = "".join(f"<th>{_e(m)}</th>" for m in names)
    rows = []
    disagreements = []
    for a in names:
        cells = []
        for b in names:
            tau, count = kendall_tau(oriented[a], oriented[b])
            if not _finite(tau):
                cells.append("<td>–</td>")
                continue
            red, blue = (int(255 * min(1, -tau)), 0) if tau < 0 else (0, int(255 * min(1, tau)))
            shade = f"rgba({255 if red else 40},{80},{255 if blue else 40},{abs(tau) * 0.45:.2f})"
            cells.append(f"<td style='background:{shade}' title='{_e(a)} vs {_e(b)}: tau {tau:.3f} over {count} "
                         f"cells'>{tau:.2f}</td>")  # fmt: skip
            if a < b:
                disagreements.append((tau, a, b))
        rows.append(f"<tr><th>{_e(a)}</th>{''.join(cells)}</tr>")
    disagreements.sort()
    worst = "".join(f"<li>{_e(a)} vs {_e(b)}: τ = {tau:.2f}</li>" for tau, a, b in disagreements[:5])
    return (
        "<p>Kendall τ between the rankings of the cells by each pair of metrics, each oriented so that higher is "
        "better: 1 = the same ranking, −1 = reversed, 0 = unrelated.</p>"
        f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + (f"<p>Most disagreeing pairs:</p><ul>{worst}</ul>" if worst else "")
    )


def gallery_section(results: SuiteResults) -> str:
    if not any(results.gallery.values()):
        return "<p>No gallery images in this store (they are logged by xbench ≥ 0.1 runs as gallery_*.png).</p>"
    curves = _curves(results.records)
    blocks = []
    for model, pruning in sorted({(k[0], k[1]) for k in curves}):
        explainer_names = sorted({k[2] for k in curves if (k[0], k[1]) == (model, pruning)})
        rates = sorted({rate for k, c in curves.items() if (k[0], k[1]) == (model, pruning) for rate in c})
        for kind, description in GALLERY_KINDS.items():
            head = "".join(f"<th>{_e(e)}</th>" for e in explainer_names)
            rows = []
            for rate in rates:
                cells = []
                for explainer in explainer_names:
                    record = curves[(model, pruning, explainer)].get(rate)
                    image = results.gallery.get(record["run_id"], {}).get(kind) if record else None
                    if image is None:
                        cells.append("<td></td>")
                        continue
                    data = base64.b64encode(image).decode()
                    cells.append(f"<td><img alt='{_e(_cell_label(record))}' title='{_e(_cell_label(record))}' "
                                 f"src='data:image/png;base64,{data}'></td>")  # fmt: skip
                rows.append(f"<tr><th>CR {rate:g}</th>{''.join(cells)}</tr>")
            blocks.append(f"<h3>{_e(model)} · {_e(pruning)} · {_e(description)}</h3>"
                          f"<table class='gallery'><thead><tr><th></th>{head}</tr></thead>"
                          f"<tbody>{''.join(rows)}</tbody></table>")  # fmt: skip
    return (
        "<p>The same eval images at each compression rate: the attribution as a jet overlay, and the image with "
        "everything but its 10 % most relevant pixels greyed out (the two views the seed paper showed people).</p>"
        + "".join(blocks)
    )


def provenance_section(results: SuiteResults) -> str:
    newest = max(results.records, key=lambda r: r.get("start_time") or 0)
    provenance = dict(newest.get("provenance") or {})
    values = {key: sorted({str((r.get("provenance") or {}).get(key, "")) for r in results.records})
              for key in provenance}  # fmt: skip
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td class='text'>{_e(', '.join(v) or '')}</td></tr>" for k, v in values.items()
    )
    return f"<table>{rows}<tr><th>date</th><td class='text'>{_e(_date(results.records))}</td></tr></table>"


def _date(records: Iterable[dict[str, Any]]) -> str:
    newest = max((r.get("start_time") or 0 for r in records), default=0)
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest / 1000)) if newest else ""


def suite_page(results: SuiteResults, max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> str:
    devices = sorted({str(r.get("device")) for r in results.records})
    sections = [
        ("cells", "Cells", cells_table(results)),
        ("curves", "Metrics against compression rate", curves_section(results)),
        ("pareto", "Pareto view: accuracy against each metric", pareto_section(results)),
        ("sweet-spot", "Sweet-spot report", sweet_spot_section(results, max_accuracy_drop)),
        ("agreement", "Metric agreement", agreement_section(results)),
        ("gallery", "Gallery", gallery_section(results)),
        ("provenance", "Provenance", provenance_section(results)),
    ]
    nav = "".join(f"<a href='#{key}'>{_e(title)}</a>" for key, title, _ in sections)
    body = (
        f"<p><a href='index.html'>← all suites</a></p><h1>Suite {_e(results.name)}</h1>"
        f"<p class='meta'>{len(results.records)} cells · device: {_e(', '.join(devices))} · results from "
        f"{_e(_date(results.records))} · page built {time.strftime('%Y-%m-%d %H:%M')} by xbench {__version__}. "
        "↑ higher is better, ↓ lower is better; the best value per model is highlighted. Under a metric's mean, "
        f"[low, high] is its 95 % bootstrap interval over the eval images ({BOOTSTRAP_RESAMPLES} resamples). "
        "CR (scope) is the requested compression rate over the pruned weights, CR (model) the measured one over all "
        "parameters. FLOPs are per image: dense counts every weight, effective skips zero weights.</p>"
        f"<nav>{nav}</nav>" + "".join(f"<h2 id='{key}'>{_e(title)}</h2>{content}" for key, title, content in sections)
    )
    return _page(f"xbench · {results.name}", body)


def index_page(suites: list[SuiteResults]) -> str:
    rows = []
    for results in suites:
        models = len({r["model"] for r in results.records})
        devices = ", ".join(sorted({str(r.get("device")) for r in results.records}))
        rows.append(
            f"<tr><td class='text'><a href='{_e(suite_filename(results.name))}'>{_e(results.name)}</a></td>"
            f"<td class='text'>{_e(_date(results.records))}</td><td class='text'>{_e(devices)}</td>"
            f"<td>{models}</td><td>{len(results.records)}</td></tr>"
        )
    body = (
        "<h1>xbench leaderboard</h1><p>How does pruning a vision model change how explainable it is? Each suite "
        "sweeps timm models × pruning methods and compression rates × explainers, scored with Quantus metrics.</p>"
        "<table class='cells'><thead><tr><th>suite</th><th>date</th><th>device</th><th>models</th><th>cells</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<p class='meta'>Built {time.strftime('%Y-%m-%d %H:%M')} by xbench {__version__}.</p>"
    )
    return _page("xbench leaderboard", body)


def build(suites: list[SuiteResults], out: Path, max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> Path:
    """Write index.html, one page per suite and each suite's records as JSON; returns the index path."""
    out.mkdir(parents=True, exist_ok=True)
    for results in suites:
        page = suite_filename(results.name)
        (out / page).write_text(suite_page(results, max_accuracy_drop))
        (out / page.replace(".html", ".json")).write_text(json.dumps(results.records, indent=1, default=str))
    index = out / "index.html"
    index.write_text(index_page(suites))
    return index
