"""A bundle from someone else is read as untrusted: it cannot make xbench read outside itself, allocate what it
likes, unpickle, swap arrays or plant figures no run could give; each case is exit 2 and a sentence naming it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import xbench_here
from xbench.store.bundle import MAX_ARRAY_BYTES, MAX_JSON_BYTES


@pytest.fixture(scope="module")
def exported(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("untrusted") / "smoke-results"
    xbench_here("export", "--suite", "smoke", "--bundle", str(bundle), cwd=smoke_run, check=True)
    return bundle


def _copy(exported: Path, tmp_path: Path) -> tuple[Path, dict, Path]:
    bundle = tmp_path / "bundle"
    shutil.copytree(exported, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    first = bundle / "cells" / manifest["cells"][0]["run_id"]
    return bundle, manifest, first


def _write_manifest(bundle: Path, manifest: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _refused(bundle: Path, *words: str, command: str = "stats") -> str:
    args = ["stats", "--suite", "smoke", "--format", "json"] if command == "stats" else ["leaderboard", "build"]
    extra = ["--out", str(bundle.parent / "site")] if command == "leaderboard" else []
    result = xbench_here(*args, "--from", str(bundle), *extra, cwd=bundle.parent)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr[-2000:])
    return result.stderr


def test_the_untouched_bundle_reads(exported: Path, tmp_path: Path) -> None:
    bundle, _, _ = _copy(exported, tmp_path)
    result = xbench_here("stats", "--suite", "smoke", "--format", "json", "--from", str(bundle), cwd=tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout)["comparisons"]


@pytest.mark.parametrize("run_id", ["../../outside", "/tmp/outside", "..", "a/b"])
def test_a_run_id_that_leaves_the_bundle_is_refused_before_anything_is_read(
    exported: Path, tmp_path: Path, run_id: str
) -> None:
    bundle, manifest, first = _copy(exported, tmp_path)
    # a planted result outside the bundle, with an accuracy that would make `check` report a regression
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = json.loads((first / "result.json").read_text())
    planted["figures"]["accuracy"] = 0.0001
    (outside / "result.json").write_text(json.dumps(planted))
    manifest["cells"][0]["run_id"] = run_id
    _write_manifest(bundle, manifest)
    _refused(bundle, "manifest.cells[0].run_id", "not a plain name")


def test_a_huge_sparse_result_is_refused_at_its_size_not_read(exported: Path, tmp_path: Path) -> None:
    bundle, _, first = _copy(exported, tmp_path)
    with (first / "result.json").open("r+b") as handle:
        handle.truncate(MAX_JSON_BYTES + 1)  # sparse: a few KB on disk
    _refused(bundle, "result.json", f"{MAX_JSON_BYTES:,}-byte cap")


@pytest.mark.parametrize(
    "case",
    ["header asks for 18 TiB", "a pickle", "garbage", "another array"],
)
def test_an_array_that_is_not_the_one_its_result_names_is_refused(exported: Path, tmp_path: Path, case: str) -> None:
    bundle, _, first = _copy(exported, tmp_path)
    path = first / "gallery_images.npy"
    if case == "header asks for 18 TiB":
        header = {"descr": "<f8", "fortran_order": False, "shape": (2**21, 2**20)}
        with path.open("wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
    elif case == "a pickle":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "garbage":
        path.write_bytes(b"not an array at all")
    else:
        np.save(path, np.zeros((2, 8, 8, 3), dtype=np.uint8))
    # the page reads the gallery; the digest in result.json no longer matches, whatever the file says
    _refused(bundle, "gallery_images.npy", "digest", command="leaderboard")


def test_an_array_over_the_cap_is_refused_by_its_header_even_with_a_matching_digest(tmp_path: Path) -> None:
    from xbench.core.errors import XbenchInputError
    from xbench.store.bundle import _load_npy

    path = tmp_path / "big.npy"
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f8", "fortran_order": False, "shape": (MAX_ARRAY_BYTES // 8 + 1,)}
        )
    with pytest.raises(XbenchInputError, match=r"over the .*-byte cap"):
        _load_npy(path.read_bytes(), path, "--from")
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(XbenchInputError, match="Python objects"):
        _load_npy(path.read_bytes(), path, "--from")


@pytest.mark.parametrize("accuracy", [7.5, -0.1])
def test_a_figure_no_run_could_give_is_refused(exported: Path, tmp_path: Path, accuracy: float) -> None:
    bundle, _, first = _copy(exported, tmp_path)
    result = json.loads((first / "result.json").read_text())
    result["figures"]["accuracy"] = accuracy
    (first / "result.json").write_text(json.dumps(result))
    _refused(bundle, "figures.accuracy", "not in [0, 1]")


@pytest.mark.parametrize("margin", [math.nan, -5.0, math.inf, 0.0])
def test_a_margin_that_is_not_finite_and_positive_is_refused(exported: Path, tmp_path: Path, margin: float) -> None:
    bundle, manifest, _ = _copy(exported, tmp_path)
    manifest["equivalence"] = {"accuracy": margin}
    _write_manifest(bundle, manifest)
    _refused(bundle, "manifest.equivalence.accuracy", "finite number > 0")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cells": "everything"}, "manifest.cells"),
        ({"cells": [{"run_id": 3}]}, "manifest.cells.0"),
        ({"suite": ["smoke"]}, "manifest.suite"),
        ({"equivalence": {"accuracy": "tight"}}, "manifest.equivalence.accuracy"),
    ],
)
def test_a_manifest_of_the_wrong_types_is_an_input_error_naming_the_field(
    exported: Path, tmp_path: Path, change: dict, field: str
) -> None:
    bundle, manifest, _ = _copy(exported, tmp_path)
    manifest.update(change)
    _write_manifest(bundle, manifest)
    _refused(bundle, field)


def test_a_damaged_human_study_is_an_input_error(exported: Path, tmp_path: Path) -> None:
    bundle, _, _ = _copy(exported, tmp_path)
    (bundle / "human").mkdir(exist_ok=True)
    (bundle / "human" / "0000-x.json").write_text("{not json")
    _refused(bundle, "0000-x.json", "damaged")
