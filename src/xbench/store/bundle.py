"""Results bundles: a suite's results as a self-describing folder, read back like the MLflow store.

`xbench export --bundle DIR` writes one; `stats`, `check`, `leaderboard build` and `human export` read one with
`--from DIR`. That is how a study is shared or published without its MLflow store:

    DIR/manifest.json                  format, versions, suite, margins, reference, and every cell run
    DIR/cells/<run_id>/result.json     the typed CellResult, exactly as the store holds it
    DIR/cells/<run_id>/<name>.npy      its raw arrays (gallery images and attributions)
    DIR/cells/<run_id>/scores.csv      per-image scores, for people and spreadsheets
    DIR/human/<n>-<run_id>.json        the analysed human studies of the suite, newest first
    DIR/results.csv                    one flat record per cell (what `xbench export` prints)
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from xbench.core.cache import library_versions
from xbench.core.errors import XbenchInputError
from xbench.core.numbers import finite_or_none
from xbench.core.results import CellResult, per_image_scores
from xbench.store.tracking import ResultRecords, Store, StoredRun, order_of

FORMAT = "xbench-results-bundle"
VERSION = 1
ARRAYS = ("gallery_images", "gallery_attributions")


def write_bundle(store: Store, suite: str, directory: Path) -> Path:
    """Write `suite`'s results from `store` into `directory` (new or empty), atomically: a folder beside it is filled
    and renamed into place, so a reader never sees half a bundle."""
    if directory.exists() and any(directory.iterdir()):
        raise XbenchInputError(f"{directory} is not empty; a bundle goes into a new folder", field="--bundle")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        cells = []
        loaded = store.load_cell_results(suite)  # read once: the cells' files and the flat records come from it
        for run, result in loaded:
            folder = staging / "cells" / run.run_id
            folder.mkdir(parents=True)
            (folder / "result.json").write_text(result.model_dump_json(indent=1))
            arrays = store.arrays(run.run_id, ARRAYS)
            for name, array in arrays.items():
                np.save(folder / f"{name}.npy", array, allow_pickle=False)
            (folder / "scores.csv").write_text(_scores_csv(result))
            cells.append(
                {"run_id": run.run_id, "start_time": run.start_time, "tags": run.tags, "arrays": sorted(arrays)}
            )
        studies = store.human_studies(suite)
        if studies:
            (staging / "human").mkdir()
            for index, study in enumerate(studies):  # newest first, as the store gives them
                (staging / "human" / f"{index:04d}-{study['run_id']}.json").write_text(json.dumps(study, indent=1))
        records = store.records_of(suite, loaded)
        (staging / "results.csv").write_text(_records_csv(records))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "suite": suite,
            "source": store.uri,
            "experiment_id": store.experiment_id(suite),
            "reference": store.reference(suite),
            "equivalence": store.equivalence(suite),
            "library_versions": library_versions(),
            "cells": cells,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if directory.exists():
            directory.rmdir()
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _scores_csv(result: CellResult) -> str:
    scores = per_image_scores(result)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = sorted(scores)
    writer.writerow(["image", *names])
    count = max((len(v) for v in scores.values()), default=0)
    for index in range(count):
        row = [finite_or_none(float(scores[name][index])) if index < len(scores[name]) else None for name in names]
        writer.writerow([index, *("" if value is None else value for value in row)])
    return buffer.getvalue()


def _records_csv(records: list[dict[str, Any]]) -> str:
    columns = sorted({k for r in records for k, v in r.items() if not isinstance(v, (dict, list))})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


class Bundle(ResultRecords):
    """A results bundle, read with the same methods as the store (what `stats`, `check`, the leaderboard and the
    human-study export use)."""

    def __init__(self, directory: Path) -> None:
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise XbenchInputError(f"{directory} is not a results bundle (no manifest.json)", field="--from")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except ValueError as exc:
            raise XbenchInputError(f"{manifest_path} is damaged: {exc}", field="--from") from None
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise XbenchInputError(
                f"{directory} is not a version-{VERSION} xbench results bundle "
                f"(format {self.manifest.get('format')!r}, version {self.manifest.get('version')!r})",
                field="--from",
            )
        self.directory = directory
        self.uri = f"bundle {directory}"
        self.suite = str(self.manifest["suite"])
        self._results: dict[str, CellResult] = {}

    def _check(self, suite: str) -> None:
        if suite != self.suite:
            message = f"the bundle {self.directory} holds suite {self.suite!r}, not {suite!r}"
            raise XbenchInputError(message, field="--suite")

    def suites(self) -> list[str]:
        return [self.suite]

    def experiment_id(self, suite: str) -> str | None:
        return self.manifest.get("experiment_id") if suite == self.suite else None

    def reference(self, suite: str) -> str | None:
        self._check(suite)
        return self.manifest.get("reference")

    def equivalence(self, suite: str) -> dict[str, float]:
        self._check(suite)
        return {str(k): float(v) for k, v in (self.manifest.get("equivalence") or {}).items()}

    def load_cell_results(self, suite: str) -> list[tuple[StoredRun, CellResult]]:
        self._check(suite)
        loaded = []
        for cell in self.manifest["cells"]:
            path = self.directory / "cells" / cell["run_id"] / "result.json"
            try:
                result = CellResult.model_validate_json(path.read_text())
            except (OSError, ValueError) as exc:
                raise XbenchInputError(f"{path} is missing or damaged: {exc}", field="--from") from None
            loaded.append((StoredRun(cell["run_id"], int(cell["start_time"]), dict(cell["tags"])), result))
        return sorted(loaded, key=lambda pair: order_of(pair[1]))

    def human_studies(self, suite: str) -> list[dict[str, Any]]:
        self._check(suite)
        folder = self.directory / "human"
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []

    def arrays(self, run_id: str, names: tuple[str, ...]) -> dict[str, Any]:
        folder = self.directory / "cells" / run_id
        paths = {name: folder / f"{name}.npy" for name in names}
        return {name: np.load(path, allow_pickle=False) for name, path in paths.items() if path.is_file()}


def open_results(tracking_uri: str | None = None, bundle: Path | None = None) -> Store | Bundle:
    """Where a command reads results from: a bundle (`--from DIR`) or the MLflow store (`--tracking-uri`)."""
    if bundle is not None:
        if tracking_uri is not None:
            raise XbenchInputError("read from a bundle or from a store, not both", field="--from")
        return Bundle(bundle)
    return Store(tracking_uri)
