"""Regression check: the latest results of a suite against a committed baseline, per cell and metric.

A baseline written with per-image scores (version 3, what `xbench check --write-baseline` writes) is tested through
`decide`, the function `xbench stats` and the page use: per cell (without its seed) and metric, the current seeds'
per-image scores against the baseline's, paired by seed and image, with the tolerance as the margin. A metric
regresses when it is shown worse than its tolerance, Holm-corrected over every (cell, metric) the gate tests, so a
rerun with new noise fails the gate at most 5 % of the time while a real shift beyond the tolerance is caught. Where
nothing varies (every seed and image moved by the same amount, or none) the test has no standard error and the
point change against the tolerance decides. A baseline without per-image scores (version 2) is compared value by
value against tolerances from its seed spread.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xbench.core.cells import pruning_label
from xbench.core.errors import XbenchInputError
from xbench.core.numbers import is_finite_number

DEFAULT_TOLERANCE = {"abs": 0.02, "rel": 0.05}
BASELINE_VERSION = 3  # 3: per-image scores per cell, tested through `decide`; 2: seed spreads only
# A regression must exceed the seed noise: this many standard deviations of the value across the baseline's seeds,
# and never less than a quarter of the default rule (two seeds can agree by chance on a coarse figure like accuracy).
SEED_SPREAD_FACTOR = 3.0
SPREAD_FLOOR = {"abs": DEFAULT_TOLERANCE["abs"] / 4, "rel": DEFAULT_TOLERANCE["rel"] / 4}


@dataclass(frozen=True)
class Finding:
    cell_key: str
    label: str
    metric: str
    status: str  # regressed | improved | ok | missing_cell | new_cell
    baseline: float | None = None
    current: float | None = None
    tolerance: float | None = None
    higher_is_better: bool = True
    p: float | None = None  # tested baselines: Holm-corrected p of "worse than the tolerance"


def replicate_label(record: dict[str, Any]) -> str:
    """The cell without its seed: what the replicates of a cell share."""
    pruning = pruning_label(record["pruning_method"], record["compression_rate"], record.get("quantization"))
    return f"{record['model']} | {pruning} | {record['explainer']}"


def cell_label(record: dict[str, Any]) -> str:
    return f"{replicate_label(record)} | seed {record.get('seed', 0)}"


def seed_spreads(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """replicate label -> checked value -> standard deviation across seeds (ddof 1), for cells with 2+ seeds."""
    import statistics

    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(replicate_label(record), []).append(record)
    spreads: dict[str, dict[str, float]] = {}
    for label, replicates in groups.items():
        if len({r.get("seed", 0) for r in replicates}) < 2:
            continue
        values = [checked_values(r)[0] for r in replicates]
        spreads[label] = {
            metric: statistics.stdev(finite)
            for metric in values[0]
            if len(finite := [float(x) for v in values if is_finite_number(x := v.get(metric))]) >= 2
        }
    return spreads


def checked_values(record: dict[str, Any]) -> tuple[dict[str, float | None], dict[str, str]]:
    """Accuracy and every explainability metric of a record, with directions (latency is too noisy to gate)."""
    directions = {"accuracy": "higher", **record.get("metric_directions", {})}
    return {name: record.get(name) for name in directions}, directions


def make_baseline(
    suite: str,
    records: list[dict[str, Any]],
    tolerances: dict[str, Any] | None = None,
    per_image: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A baseline of every cell's checked values and, for cells run with several seeds, their spread across seeds;
    with `per_image` (run id -> metric or "correct" -> per-image scores) each cell's per-image scores too, so the
    gate tests through `decide`.

    `tolerances` (rules per metric or "default") are kept as given. Value by value, a metric without a rule gets its
    tolerance from the seed spread, or the default rule where the baseline has a single seed; tested, the rule or the
    default rule (the seeds' noise is then in the test).
    """
    spreads = seed_spreads(records)
    cells: dict[str, dict[str, Any]] = {}
    for record in records:
        values, directions = checked_values(record)
        cells[record["cell_key"]] = {"label": cell_label(record), "values": values, "directions": directions}
        if replicate_label(record) in spreads:
            cells[record["cell_key"]]["seed_spread"] = spreads[replicate_label(record)]
        if per_image is not None:
            scores = per_image.get(record["run_id"], {})
            cells[record["cell_key"]].update(
                replicate=replicate_label(record),
                seed=int(record.get("seed", 0)),
                per_image={name: _encode(scores[_array_name(name)]) for name in values if _array_name(name) in scores},
            )
    return {
        "version": BASELINE_VERSION,
        "suite": suite,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seeds": sorted({int(r.get("seed", 0)) for r in records}),
        "tolerances": tolerances or {},
        "cells": cells,
    }


def read_baseline(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise XbenchInputError(f"baseline file {str(path)!r} does not exist (create it with --write-baseline)")
    try:
        baseline = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise XbenchInputError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(baseline, dict) or not {"suite", "cells"} <= set(baseline):
        raise XbenchInputError(f"baseline {path} needs the keys 'suite' and 'cells'")
    return baseline


def _rule_tolerance(rule: dict[str, Any], reference: float) -> float:
    return max(float(rule.get("abs", 0.0)), float(rule.get("rel", 0.0)) * abs(reference))


def _tolerance(tolerances: dict[str, Any], metric: str, reference: float, spread: float | None = None) -> float:
    """A metric's own rule, else the default rule, each max(abs, rel x |baseline|) (an omitted term is 0); without
    rules, SEED_SPREAD_FACTOR x the seed spread (never below SPREAD_FLOOR); with neither, DEFAULT_TOLERANCE."""
    rule = tolerances.get(metric) or tolerances.get("default")
    if rule:
        return _rule_tolerance(rule, reference)
    if spread is not None and math.isfinite(spread):
        return max(SEED_SPREAD_FACTOR * spread, _rule_tolerance(SPREAD_FLOOR, reference))
    return _rule_tolerance(DEFAULT_TOLERANCE, reference)


def _array_name(checked: str) -> str:
    """Where a checked value's per-image scores live: accuracy's are the per-image `correct`."""
    return "correct" if checked == "accuracy" else checked


def _encode(scores: Any) -> list[float | None]:
    return [float(x) if math.isfinite(x) else None for x in np.asarray(scores, dtype=float).ravel()]


def _decode(values: Any, where: str) -> np.ndarray:
    if not isinstance(values, list) or not all(v is None or is_finite_number(v) for v in values):
        raise XbenchInputError(f"baseline {where}: per-image scores must be a list of numbers or null")
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def compare(
    baseline: dict[str, Any],
    records: list[dict[str, Any]],
    per_image: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Finding]:
    """Every (cell, metric) of the baseline against the current records; NaN where a number was expected regresses.
    With per-image scores on both sides, each cell (over its seeds) and metric is tested (`tested_findings`)."""
    cells = baseline["cells"]
    if per_image is not None and cells and all(isinstance(c.get("per_image"), dict) for c in cells.values()):
        return tested_findings(baseline, records, per_image)
    current = {record["cell_key"]: record for record in records}
    tolerances = baseline.get("tolerances", {})
    findings: list[Finding] = []
    for key, expected in baseline["cells"].items():
        if key not in current:
            findings.append(Finding(key, expected.get("label", key), "*", "missing_cell"))
            continue
        values, _ = checked_values(current[key])
        for metric, reference in expected["values"].items():
            higher = expected.get("directions", {}).get(metric, "higher") == "higher"
            now = values.get(metric)
            tolerance = (
                _tolerance(tolerances, metric, reference, expected.get("seed_spread", {}).get(metric))
                if (is_finite_number(reference))
                else None
            )
            findings.append(_judge(key, expected.get("label", key), metric, reference, now, higher, tolerance))
    for key, record in current.items():
        if key not in baseline["cells"]:
            findings.append(Finding(key, cell_label(record), "*", "new_cell"))
    return findings


def _judge(
    key: str, label: str, metric: str, reference: Any, now: Any, higher: bool, tolerance: float | None
) -> Finding:
    if not is_finite_number(reference) or tolerance is None:
        status = "ok" if not is_finite_number(now) else "improved"
        return Finding(key, label, metric, status, reference, now, None, higher)
    if not is_finite_number(now):
        return Finding(key, label, metric, "regressed", reference, now, tolerance, higher)
    gain = (now - reference) if higher else (reference - now)
    status = "regressed" if gain < -tolerance else "improved" if gain > tolerance else "ok"
    return Finding(key, label, metric, status, reference, now, tolerance, higher)


def failed(findings: list[Finding]) -> bool:
    return any(f.status in ("regressed", "missing_cell") for f in findings)


def tested_findings(
    baseline: dict[str, Any], records: list[dict[str, Any]], per_image: Mapping[str, Mapping[str, Any]]
) -> list[Finding]:
    """Per cell without its seed, and per checked value: the current seeds' per-image scores against the
    baseline's (paired by seed and image) through `decide`, the tolerance (the baseline's rule, else the default
    rule) as margin; regressed when shown worse than the tolerance, Holm-corrected over all of them; improved when
    shown better than it; a comparison with no standard error (nothing varies) by its point change. Cells on one
    side only are missing or new, as value by value."""
    from xbench.analyse.decide import ALPHA, decide, t_tail
    from xbench.analyse.inference import holm

    tolerances = baseline.get("tolerances", {})
    current = {record["cell_key"]: record for record in records}
    findings: list[Finding] = []
    reference: dict[tuple[str, str], dict[int, np.ndarray]] = defaultdict(dict)
    variant: dict[tuple[str, str], dict[int, np.ndarray]] = defaultdict(dict)
    directions: dict[str, bool] = {}
    for key, expected in baseline["cells"].items():
        if key not in current:
            findings.append(Finding(key, expected.get("label", key), "*", "missing_cell"))
            continue
        record = current[key]
        scores = per_image.get(record["run_id"], {})
        group = str(expected.get("replicate") or replicate_label(record))
        seed = int(expected.get("seed", record.get("seed", 0)))
        for name, values in expected["per_image"].items():
            directions[name] = expected.get("directions", {}).get(name, "higher") == "higher"
            before = _decode(values, f"cell {key} {name}")
            reference[(group, name)][seed] = before
            now = scores.get(_array_name(name))
            variant[(group, name)][seed] = (
                np.asarray(now, dtype=float) if now is not None else np.full(len(before), math.nan)
            )
    for key, record in current.items():
        if key not in baseline["cells"]:
            findings.append(Finding(key, cell_label(record), "*", "new_cell"))
    questions: list[dict[str, Any]] = []
    for (group, name), seeds in sorted(reference.items()):
        pooled = np.concatenate(list(seeds.values()))
        base_mean = float(np.nanmean(pooled)) if np.isfinite(pooled).any() else 0.0
        questions.append(
            {
                "name": f"{group} | {name}",
                "metric": name,
                "family": "accuracy" if name == "accuracy" else "metrics",
                "binary": name == "accuracy",
                "higher_is_better": directions[name],
                "margin": _tolerance(tolerances, name, base_mean),
                "reference": seeds,
                "variants": {2.0: variant[(group, name)]},
                "group": group,
                "checked": name,
            }
        )
    try:
        rows = decide(questions) if questions else []
    except XbenchInputError as error:
        raise XbenchInputError(f"the baseline's per-image scores do not match the current run's: {error}") from None
    adjusted = holm([row["p_inferior"] for row in rows])
    for question, row, p_worse in zip(questions, rows, adjusted, strict=True):
        higher, margin = row["higher_is_better"], row["margin"]
        gain = row["mean_diff"] if higher else -row["mean_diff"]  # positive = better than the baseline
        if not math.isfinite(gain):
            status = "regressed"  # a score that became NaN everywhere
        elif math.isfinite(row["se"]) and row["se"] > 0:
            p_better = float(t_tail((gain - margin) / row["se"], row["df"]))
            status = "regressed" if p_worse < ALPHA else "improved" if p_better < ALPHA else "ok"
        else:
            status = "regressed" if gain < -margin else "improved" if gain > margin else "ok"
        findings.append(
            Finding(
                str(question["group"]),
                str(question["group"]),
                str(question["checked"]),
                status,
                row["reference_mean"],
                row["variant_mean"],
                margin,
                higher,
                p_worse if math.isfinite(p_worse) else None,
            )
        )
    return findings
