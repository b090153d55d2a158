"""The record an `xbench run suite --until-decided` run leaves on its suite's experiment: which seed counts it
looked at and at what share of α each, so the statistics read afterwards pay for the looks
(`analyse.findings.safe_compression`). Plain data, stored as JSON and read back as untrusted."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

TOTAL_ALPHA = 0.05  # what the looks' shares may add up to (`analyse.decide.ALPHA`)


@dataclass(frozen=True)
class Sequential:
    """What `xbench run suite --until-decided` did: the seed counts it looked at, each look's α-spending share
    (`decide.spent_levels`), the seeds of its last look, and each ladder decided at a look before the last (model,
    pruning method, pruning scope, explainer) -> (seeds, safe CR or None, first failed CR or None, shown unsafe). Read
    from the store, so checked as untrusted (`from_json`)."""

    looks: tuple[int, ...]
    levels: tuple[float, ...]
    seeds: tuple[int, ...]
    decided: dict[tuple[str, str, str, str], tuple[int, float | None, float | None, bool]]

    def to_json(self) -> str:
        return json.dumps(
            {
                "looks": list(self.looks),
                "levels": list(self.levels),
                "seeds": list(self.seeds),
                "decided": [[list(key), *value] for key, value in sorted(self.decided.items())],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Sequential | None:
        """The record, or None when it is missing or malformed (then the stats test at α, as without looks)."""
        try:
            data = json.loads(text)
            looks = tuple(int(n) for n in data["looks"])
            levels = tuple(float(x) for x in data["levels"])
            seeds = tuple(int(n) for n in data["seeds"])
            decided = {}
            for key, at, safe, failed, unsafe in data["decided"]:
                name = tuple(str(k) for k in key)
                if len(name) != 4:
                    return None
                decided[name] = (
                    int(at),
                    None if safe is None else float(safe),
                    None if failed is None else float(failed),
                    bool(unsafe),
                )
        except (ValueError, TypeError, KeyError):
            return None
        shares_ok = all(0 < x <= TOTAL_ALPHA for x in levels) and math.fsum(levels) <= TOTAL_ALPHA * (1 + 1e-9)
        if not looks or len(looks) != len(levels) or not shares_ok:
            return None
        return cls(looks, levels, seeds, decided)
