"""Orderings of a suite's cells that the pages show: how two metrics agree on ranking cells (Kendall's tau-b) and
which cells no other beats on both of two figures (the Pareto front). Pure Python and SciPy, beside the rest of the
statistics."""

from __future__ import annotations

import math

from xbench.core.numbers import is_finite_number


def kendall_tau(a: list[float | None], b: list[float | None]) -> tuple[float, int]:
    """Kendall's tau-b between two score lists over the cells where both are finite, and that count."""
    from scipy.stats import kendalltau

    pairs = [(x, y) for x, y in zip(a, b, strict=True) if is_finite_number(x) and is_finite_number(y)]
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
