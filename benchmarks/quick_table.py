"""The README's "One result" table, generated from `xbench stats --format json` of a finished `quick` (never typed by
hand):

    xbench stats --suite quick --format json -o /tmp/quick-stats.json
    python benchmarks/quick_table.py /tmp/quick-stats.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [
    (None, "accuracy"),
    ("gradcam", "insertion"),
    ("gradcam", "deletion"),
    ("gradcam", "attribution_localisation"),
    ("integrated_gradients", "insertion"),
    ("saliency", "sparseness"),
]
RATES = (2.0, 8.0, 32.0)
NAMES = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated Gradients", "saliency": "Saliency"}


def _cell(row: dict) -> str:
    verdict = row["verdict"]
    mark = {"worse": " **worse**", "better": " **better**", "equivalent": " *equivalent*"}.get(verdict, " ·")
    return f"{row['mean_diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]{mark}".replace("-", "−")


def table(stats: dict) -> str:
    by_key = {(c["explainer"], c["metric"], c["compression_rate"]): c for c in stats["comparisons"]}
    counts = stats["verdicts"]
    seeds = len(stats["seeds"])
    lines = [
        f"{len(stats['comparisons'])} comparisons, {seeds} seeds: **{counts['worse']} worse, {counts['better']} "
        f"better, {counts['equivalent']} equivalent and {counts['undecided']} undecided**.",
        "",
        "| " + f"{seeds} seeds | " + " | ".join(f"CR {r:g}" for r in RATES) + " |",
        "|---|" + "---|" * len(RATES),
    ]
    for explainer, metric in ROWS:
        first = by_key.get((explainer, metric, RATES[0]))
        if first is None:
            continue
        arrow = "↑" if first["higher_is_better"] else "↓"
        label = "accuracy" if explainer is None else f"{NAMES.get(explainer, explainer)}, {metric.replace('_', ' ')}"
        head = f"{label} {arrow} (CR 1: {first['reference_mean']:.3f}; ±{first['margin']:.2g})"
        cells = [_cell(by_key[(explainer, metric, rate)]) for rate in RATES if (explainer, metric, rate) in by_key]
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    lines.append("")
    for safe in stats.get("safe_compression", []):
        rate = "none" if safe["safe_rate"] is None else f"CR {safe['safe_rate']:g}"
        blocked = ""
        if safe["failed_rate"] is not None:
            how = "shown worse than" if safe["shown_unsafe"] else "not shown within"
            blocked = f"; CR {safe['failed_rate']:g}: {', '.join(safe['blocking'])} {how} the margin"
        lines.append(f"- {NAMES.get(safe['explainer'], safe['explainer'])}: safe up to {rate}{blocked}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1]).read_text())))
