import re
from pathlib import Path

import numpy as np
import pytest

from xbench.leaderboard import (
    SuiteResults,
    bootstrap_ci,
    build,
    kendall_tau,
    pareto_front,
    suite_filename,
    sweet_spots,
)

PNG = bytes.fromhex("89504e470d0a1a0a")  # enough of a PNG for the page to embed


def record(model: str, rate: float, explainer: str, accuracy: float, **scores: float) -> dict:
    return {
        "run_id": f"{model}-{rate}-{explainer}",
        "cell_key": f"{model}-{rate}-{explainer}",
        "model": model,
        "pruning_method": "none" if rate == 1 else "magnitude",
        "compression_rate": float(rate),
        "compression_rate_model": float(rate),
        "explainer": explainer,
        "accuracy": accuracy,
        **scores,
        "metric_directions": {"sparseness": "higher", "pixel_flipping": "lower"},
        "device": "cpu",
        "start_time": 1_700_000_000_000,
        "provenance": {"xbench": "0.1.0", "torch": "2.14.1", "git_sha": "abc123"},
    }


def study(model: str = "resnet18") -> SuiteResults:
    records = [
        record(model, 1, "saliency", 0.90, sparseness=0.50, pixel_flipping=2.0),
        record(model, 2, "saliency", 0.895, sparseness=0.60, pixel_flipping=1.5),  # within 1 point, better
        record(model, 4, "saliency", 0.85, sparseness=0.70, pixel_flipping=1.0),  # better, but too inaccurate
        record(model, 1, "gradcam", 0.90, sparseness=0.40, pixel_flipping=1.0),
        record(model, 2, "gradcam", 0.895, sparseness=0.30, pixel_flipping=3.0),
        record(model, 4, "gradcam", 0.85, sparseness=0.20, pixel_flipping=4.0),
    ]
    per_image = {r["run_id"]: {"sparseness": np.full(8, r["sparseness"]) + np.linspace(-0.1, 0.1, 8)} for r in records}
    gallery = {r["run_id"]: {"gallery_overlay.png": PNG, "gallery_occlusion.png": PNG} for r in records}
    return SuiteResults("demo", records, per_image, gallery)


def test_sweet_spot_is_the_best_cr_within_the_accuracy_drop() -> None:
    spots = {(s.explainer, s.metric): s for s in sweet_spots(study(), max_accuracy_drop=0.01)}
    assert spots[("saliency", "sparseness")].best_rate == 2 and spots[("saliency", "sparseness")].beats_dense
    assert spots[("saliency", "pixel_flipping")].best_rate == 2  # CR 4 is lower (better) but loses 5 points
    assert not spots[("gradcam", "sparseness")].beats_dense and spots[("gradcam", "sparseness")].best_rate == 1
    loose = {(s.explainer, s.metric): s for s in sweet_spots(study(), max_accuracy_drop=0.1)}
    assert loose[("saliency", "pixel_flipping")].best_rate == 4


def test_pareto_front_keeps_only_non_dominated_points() -> None:
    assert pareto_front([(1, 1), (2, 0), (0, 2), (0.5, 0.5), (1, 1)]) == [True, True, True, False, True]


def test_kendall_tau_agreement_and_reversal() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == (pytest.approx(1.0), 4)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)
    assert np.isnan(kendall_tau([1, None, 3], [1, 2, None])[0])  # fewer than 3 cells scored by both


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_images() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=10), rng.normal(size=1000)
    low, high = bootstrap_ci(small)
    assert low < small.mean() < high
    assert np.subtract(*bootstrap_ci(large)[::-1]) < high - low
    assert np.isnan(bootstrap_ci(np.array([1.0, np.nan]))[0])


def test_site_has_every_section_and_is_self_contained(tmp_path: Path) -> None:
    index = build([study()], tmp_path)
    page = (tmp_path / suite_filename("demo")).read_text()
    for section in ("id='cells'", "id='curves'", "id='pareto'", "id='sweet-spot'", "id='agreement'", "id='gallery'",
                    "id='provenance'"):  # fmt: skip
        assert section in page
    assert "sparseness ↑" in page and "pixel_flipping ↓" in page
    assert "compression rate (log scale)" in page and "<polyline" in page and "Pareto-optimal" in page
    assert "class='best'" in page and "class='ci'" in page and "data:image/png;base64," in page
    assert "2.14.1" in page and "abc123" in page
    assert "href='suite-demo.html'" in index.read_text()
    for text in (page, index.read_text()):
        assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)  # no CDN, nothing fetched


def test_every_string_from_the_store_is_escaped(tmp_path: Path) -> None:
    evil = SuiteResults("demo<b>", [
        record("<script>alert(1)</script>", 1, "<img src=x onerror=alert(2)>", 0.9, sparseness=0.5, pixel_flipping=1.0),
        record("<script>alert(1)</script>", 2, "<img src=x onerror=alert(2)>", 0.9, sparseness=0.6, pixel_flipping=2.0),
    ])  # fmt: skip
    build([evil], tmp_path)
    for path in tmp_path.glob("*.html"):
        page = path.read_text()
        assert "<script>alert(1)</script>" not in page and "<img src=x" not in page
    page = (tmp_path / suite_filename("demo<b>")).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "demo&lt;b&gt;" in page
