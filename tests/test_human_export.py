"""`xbench human export` from the smoke run: each stimulus is what its manifest row says it is, drawn from the raw
attributions the cell results kept; sides are randomised and recorded; bad options name the option."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import xbench_here
from xbench.human.study import build_study, render, side_by_side
from xbench.store.tracking import Store


@pytest.fixture(scope="module")
def pairwise(smoke_run: Path) -> tuple[Store, object]:
    store = Store(f"sqlite:///{smoke_run / 'xbench.db'}")
    study = build_study(store, "smoke", "pairwise", None, ["heatmap", "occlusion"], None, 0.1, 2, seed=3)
    return store, study


def test_each_pairwise_stimulus_shows_its_manifest_variants_on_their_sides(pairwise: tuple[Store, object]) -> None:
    store, study = pairwise
    assert study.pairs == [("CR 1", "CR 4")]
    real = [s for s in study.stimuli if not s.expected]
    assert len(real) == 4 * 2  # 4 kept images x 2 views x 1 pair
    by_label = {variant.label: variant for variant in study.variants}
    arrays = {
        label: store.arrays(v.run_id, ("gallery_images", "gallery_attributions")) for label, v in by_label.items()
    }
    for stimulus in real:
        pictures = []
        for label in (stimulus.left, stimulus.right):
            row = by_label[label].result.scored_images.index(stimulus.image_id)
            image = arrays[label]["gallery_images"][row].astype(np.float64) / 255
            pictures.append(render(image, arrays[label]["gallery_attributions"][row, 0], stimulus.view, 0.1))
        np.testing.assert_allclose(stimulus.pixels, side_by_side(*pictures))
        # and not the other way round: the two variants' explanations differ
        assert not np.allclose(stimulus.pixels, side_by_side(*pictures[::-1]))
    assert {s.left for s in real} == {"CR 1", "CR 4"}  # the less pruned variant is not always on one side
    checks = [s for s in study.stimuli if s.expected]
    assert len(checks) == 2 and {c.expected for c in checks} == {"left", "right"}
    for check in checks:  # the planted side is a blank grey panel
        width = (check.pixels.shape[1] - 12) // 2
        blank = check.pixels[:, width + 12 :] if check.expected == "left" else check.pixels[:, :width]
        assert np.allclose(blank, 0.5)


def test_export_writes_the_files_and_refuses_bad_options(smoke_run: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{smoke_run / 'xbench.db'}"
    xbench_here(
        "human",
        "export",
        "--suite",
        "smoke",
        "--tracking-uri",
        uri,
        "--base-url",
        "https://lab.example/s1",
        "--out",
        str(tmp_path / "study"),
        cwd=tmp_path,
        check=True,
    )
    study = tmp_path / "study"
    with (study / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["stimulus", "image_id", "class", "left", "right", "view", "expected", "study"]
    (study_id,) = {row["study"] for row in rows}
    assert all(row["stimulus"].startswith(f"{study_id}-s") for row in rows)  # every name carries the study id
    with (study / "mturk" / "input.csv").open(newline="") as handle:
        batch = [row["stimulus"] for row in csv.DictReader(handle)]
    assert batch == [f"https://lab.example/s1/{row['stimulus']}" for row in rows]
    page = (study / "study.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: no CDN, no server
    assert all(row["stimulus"] in page for row in rows)
    for option, value, message in [
        ("--design", "ranking", "pairwise or identify"),
        ("--pairs", "1:3", "no variant with compression rate 3"),
        ("--images", "99", "share 4 explained images"),
        ("--model", "vgg16", "is not in the suite"),
    ]:
        result = xbench_here(
            "human",
            "export",
            "--suite",
            "smoke",
            "--tracking-uri",
            uri,
            option,
            value,
            "--out",
            str(tmp_path / "bad"),
            cwd=tmp_path,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 2 and message in output and option in output
        assert not (tmp_path / "bad").exists()
    # an export into a folder that holds one already is refused, unless --force
    again = xbench_here(
        "human", "export", "--suite", "smoke", "--tracking-uri", uri, "--seed", "5", "--out", str(study), cwd=tmp_path
    )
    assert (
        again.returncode == 2 and "--out" in again.stdout + again.stderr and "not empty" in again.stdout + again.stderr
    )
    xbench_here(
        "human",
        "export",
        "--suite",
        "smoke",
        "--tracking-uri",
        uri,
        "--seed",
        "5",
        "--out",
        str(study),
        "--force",
        cwd=tmp_path,
        check=True,
    )
    with (study / "manifest.csv").open(newline="") as handle:
        new_rows = list(csv.DictReader(handle))
    assert {row["study"] for row in new_rows} != {study_id}  # another draw, another study
    assert sorted(p.name for p in (study / "stimuli").iterdir()) == sorted(row["stimulus"] for row in new_rows)
    # answers to the first export, analysed against the second's manifest: an input error, not a silent mismatch
    answers = tmp_path / "old-answers.csv"
    answers.write_text(
        "worker,stimulus,answer,milliseconds\n" + "".join(f"W1,{r['stimulus']},left,900\n" for r in rows)
    )
    mixed = xbench_here("human", "analyse", str(answers), "--manifest", str(study / "manifest.csv"), cwd=tmp_path)
    output = mixed.stdout + mixed.stderr
    assert mixed.returncode == 2 and study_id in output and "another export" in output
