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
    # Byte for byte the same site, but for where the front page says the results came from.
    assert _same_tree(tmp_path / "from-store", tmp_path / "from-bundle") == ["index.html"]
    from_store = (
        (tmp_path / "from-store" / "index.html").read_text().replace(f"sqlite:///{smoke_run / 'xbench.db'}", "X")
    )
    from_bundle = (tmp_path / "from-bundle" / "index.html").read_text().replace(f"bundle {bundle}", "X")
    assert from_store.replace(from_store[from_store.index("Built ") :], "") == from_bundle.replace(
        from_bundle[from_bundle.index("Built ") :], ""
    )

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
    assert gate_store.returncode == 0 and "0 regressed" in gate_store.stderr, gate_store.stderr  # the committed gate
    assert gate_bundle.returncode == 0 and gate_bundle.stderr == gate_store.stderr

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


def test_bundles_from_several_people_merge_into_one_site_each_with_its_provenance_never_ranked_across_protocols(
    smoke_run: Path, tmp_path: Path
) -> None:
    import re
    import shutil

    ours = tmp_path / "ours"
    xbench_here("export", "--suite", "smoke", "--bundle", str(ours), cwd=smoke_run, check=True)
    theirs = (
        tmp_path / "theirs"
    )  # another lab's run of another suite: smoke renamed, one cell's timing protocol changed
    shutil.copytree(ours, theirs)
    manifest = json.loads((theirs / "manifest.json").read_text())
    manifest["suite"] = "smoke-lab-b"
    (theirs / "manifest.json").write_text(json.dumps(manifest))
    cell = theirs / "cells" / manifest["cells"][0]["run_id"] / "result.json"
    result = json.loads(cell.read_text())
    result["cell"]["perf"]["repeats"] += 1
    cell.write_text(json.dumps(result))
    same = tmp_path / "same"  # the same suite from a third source, under our protocol
    shutil.copytree(ours, same)
    site = tmp_path / "site"
    built = xbench_here(
        "leaderboard",
        "build",
        "--from",
        str(ours),
        "--from",
        str(theirs),
        "--from",
        str(same),
        "--out",
        str(site),
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    index = (site / "index.html").read_text()
    answers = re.findall(r'<p class="answer"><strong>On ([^,]+),', index)
    assert answers == ["smoke", "smoke-lab-b", "smoke"]
    for source in (ours, theirs, same):
        assert f"bundle {source}" in index  # each sentence and each suite row says where it came from
    protocols = re.findall(r"protocol <code>([0-9a-f]+)</code>", index)
    assert protocols[0] == protocols[2] != protocols[1]  # a changed cell is another protocol
    note = re.search(r'<p class="protocol-note">(.*?)</p>', index, re.S)
    assert note is not None and "<code>perf.repeats</code>" in note.group(1)  # the field that differs, named
    assert f"<code>{protocols[1]}</code> (smoke-lab-b)" in note.group(1)
    assert {p.name for p in site.glob("suite-*.html")} == {
        "suite-smoke-1.html",
        "suite-smoke-2.html",
        "suite-smoke-lab-b.html",
    }
    ranks = re.findall(r'<tr><td data-value="(\d+)">', index[index.index('id="ranking"') :])
    assert len(ranks) == 6 and sorted(ranks[:2]) == sorted(ranks[2:4]) == sorted(ranks[4:])  # each suite ranked alone

    damaged = tmp_path / "damaged"
    shutil.copytree(ours, damaged)
    next((damaged / "cells").rglob("gallery_images.npy")).write_bytes(b"not an array")
    refused = xbench_here(
        "leaderboard",
        "build",
        "--from",
        str(ours),
        "--from",
        str(damaged),
        "--out",
        str(tmp_path / "no-site"),
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and f"refused bundle {damaged}" in refused.stderr
    assert not (tmp_path / "no-site").exists()
