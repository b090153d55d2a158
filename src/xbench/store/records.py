"""The records a store or a bundle hands on: every cell run's `StoredRun` and `CellResult`, flattened for export
(`load_results`), its per-image scores and meta-evaluation scores, and the protocol key that says which studies ran
the same protocol (`ResultRecords`, shared by `tracking.Store` and `bundle.Bundle`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from xbench.core.results import CellResult, PerturbedScores, per_image_scores, to_record
from xbench.core.sequential import Sequential
from xbench.store.mapping import PROVENANCE_TAGS


@dataclass(frozen=True)
class StoredRun:
    """Where a cell result was read from: its run's id, start time (ms) and tags (the provenance)."""

    run_id: str
    start_time: int
    tags: dict[str, str]


# Presentation's drawer: a result and its raw arrays in, named picture files (PNG bytes) out.


class ResultRecords:
    """Flat records and per-image scores from `load_cell_results`: what the store and a results bundle share."""

    _results: dict[str, CellResult]

    def load_cell_results(self, suite: str) -> list[tuple[StoredRun, CellResult]]:
        raise NotImplementedError

    def sequential_text(self, suite: str) -> str | None:
        """The record of the suite's last `--until-decided` run (`core.sequential.Sequential`), as stored."""
        return None

    def sequential(self, suite: str) -> Sequential | None:
        """The suite's `--until-decided` record, or None when there is none or it does not read (then the statistics
        test at α, as without looks)."""
        text = self.sequential_text(suite)
        return Sequential.from_json(text) if text else None

    def load_results(self, suite: str) -> list[dict[str, Any]]:
        """One flat record per cell (`results.to_record`), from the cell results; also keeps the results for
        `per_image_scores`."""
        return self.records_of(suite, self.load_cell_results(suite))

    def protocol_key(self, records: list[dict[str, Any]]) -> str:
        """What makes two studies comparable, as a short hash: every cell's specification (model and training,
        pruning, CR, explainer, metrics, dataset and sizes, device kind, tie draws, timing settings) without its seed,
        its suite's name or the run. Two stores or bundles with the same key ran the same protocol."""
        from xbench.core.cache import content_key

        specs = {
            json.dumps(
                self._results[r["run_id"]].cell.model_dump(mode="json", exclude={"suite", "seed", "data_seed"}),
                sort_keys=True,
            )
            for r in records
            if r["run_id"] in self._results
        }
        return content_key(sorted(specs))[:12]

    def protocol_fields(self, records: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
        """The specification behind `protocol_key`, field by field: each dotted field of the cells' specifications
        (without seed, suite or run) -> its distinct values as JSON, so two protocols can say where they differ."""
        values: dict[str, set[str]] = {}
        for r in records:
            if r["run_id"] not in self._results:
                continue
            spec = self._results[r["run_id"]].cell.model_dump(mode="json", exclude={"suite", "seed", "data_seed"})
            for name, value in _flatten(spec).items():
                values.setdefault(name, set()).add(json.dumps(value, sort_keys=True))
        return {name: tuple(sorted(found)) for name, found in sorted(values.items())}

    def records_of(self, suite: str, loaded: list[tuple[StoredRun, CellResult]]) -> list[dict[str, Any]]:
        """The flat records of cell results already loaded (kept for `per_image_scores`)."""
        records = []
        for run, result in loaded:
            provenance = {key: run.tags.get(tag, "") for key, tag in PROVENANCE_TAGS.items()}
            records.append(to_record(result, suite, run.run_id, run.start_time, provenance))
            self._results[run.run_id] = result
        return records

    def per_image_scores(self, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """run_id -> {metric or 'correct': per-image scores}, from the cell results `load_results` read."""
        return {
            r["run_id"]: per_image_scores(self._results[r["run_id"]]) for r in records if r["run_id"] in self._results
        }

    def meta_evaluations(self, records: list[dict[str, Any]]) -> dict[str, tuple[PerturbedScores, ...]]:
        """run_id -> the cell's scores under the suite's meta-evaluation perturbations (none: no entry)."""
        return {
            r["run_id"]: self._results[r["run_id"]].meta_evaluation
            for r in records
            if r["run_id"] in self._results and self._results[r["run_id"]].meta_evaluation
        }


def _flatten(spec: Any, prefix: str = "") -> dict[str, Any]:
    """A nested specification as dotted fields (lists stay values)."""
    if not isinstance(spec, dict):
        return {prefix: spec}
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat
