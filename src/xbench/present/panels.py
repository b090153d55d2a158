"""The suite page's charted and pictured sections as view models: each metric against CR, pruning methods side
by side (only where their CRs count the same thing), Pareto views, how metrics agree, the gallery, the replication
of published results, the crowd studies and the provenance."""

from __future__ import annotations

import base64
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from xbench.analyse.findings import CellSummary
from xbench.analyse.orderings import kendall_tau, pareto_front
from xbench.analyse.stats import ACCURACY, SuiteStats
from xbench.analyse.trust import READING as TRUST_READING
from xbench.core.numbers import is_finite_number
from xbench.core.references import replication_rows
from xbench.present.charts import PALETTE, line_chart, scatter_chart
from xbench.present.loading import SuiteResults, date_of
from xbench.present.tables import readable

GALLERY_KINDS = {"gallery_overlay.png": "jet heatmap overlay", "gallery_occlusion.png": "top-10 % pixels shown"}


def _split(method: str) -> tuple[str, str]:
    """A compression method's pruning method and quantization (`fp32` when it was not quantized)."""
    pruning, _, quantization = method.partition(" + ")
    return pruning, quantization or "fp32"


def _curves(summaries: list[CellSummary]) -> dict[tuple[str, str, str], dict[float, CellSummary]]:
    """(model, compression method, explainer) -> CR -> cell. A pruning method's curve starts at the unpruned model
    (CR 1) with the same quantization (fp32 for an unquantized method); a quantized unpruned model (`none + int8`)
    has no curve of its own, only that start."""
    methods = sorted({s.pruning_method for s in summaries if _split(s.pruning_method)[0] != "none"})
    curves: dict[tuple[str, str, str], dict[float, CellSummary]] = defaultdict(dict)
    for summary in summaries:
        pruning, quantization = _split(summary.pruning_method)
        if pruning == "none":
            targets = [m for m in methods if _split(m)[1] == quantization]
            if quantization == "fp32":
                targets = targets or ["none"]
        else:
            targets = [summary.pruning_method]
        for method in targets:
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
    methods = sorted({key[1] for key in curves if key[1] != "none"})  # quantized ones: `bytes_view`'s
    methods = [m for m in methods if _split(m)[1] == "fp32"]
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
    return [*rows, ("date", date_of(results.records))]


BYTES_AXIS = "fp32 dense bytes / stored bytes (log scale)"


def bytes_view(results: SuiteResults, summaries: list[CellSummary]) -> dict[str, Any]:
    """Pruning, quantization and both on one axis, the compression rate in bytes (`compression_rate_bits`: the
    unpruned fp32 model's dense bytes over the variant's stored bytes), which counts the same thing for every kind of
    compression. A line per quantization (and pruning method, when the suite has several) through its pruning rates,
    per model, explainer and metric. Empty unless the suite quantizes."""
    if all(_split(s.pruning_method)[1] == "fp32" for s in summaries):
        return {"charts": [], "legend": []}
    prunings = sorted({_split(s.pruning_method)[0] for s in summaries} - {"none"})
    kinds = sorted({_split(s.pruning_method)[1] for s in summaries}, key=lambda q: (q != "fp32", q))

    def series_of(summary: CellSummary) -> list[str]:
        pruning, quantization = _split(summary.pruning_method)
        if len(prunings) <= 1:
            return [quantization]
        return [f"{p} + {quantization}" for p in (prunings if pruning == "none" else [pruning])]

    names = sorted({n for s in summaries for n in series_of(s)}, key=lambda n: (kinds.index(_split(n)[1]), n))
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    panels = sorted({(s.model, s.explainer) for s in summaries})
    charts = []
    for metric in [ACCURACY, *results.metric_names]:
        arrow = "↑" if metric == ACCURACY or results.higher_is_better(metric) else "↓"
        seen_models = set()
        for model, explainer in panels:
            if metric == ACCURACY and model in seen_models:  # accuracy does not depend on the explainer
                continue
            seen_models.add(model)
            series: dict[str, list[tuple[float, float, float, float, str]]] = {name: [] for name in names}
            for s in summaries:
                bits = s.values.get("compression_rate_bits")
                if (s.model, s.explainer) != (model, explainer) or not is_finite_number(bits):
                    continue
                for name in series_of(s):
                    low, high = s.intervals.get(metric, (math.nan, math.nan))
                    series[name].append((float(bits), s.values.get(metric, math.nan), low, high, s.label))
            where = model if metric == ACCURACY else f"{model} · {explainer}"
            charts.append(line_chart(f"{metric} {arrow}", where, series, colors, x_label=BYTES_AXIS))
    return {"charts": charts, "legend": [{"name": n, "color": colors[n]} for n in names]}
