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
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from xbench.core.cache import library_versions
from xbench.core.errors import XbenchInputError
from xbench.core.numbers import finite_or_none
from xbench.core.results import CellResult, per_image_scores
from xbench.store.mapping import order_of
from xbench.store.records import ResultRecords, StoredRun
from xbench.store.tracking import Store

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
            "sequential": store.sequential_text(suite),
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


# A bundle comes from someone else: every file it names is read inside it, under these caps, and checked.
MAX_JSON_BYTES = 64 * 1024 * 1024  # manifest.json, a result.json, a human study
MAX_ARRAY_BYTES = 256 * 1024 * 1024  # one .npy's data, from its header, before anything is allocated
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")


class _ManifestCell(BaseModel):
    model_config = ConfigDict(extra="ignore")
    run_id: str
    start_time: int
    tags: dict[str, str]
    arrays: list[str] = []


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: str
    version: int
    suite: str
    experiment_id: str | None = None
    reference: str | None = None
    equivalence: dict[str, float] = {}
    sequential: str | None = None  # `Store.sequential_text`: the looks of an `--until-decided` run
    cells: list[_ManifestCell]


def _read_capped(path: Path, cap: int, field: str) -> bytes:
    """The file's bytes, refused (exit 2) when it is missing, not a plain file or larger than `cap`."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise XbenchInputError(f"{path} is missing: {exc.strerror}", field=field) from None
    if not path.is_file():
        raise XbenchInputError(f"{path} is not a plain file", field=field)
    if size > cap:
        raise XbenchInputError(f"{path} is {size:,} bytes, over the {cap:,}-byte cap for this file", field=field)
    return path.read_bytes()


def _plain_name(name: str, field: str) -> str:
    """A name the bundle uses as one folder or file name: no separators, no `..`, nothing absolute."""
    if not _PLAIN_NAME.match(name) or name in (".", ".."):
        raise XbenchInputError(
            f"{name!r} is not a plain name (letters, digits, '_', '-', '.'; no path): a bundle reads only inside "
            "itself",
            field=field,
        )
    return name


def _load_npy(data: bytes, path: Path, field: str) -> np.ndarray:
    """A .npy read from its bytes: the header first (no pickles, no object arrays, the data under the cap and as long
    as the file), then the array."""
    import io

    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = header(stream)
    except (ValueError, OSError) as exc:
        raise XbenchInputError(f"{path} is not a .npy array: {exc}", field=field) from None
    if dtype.hasobject:
        raise XbenchInputError(f"{path} holds Python objects (a pickle), which a bundle may not", field=field)
    size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if size > MAX_ARRAY_BYTES:
        raise XbenchInputError(f"{path} declares {size:,} bytes of data, over the {MAX_ARRAY_BYTES:,}-byte cap", field)
    if size > len(data) - stream.tell():
        raise XbenchInputError(f"{path} is shorter than its header says (truncated)", field=field)
    try:
        array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
        return array
    except (ValueError, OSError) as exc:
        raise XbenchInputError(f"{path} is not a readable array: {exc}", field=field) from None


def _checked_figures(result: CellResult, path: Path) -> CellResult:
    """What a live run could not have written is refused: figures must be finite, accuracy a share."""
    for name, value in result.figures.items():
        if not math.isfinite(value):
            raise XbenchInputError(f"{path}: figure {name} is {value}, not a finite number", field="figures")
    accuracy = result.figures.get("accuracy")
    if accuracy is not None and not 0 <= accuracy <= 1:
        raise XbenchInputError(f"{path}: accuracy {accuracy} is not in [0, 1]", field="figures.accuracy")
    return result


class Bundle(ResultRecords):
    """A results bundle, read with the same methods as the store (what `stats`, `check`, the leaderboard and the
    human-study export use). It may come from anyone, so it is read as untrusted: every path it names resolves inside
    it, every file is read under a size cap, arrays without pickles and against their digests in `result.json`, and
    figures and margins are checked as a live run's are; anything else is an input error naming the file or field."""

    def __init__(self, directory: Path) -> None:
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise XbenchInputError(f"{directory} is not a results bundle (no manifest.json)", field="--from")
        try:
            raw = json.loads(_read_capped(manifest_path, MAX_JSON_BYTES, "--from"))
        except ValueError as exc:
            raise XbenchInputError(f"{manifest_path} is damaged: {exc}", field="--from") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != VERSION:
            found = raw if not isinstance(raw, dict) else {k: raw.get(k) for k in ("format", "version")}
            raise XbenchInputError(
                f"{directory} is not a version-{VERSION} xbench results bundle (found {str(found)[:200]})",
                field="--from",
            )
        try:
            manifest = _Manifest.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise XbenchInputError(f"{manifest_path}: {error['msg']}", field=f"manifest.{where}") from None
        for name, margin in manifest.equivalence.items():
            if not (math.isfinite(margin) and margin > 0):
                raise XbenchInputError(
                    f"{manifest_path}: a margin must be a finite number > 0, got {margin}",
                    field=f"manifest.equivalence.{name}",
                )
        for index, cell in enumerate(manifest.cells):
            _plain_name(cell.run_id, f"manifest.cells[{index}].run_id")
            for array in cell.arrays:
                _plain_name(array, f"manifest.cells[{index}].arrays")
        self.manifest = raw
        self._manifest = manifest
        self.directory = directory
        self.uri = f"bundle {directory}"
        self.suite = manifest.suite
        self._results: dict[str, CellResult] = {}

    def _check(self, suite: str) -> None:
        if suite != self.suite:
            message = f"the bundle {self.directory} holds suite {self.suite!r}, not {suite!r}"
            raise XbenchInputError(message, field="--suite")

    def suites(self) -> list[str]:
        return [self.suite]

    def experiment_id(self, suite: str) -> str | None:
        return self._manifest.experiment_id if suite == self.suite else None

    def reference(self, suite: str) -> str | None:
        self._check(suite)
        return self._manifest.reference

    def equivalence(self, suite: str) -> dict[str, float]:
        self._check(suite)
        return dict(self._manifest.equivalence)

    def sequential_text(self, suite: str) -> str | None:
        self._check(suite)
        return self._manifest.sequential

    def _result(self, run_id: str) -> CellResult:
        if run_id not in self._results:
            path = self.directory / "cells" / _plain_name(run_id, "run_id") / "result.json"
            data = _read_capped(path, MAX_JSON_BYTES, "--from")
            try:
                result = CellResult.model_validate_json(data)
            except ValueError as exc:
                raise XbenchInputError(f"{path} is missing or damaged: {str(exc)[:500]}", field="--from") from None
            self._results[run_id] = _checked_figures(result, path)
        return self._results[run_id]

    def load_cell_results(self, suite: str) -> list[tuple[StoredRun, CellResult]]:
        self._check(suite)
        loaded = [
            (StoredRun(cell.run_id, cell.start_time, dict(cell.tags)), self._result(cell.run_id))
            for cell in self._manifest.cells
        ]
        return sorted(loaded, key=lambda pair: order_of(pair[1]))

    def human_studies(self, suite: str) -> list[dict[str, Any]]:
        self._check(suite)
        folder = self.directory / "human"
        if not folder.is_dir():
            return []
        studies = []
        for path in sorted(folder.glob("*.json")):
            try:
                study = json.loads(_read_capped(path, MAX_JSON_BYTES, "--from"))
            except ValueError as exc:
                raise XbenchInputError(f"{path} is damaged: {exc}", field="--from") from None
            if not isinstance(study, dict):
                raise XbenchInputError(f"{path} is not a human study (a JSON object)", field="--from")
            studies.append(study)
        return studies

    def arrays(self, run_id: str, names: tuple[str, ...]) -> dict[str, Any]:
        folder = self.directory / "cells" / _plain_name(run_id, "run_id")
        result = self._result(run_id)
        arrays = {}
        for name in names:
            path = folder / f"{_plain_name(name, 'arrays')}.npy"
            if not path.exists():
                continue
            data = _read_capped(path, MAX_ARRAY_BYTES + 65536, "--from")
            ref = result.artifact(name)
            if ref is None or hashlib.sha256(data).hexdigest() != ref.digest:
                raise XbenchInputError(
                    f"{path} does not match the digest its result.json gives it (changed or damaged)", field="--from"
                )
            arrays[name] = _load_npy(data, path, "--from")
        return arrays


def open_results(tracking_uri: str | None = None, bundle: Path | None = None) -> Store | Bundle:
    """Where a command reads results from: a bundle (`--from DIR`) or the MLflow store (`--tracking-uri`)."""
    if bundle is not None:
        if tracking_uri is not None:
            raise XbenchInputError("read from a bundle or from a store, not both", field="--from")
        return Bundle(bundle)
    return Store(tracking_uri)
