"""The suite page's tables as view models: the cells with their intervals, the effects of pruning with their
verdicts, safe compression and what blocks it, and the sweet spots. Plain dicts for the jinja2 templates."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from xbench.analyse.findings import CellSummary, safe_compression, sweet_spots
from xbench.analyse.stats import ACCURACY, Comparison, Reliability, SuiteStats
from xbench.core.numbers import is_finite_number
from xbench.present.loading import SuiteResults
from xbench.store.links import run_url

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
        Column("compression_rate_bits", "CR (bytes)", cost=True),
        Column("stored_bytes", "stored", cost=True, unit="B"),
        Column("quant_logit_gap", "quantized: twin's logit gap", cost=True),
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
