"""The crowd study's report as people read it, the cell results a study was exported from, and pseudonyms for
workers (an HMAC of the worker id under a key kept beside the results, so a published report names no one).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xbench.core.errors import XbenchInputError
from xbench.core.results import CellResult
from xbench.core.spreadsheet import csv_safe
from xbench.human.answers import read_csv


def variants_of_study(description: Mapping[str, Any], cells: Sequence[tuple[Any, CellResult]]) -> dict[str, CellResult]:
    """The cell results a study was exported from (its study.json names their MLflow runs), by variant label."""
    by_run = {run.run_id: result for run, result in cells}
    found = {label: by_run[run_id] for label, run_id in description.get("variants", {}).items() if run_id in by_run}
    if len(found) < len(description.get("variants", {})):
        raise XbenchInputError(
            "the suite's store no longer has every cell run the study was exported from (study.json names them)"
        )
    return found


def text_report(report: Mapping[str, Any]) -> str:
    """The report as people read it."""
    lines = [
        f"design: {report['design']}; {report['workers']} workers, {report['answers']} answers "
        f"(+{report['attention_check_answers']} attention checks, {report['unusable_rows']} unusable)",
        "alpha: "
        + ("undefined (no stimulus has two answers)" if report["alpha"] is None else f"{report['alpha']:.3f}")
        + f"  ({report['alpha_note']})",
    ]
    if report["excluded_workers"]:
        lines.append(
            f"excluded (attention checks below {report['min_check_accuracy']:.0%}): "
            + ", ".join(report["excluded_workers"])
        )
    if report["design"] == "pairwise":
        lines.append(
            f"{'pair (a vs b)':<20} prefer a  prefer b  equal  preference [95 % CI]    p        Holm p    "
            "chi2 p    binom p"
        )
        for p in report["pairs"]:
            interval = f"[{_fmt(p['ci_low'], '.2f')}, {_fmt(p['ci_high'], '.2f')}]"
            lines.append(
                f"{p['a'] + ' vs ' + p['b']:<20} {p['a_count']:>8}  {p['b_count']:>8}  {p['equal_count']:>5}  "
                f"{p['preference']:>+10.3f} {interval:<13} {_fmt(p['p'], '.2g'):<8} {_fmt(p['p_holm'], '.2g'):<9} "
                f"{_fmt(p['chi2_p'], '.2g'):<9} {_fmt(p['binom_p'], '.2g')}"
            )
        lines.append(f"({report['p_note']}; significant: Holm p < 0.05)")
    else:
        for v in report["variants"]:
            lines.append(
                f"{v['variant']:<10} accuracy {v['accuracy']:.3f} ({v['correct']}/{v['answers']}; "
                f"{v['dont_know']} don't know; {_fmt(v['known_accuracy'])} of the answers naming a class)"
            )
        for c in report["contrasts"]:
            lines.append(
                f"{c['b'] + ' - ' + c['a']:<20} accuracy {c['difference']:+.3f} [{_fmt(c['ci_low'])}, "
                f"{_fmt(c['ci_high'])}]  p {_fmt(c['p'], '.2g')}  Holm p {_fmt(c['p_holm'], '.2g')}"
            )
        lines.append(
            f"chi2 test across variants (answers independent, as the seed paper): p = {_fmt(report['chi2_p'], '.2g')}"
        )
        lines.append(f"({report['p_note']})")
    if report.get("agreement"):
        lines.append("metric agreement with the human majority (95 % bootstrap CI), Kendall tau of variant rankings:")
        for row in report["agreement"]:
            lines.append(
                f"  {row['metric']:<28} {row['agreement']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}] "
                f"on {row['stimuli']} stimuli; tau {_fmt(row['kendall_tau'], '.2f')} over {row['variants']} variants"
            )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


# --------------------------------------------------------------------------------------------------------------------
# Pseudonyms: what leaves this machine (MLflow) names workers by a keyed hash, never by their platform id


def pseudonym_key(results: Path) -> bytes:
    """The study's pseudonym key, kept beside the raw results file (`<file>.pseudonym-key`, readable by its owner
    only) and made on first use: with it the owner can map a pseudonym back; without it nobody can."""
    import secrets

    path = results.with_name(results.name + ".pseudonym-key")
    if not path.is_file():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return bytes.fromhex(path.read_text().strip())


def pseudonym(worker: str, key: bytes) -> str:
    """HMAC-SHA256 of a worker id under the study's key: stable within a study, unlinkable without the key."""
    import hashlib
    import hmac

    return "w-" + hmac.new(key, worker.encode(), hashlib.sha256).hexdigest()[:16]


def pseudonymised_report(report: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    out = dict(report)
    out["per_worker"] = {pseudonym(w, key): row for w, row in report["per_worker"].items()}
    out["excluded_workers"] = sorted(pseudonym(w, key) for w in report["excluded_workers"])
    return out


def pseudonymised_answers(results: Path, key: bytes, out: Path) -> Path:
    """A copy of the results file with its worker column (MTurk's `WorkerId`, the study page's `worker`) replaced by
    pseudonyms: the file that is logged instead of the raw one."""
    header, rows = read_csv(results, "RESULTS")
    target = out / results.name
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for row in rows:
            for column in ("WorkerId", "worker"):
                if row.get(column):
                    row[column] = pseudonym(row[column], key)
            writer.writerow({column: csv_safe(value) for column, value in row.items()})
    return target
