"""Regression check: the latest results of a suite against a committed baseline, per cell and metric."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench.errors import XbenchInputError

DEFAULT_TOLERANCE = {"abs": 0.02, "rel": 0.05}
BASELINE_VERSION = 1


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


def cell_label(record: dict[str, Any]) -> str:
    pruning = (
        "dense"
        if record["pruning_method"] == "none"
        else (f"{record['pruning_method']} CR {record['compression_rate']:g}")
    )
    return f"{record['model']} | {pruning} | {record['explainer']}"


def checked_values(record: dict[str, Any]) -> tuple[dict[str, float | None], dict[str, str]]:
    """Accuracy and every explainability metric of a record, with directions (latency is too noisy to gate)."""
    directions = {"accuracy": "higher", **record.get("metric_directions", {})}
    return {name: record.get(name) for name in directions}, directions


def make_baseline(suite: str, records: list[dict[str, Any]], tolerances: dict[str, Any] | None = None) -> dict:
    cells = {}
    for record in records:
        values, directions = checked_values(record)
        cells[record["cell_key"]] = {"label": cell_label(record), "values": values, "directions": directions}
    return {
        "version": BASELINE_VERSION,
        "suite": suite,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "tolerances": tolerances or {"default": DEFAULT_TOLERANCE},
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


def _tolerance(tolerances: dict[str, Any], metric: str, reference: float) -> float:
    """max(abs, rel x |baseline|); a metric's own rule replaces the default rule (an omitted term is 0)."""
    rule = tolerances.get(metric) or tolerances.get("default") or DEFAULT_TOLERANCE
    return max(float(rule.get("abs", 0.0)), float(rule.get("rel", 0.0)) * abs(reference))


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
            findings.append(_judge(key, expected.get("label", key), metric, reference, now, higher, tolerances))
    for key, record in current.items():
        if key not in baseline["cells"]:
            findings.append(Finding(key, cell_label(record), "*", "new_cell"))
    return findings


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _judge(key: str, label: str, metric: str, reference: Any, now: Any, higher: bool, tolerances: dict) -> Finding:
    if not _is_number(reference):
        status = "ok" if not _is_number(now) else "improved"
        return Finding(key, label, metric, status, reference, now, None, higher)
    tolerance = _tolerance(tolerances, metric, reference)
    if not _is_number(now):
        return Finding(key, label, metric, "regressed", reference, now, tolerance, higher)
    gain = (now - reference) if higher else (reference - now)
    status = "regressed" if gain < -tolerance else "improved" if gain > tolerance else "ok"
    return Finding(key, label, metric, status, reference, now, tolerance, higher)


def failed(findings: list[Finding]) -> bool:
    return any(f.status in ("regressed", "missing_cell") for f in findings)
