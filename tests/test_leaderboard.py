import re
from pathlib import Path

from xbench.leaderboard import build


def record(model: str, accuracy: float) -> dict:
    return {
        "cell_key": model,
        "model": model,
        "pruning_method": "magnitude",
        "compression_rate": 2.0,
        "compression_rate_model": 1.8,
        "explainer": "saliency",
        "accuracy": accuracy,
        "sparseness": 0.5,
        "metric_directions": {"sparseness": "higher"},
        "device": "cpu",
        "start_time": 0,
    }


def test_page_is_self_contained_sortable_and_escapes_names(tmp_path: Path) -> None:
    index = build({"demo<b>": [record("<script>alert(1)</script>", 0.9), record("resnet18", 0.8)]}, tmp_path)
    page = index.read_text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "demo&lt;b&gt;" in page
    assert "sparseness ↑" in page and "table class='cells'" in page and "addEventListener('click'" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # no CDN, nothing fetched
    assert (tmp_path / "suite-demo_b_.json").exists()
