"""What a suite page is built from (`SuiteResults`: its records, per-image scores, gallery pictures, margins,
protocol and provenance), and `load_suite`, which reads it from a store or a bundle: the one place the pages touch
storage; everything after it is pure."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xbench.core.references import Reference, load_reference
from xbench.core.results import PerturbedScores
from xbench.core.sequential import Sequential


@dataclass
class SuiteResults:
    """What a suite page shows: one record per cell run (a cell and seed), and per run_id its per-image scores and
    gallery PNGs."""

    name: str
    records: list[dict[str, Any]]
    per_image: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    gallery: dict[str, dict[str, bytes]] = field(default_factory=dict)
    reference: Reference | None = None
    human: list[dict[str, Any]] = field(default_factory=list)  # human-study reports (`xbench human analyse --suite`)
    equivalence: dict[str, float] = field(default_factory=dict)  # the suite's equivalence margins (`equivalence:`)
    experiment_id: str | None = None  # the suite's MLflow experiment, for links into the MLflow UI
    meta: dict[str, tuple[PerturbedScores, ...]] = field(default_factory=dict)  # run_id -> meta-evaluation scores
    protocol: str = ""  # `protocol_key`: studies with the same key ran the same protocol
    protocol_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)  # `Store.protocol_fields`
    source: str = ""  # where the results came from (a store's URI, or a bundle), shown as provenance
    page_name: str = ""  # the page's name, when two sources hold suites of one name
    sequential: Sequential | None = None  # the looks of an `--until-decided` run, paid for by safe compression

    @property
    def page(self) -> str:
        return suite_filename(self.page_name or self.name)

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for record in self.records:
            names += [n for n in record.get("metric_directions", {}) if n not in names]
        return names

    def higher_is_better(self, metric: str) -> bool:
        for record in self.records:
            if metric in record.get("metric_directions", {}):
                return bool(record["metric_directions"][metric] == "higher")
        return True


def load_suite(store: Any, suite: str) -> SuiteResults:
    """Records, per-image scores and gallery pictures of `suite` from a `tracking.Store`: all from the cell results;
    the pictures are drawn here from their raw arrays."""
    from xbench.core.progress import track
    from xbench.present import drawing

    records = store.load_results(suite)
    reference = store.reference(suite)
    results = SuiteResults(
        suite,
        records,
        store.per_image_scores(records),
        reference=load_reference(reference) if reference else None,
        human=store.human_studies(suite),
        equivalence=store.equivalence(suite),
        experiment_id=store.experiment_id(suite),
        meta=store.meta_evaluations(records),
        protocol=store.protocol_key(records),
        protocol_fields=store.protocol_fields(records),
        sequential=store.sequential(suite),
        source=str(store.uri),
    )
    for record in track(records, f"drawing {suite}'s gallery"):
        arrays = store.arrays(record["run_id"], ("gallery_images", "gallery_attributions"))
        if len(arrays) == 2:
            images = arrays["gallery_images"].astype(np.float64) / 255
            results.gallery[record["run_id"]] = drawing.gallery_strips(images, arrays["gallery_attributions"])
    return results


def suite_filename(suite: str) -> str:
    return "suite-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in suite) + ".html"


def date_of(records: Iterable[dict[str, Any]]) -> str:
    newest = max((r.get("start_time") or 0 for r in records), default=0)
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest / 1000)) if newest else ""
