"""The seed paper's protocol as suites: `paper` planned and checked offline (--dry-run), `paper-tiny` run end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import xbench_here
from xbench.core.suite import SUITES_DIR

OFFLINE = {"XBENCH_OFFLINE": "1"}


def test_paper_dry_run_lists_its_cells_and_names_what_it_cannot_reach_offline(tmp_path: Path) -> None:
    result = xbench_here("run", "suite", "paper", "--dry-run", cwd=tmp_path, env=OFFLINE)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "21 cells = 1 model(s) × 7 CR(s) × 1 explainer(s) × 3 seed(s)" in result.stdout
    assert "CR 2 → 4 → 8 → 16 → 32 → 64" in result.stdout and "correct_under_all, 50 per class" in result.stdout
    assert "imagenette2.tgz" in result.stderr and "vgg16.tv_in1k" in result.stderr
    assert "dataset:" in result.stderr and "models[0].pretrained:" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_paper_tiny_dry_run_passes(tmp_path: Path) -> None:
    result = xbench_here("run", "suite", "paper-tiny", "--dry-run", cwd=tmp_path, env=OFFLINE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "work: 3 trainings, 18 pruning steps, 1 eval selections, 21 cells" in result.stdout


@pytest.mark.slow
def test_paper_tiny_runs_the_protocol_end_to_end_and_the_page_shows_the_replication_table(tmp_path: Path) -> None:
    """The shipped suite with two of its three seeds: the protocol (training, iterative pruning CR 2 -> 64 with
    fine-tuning, one eval selection for every variant, the replication table) is the same, in two thirds of the time;
    `--dry-run` of the suite as shipped is tested above."""
    suite = yaml.safe_load((SUITES_DIR / "paper-tiny.yaml").read_text())
    suite["seeds"] = [0, 1]
    suite["reference"] = "merkle2025"  # the page's replication table (the figures are not comparable: shapes)
    path = tmp_path / "paper-tiny.yaml"
    path.write_text(yaml.safe_dump(suite))
    xbench_here(
        "run",
        "suite",
        str(path),
        "--cache-dir",
        str(tmp_path / "cache"),
        cwd=tmp_path,
        check=True,
        env={"XBENCH_CACHE_DIR": str(tmp_path / "cache")},
    )
    records = json.loads(xbench_here("export", "--suite", "paper-tiny", cwd=tmp_path, check=True).stdout)
    assert len(records) == 14  # 7 CRs x 2 seeds
    assert sorted({r["compression_rate"] for r in records}) == [1, 2, 4, 8, 16, 32, 64]
    selected = {r["eval_selected"] for r in records}
    assert len(selected) == 1 and 1 <= selected.pop() <= 16  # 2 per class of 8, the same for every cell
    for record in records:
        assert record["eval_candidates"] == 48 and record["eval_qualified"] >= record["eval_selected"]
        assert 0 < record["attribution_localisation"] <= 1
    xbench_here(
        "leaderboard", "build", "--suite", "paper-tiny", "--out", str(tmp_path / "site"), cwd=tmp_path, check=True
    )
    page = (tmp_path / "site" / "suite-paper-tiny.html").read_text()
    assert "Replication of merkle2025" in page
    table = page[page.index('id="replication"') : page.index('id="provenance"')]
    assert table.count("<tr><td") == 7
    # each CR's row shows the published figure of that CR (the reference file's, in its own unit), and our value
    from xbench.core.references import load_reference

    published = load_reference("merkle2025").by_compression_rate
    shown = dict(re.findall(r"<td>(\d+)</td><td>([^<]+)</td>", table))
    assert set(shown) == set(published)
    assert all(float(shown[rate]) == pytest.approx(value, abs=0.06) for rate, value in published.items())
