"""Published results a suite can be compared with (`reference: NAME` in the suite): the package's
`references/NAME.json` holds a figure by compression rate; the leaderboard shows the suite's value beside it, the
difference, and whether the reference falls inside the suite's 95 % interval across seeds and images."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from xbench.core.errors import XbenchInputError

# Shipped inside the package, so an installed wheel knows them too.
REFERENCES_DIR = Path(str(resources.files("xbench") / "references"))


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    setting: str = ""
    figure: str  # a figure of the cell summaries, e.g. accuracy
    label: str
    scale: float = 1.0  # the reference's unit over xbench's (100 for percent)
    by_compression_rate: dict[str, float]


def available() -> list[str]:
    return sorted(path.stem for path in REFERENCES_DIR.glob("*.json"))


def load_reference(name_or_path: str, field: str = "reference") -> Reference:
    path = Path(name_or_path).expanduser()
    if not path.suffix:
        path = REFERENCES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(available()) or "none"
        raise XbenchInputError(f"no reference {name_or_path!r} (known: {known}, or a path to a JSON file)", field=field)
    from pydantic import ValidationError

    try:
        return Reference.model_validate_json(path.read_text())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'file'}: {error['msg']}" for error in exc.errors()
        )
        raise XbenchInputError(f"reference file {path} is not a valid reference: {problems}", field=field) from None


def replication_rows(reference: Reference, summaries: list[Any]) -> list[dict[str, Any]]:
    """Per (model, pruning) and reference CR: the reference value, the suite's mean and 95 % interval of the figure
    (over seeds and images, from `stats.CellSummary`), their difference, and whether the reference is inside."""
    rows = []
    seen: set[tuple[Any, ...]] = set()
    for summary in summaries:
        key = (summary.model, summary.pruning_method, summary.compression_rate)
        rate = f"{summary.compression_rate:g}"
        if key in seen or rate not in reference.by_compression_rate or reference.figure not in summary.values:
            continue
        seen.add(key)  # the figure is the variant's: the same for each explainer's cell
        ours = summary.values[reference.figure] * reference.scale
        low, high = (v * reference.scale for v in summary.intervals.get(reference.figure, (math.nan, math.nan)))
        published = reference.by_compression_rate[rate]
        rows.append(
            {
                "model": summary.model,
                "pruning": summary.pruning_method,
                "compression_rate": summary.compression_rate,
                "reference": published,
                "ours": ours,
                "low": low,
                "high": high,
                "difference": ours - published,
                "inside": bool(low <= published <= high),
                "seeds": len(summary.seeds),
            }
        )
    return sorted(rows, key=lambda r: (r["model"], r["pruning"] != "none", r["compression_rate"]))
