"""Regression check: the latest results of a suite against a committed baseline, per cell and metric."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench.core.cells import pruning_label
from xbench.core.errors import XbenchInputError
from xbench.core.numbers import is_finite_number

DEFAULT_TOLERANCE = {"abs": 0.02, "rel": 0.05}
BASELINE_VERSION = 2  # 2: per-cell seed spreads, from which tolerances are derived unless rules are given
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


def replicate_label(record: dict[str, Any]) -> str:
    """The cell without its seed: what the replicates of a cell share."""
    pruning = pruning_label(record["pruning_method"], record["compression_rate"])
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
    suite: str, records: list[dict[str, Any]], tolerances: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A baseline of every cell's checked values and, for cells run with several seeds, their spread across seeds.

    `tolerances` (rules per metric or "default") are kept as given; a metric without a rule gets its tolerance from
    the seed spread, or the default rule where the baseline has a single seed.
    """
    spreads = seed_spreads(records)
    cells = {}
    for record in records:
        values, directions = checked_values(record)
        cells[record["cell_key"]] = {"label": cell_label(record), "values": values, "directions": directions}
        if replicate_label(record) in spreads:
            cells[record["cell_key"]]["seed_spread"] = spreads[replicate_label(record)]
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


def compare(baseline: dict[str, Any], records: list[dict[str, Any]]) -> list[Finding]:
    """Every (cell, metric) of the baseline against the current records; NaN where a number was expected regresses."""
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
