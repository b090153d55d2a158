"""Results bundles: `export --bundle` then `--from DIR` reproduces what the store gives, page and figures alike."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, xbench_here

pytestmark = pytest.mark.slow  # end to end through the CLI: export, four readers, both sources


def _same_tree(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two folders (missing on one side, or different bytes)."""
    comparison = filecmp.dircmp(a, b)
    differing = [*comparison.left_only, *comparison.right_only, *comparison.diff_files, *comparison.funny_files]
    for name in comparison.common_files:
        if not filecmp.cmp(a / name, b / name, shallow=False):
            differing.append(name)
    for name in comparison.common_dirs:
        differing += [f"{name}/{p}" for p in _same_tree(a / name, b / name)]
    return sorted(set(differing))


def test_a_bundle_reproduces_the_store_built_page_stats_check_and_study(smoke_run: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "smoke-results"
    xbench_here("export", "--suite", "smoke", "--bundle", str(bundle), cwd=smoke_run, check=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == "xbench-results-bundle" and manifest["suite"] == "smoke"
    assert {"torch", "timm", "quantus"} <= set(manifest["library_versions"]) and len(manifest["cells"]) == 8
    for cell in manifest["cells"]:
        folder = bundle / "cells" / cell["run_id"]
        assert {"result.json", "scores.csv", "gallery_images.npy", "gallery_attributions.npy"} <= {
            p.name for p in folder.iterdir()
        }
    assert (bundle / "results.csv").read_text().count("\n") == 9

    # The leaderboard: byte for byte the same site.
    xbench_here(
        "leaderboard", "build", "--suite", "smoke", "--out", str(tmp_path / "from-store"), cwd=smoke_run, check=True
    )
    xbench_here(
        "leaderboard", "build", "--from", str(bundle), "--out", str(tmp_path / "from-bundle"), cwd=tmp_path, check=True
    )
    assert _same_tree(tmp_path / "from-store", tmp_path / "from-bundle") == []

    # The statistics: the same figures.
    from_store = xbench_here("stats", "--suite", "smoke", "--format", "json", cwd=smoke_run, check=True).stdout
    from_bundle = xbench_here(
        "stats", "--suite", "smoke", "--format", "json", "--from", str(bundle), cwd=tmp_path, check=True
    )
    assert json.loads(from_bundle.stdout) == json.loads(from_store)

    # The CI gate: the same verdict.
    baseline = str(ROOT / "leaderboard" / "baselines" / "smoke.json")
    gate_store = xbench_here("check", "--baseline", baseline, cwd=smoke_run)
    gate_bundle = xbench_here("check", "--baseline", baseline, "--from", str(bundle), cwd=tmp_path)
    assert gate_bundle.returncode == gate_store.returncode and gate_bundle.stdout == gate_store.stdout

    # A human study drawn from either: the same stimuli and manifest.
    for source, args, cwd in (("store", [], smoke_run), ("bundle", ["--from", str(bundle)], tmp_path)):
        xbench_here(
            "human",
            "export",
            "--suite",
            "smoke",
            "--out",
            str(tmp_path / f"study-{source}"),
            *args,
            cwd=cwd,
            check=True,
        )
    differing = _same_tree(tmp_path / "study-store", tmp_path / "study-bundle")
    assert [p for p in differing if p != "study.json"] == []  # study.json names where it was drawn from


def test_a_bundle_is_checked_before_it_is_read(smoke_run: Path, tmp_path: Path) -> None:
    not_a_bundle = tmp_path / "empty"
    not_a_bundle.mkdir()
    result = xbench_here("stats", "--suite", "smoke", "--from", str(not_a_bundle), cwd=tmp_path)
    assert result.returncode == 2 and "not a results bundle" in result.stderr
    bundle = tmp_path / "b"
    xbench_here("export", "--suite", "smoke", "--bundle", str(bundle), cwd=smoke_run, check=True)
    again = xbench_here("export", "--suite", "smoke", "--bundle", str(bundle), cwd=smoke_run)
    assert again.returncode == 2 and "not empty" in again.stderr
    wrong = xbench_here("stats", "--suite", "quick", "--from", str(bundle), cwd=tmp_path)
    assert wrong.returncode == 2 and "suites there: smoke" in wrong.stderr
    run_id = json.loads((bundle / "manifest.json").read_text())["cells"][0]["run_id"]
    (bundle / "cells" / run_id / "result.json").write_text("{damaged")
    damaged = xbench_here("stats", "--suite", "smoke", "--from", str(bundle), cwd=tmp_path)
    assert damaged.returncode == 2 and f"cells/{run_id}/result.json is missing or damaged" in damaged.stderr
