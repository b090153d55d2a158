"""A small SVG chart engine for the pages (line and scatter charts with log-CR axes), so the site needs no
JavaScript library and no CDN. Charts are view models; the templates draw them."""

from __future__ import annotations

import math
from typing import Any

from xbench.core.numbers import is_finite_number

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


def _spaced(rates: list[float]) -> list[float]:
    """The rates to label on a log2 axis, each at least a third of a doubling from the last (measured rates, such as
    bytes, crowd one another where requested ones do not)."""
    kept: list[float] = []
    for rate in rates:
        if not kept or math.log2(rate) - math.log2(kept[-1]) >= 1 / 3:
            kept.append(rate)
    return kept


def line_chart(
    title: str,
    subtitle: str,
    series: dict[str, list[tuple[float, float, float, float, str]]],
    colors: dict[str, str],
    x_label: str = "compression rate (log scale)",
) -> dict[str, Any]:
    """One panel: x = a compression rate on a log2 axis; per series a line through the means and a band from the 95 %
    intervals; each point's title names its cell (hover)."""
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
    chart["x_ticks"] = [{"x": sx(r), "label": f"{r:.3g}"} for r in _spaced(rates)]
    chart["y_ticks"] = [{"y": sy(t), "label": f"{t:.3g}"} for t in _ticks(y_low, y_high)]
    chart["x_label"] = x_label
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
