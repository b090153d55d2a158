import re
from pathlib import Path

import numpy as np
import pytest

from tests import factories
from xbench.analyse.findings import sweet_spots
from xbench.analyse.orderings import kendall_tau, pareto_front
from xbench.analyse.stats import suite_stats
from xbench.present.leaderboard import build
from xbench.present.loading import SuiteResults, suite_filename
from xbench.present.tables import readable

PNG = bytes.fromhex("89504e470d0a1a0a")  # enough of a PNG for the page to embed
IMAGES = 40


def record(
    model: str,
    rate: float,
    explainer: str,
    seed: int,
    accuracy: float | None = None,
    attribution_tie_share: float | None = None,
    **scores: float | np.ndarray,
) -> dict:
    """A cell's record, from a typed result (per-image scores, or one value standing for all images)."""
    figures = {"params_nonzero": 4_930_000 / rate, "flops_dense": 179e6, "compression_rate_model": float(rate)}
    if accuracy is not None:
        figures["accuracy"] = float(accuracy)
    if attribution_tie_share is not None:
        figures["attribution_tie_share"] = attribution_tie_share
    result = factories.cell_result(
        model,
        rate,
        explainer,
        seed,
        scores={name: np.atleast_1d(values) for name, values in scores.items()},
        higher_is_better={"sparseness": True, "pixel_flipping": False},
        figures=figures,
    )
    return factories.record(result, "demo", provenance={"xbench": "0.1.0", "torch": "2.14.1", "git_sha": "abc123"})


# (explainer, CR) -> planted shift of sparseness; accuracy per CR
SPARSENESS_SHIFT = {("saliency", 2): 0.3, ("saliency", 4): 0.4, ("gradcam", 2): 0.0, ("gradcam", 4): 0.0}
ACCURACY = {1: 0.9, 2: 0.9, 4: 0.5}


def study(model: str = "resnet18", seeds: tuple[int, ...] = (0, 1, 2)) -> SuiteResults:
    """Saliency's sparseness improves at CR 2 (accuracy kept) and more at CR 4 (accuracy lost); Grad-CAM's does not
    change."""
    rng = np.random.default_rng(0)
    records, per_image = [], {}
    for seed in seeds:
        for explainer in ("saliency", "gradcam"):
            for rate in (1, 2, 4):
                sparseness = 0.5 + rng.normal(0, 0.1, IMAGES) + SPARSENESS_SHIFT.get((explainer, rate), 0.0)
                flipping = 2.0 + rng.normal(0, 0.5, IMAGES)
                correct = (np.arange(IMAGES) < ACCURACY[rate] * IMAGES).astype(float)
                r = record(
                    model,
                    rate,
                    explainer,
                    seed,
                    accuracy=correct.mean(),
                    sparseness=sparseness,
                    pixel_flipping=flipping,
                    attribution_tie_share=0.25,
                )
                records.append(r)
                per_image[r["run_id"]] = {"sparseness": sparseness, "pixel_flipping": flipping, "correct": correct}
    gallery = {r["run_id"]: {"gallery_overlay.png": PNG, "gallery_occlusion.png": PNG} for r in records}
    return SuiteResults("demo", records, per_image, gallery)


def test_a_sweet_spot_needs_a_significant_gain_and_an_accuracy_drop_bounded_by_its_ci() -> None:
    results = study()
    stats = suite_stats(results.records, results.per_image)
    # CR 2 changes no prediction of the 40 images, but that bounds its accuracy drop only to about 0.1 (the count
    # model's Wilson bound on the share that could change): a drop within 1 point cannot be shown
    strict = {(s.explainer, s.metric): s for s in sweet_spots(stats, 0.01)}
    assert not strict[("saliency", "sparseness")].found
    assert "may exceed 0.01" in strict[("saliency", "sparseness")].note
    spots = {(s.explainer, s.metric): s for s in sweet_spots(stats, 0.2)}
    saliency = spots[("saliency", "sparseness")]
    assert saliency.found and saliency.best.compression_rate == 2  # CR 4 gains more but loses 40 points
    assert 0.05 < saliency.accuracy.ci_high < 0.2 and saliency.accuracy.mean_diff == 0
    assert "no detectable improvement" in spots[("gradcam", "sparseness")].note
    loose = sweet_spots(suite_stats(results.records, results.per_image), 0.6)
    assert next(s for s in loose if (s.explainer, s.metric) == ("saliency", "sparseness")).best.compression_rate == 4


def test_pareto_front_keeps_only_non_dominated_points() -> None:
    assert pareto_front([(1, 1), (2, 0), (0, 2), (0.5, 0.5), (1, 1)]) == [True, True, True, False, True]


def test_kendall_tau_agreement_and_reversal() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == (pytest.approx(1.0), 4)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)
    assert np.isnan(kendall_tau([1, None, 3], [1, 2, None])[0])  # fewer than 3 cells scored by both


def test_numbers_are_formatted_for_reading() -> None:
    assert readable(4_930_000, " ") == "4.93 M "
    assert readable(179e6, "FLOPs") == "179 MFLOPs" and readable(1.82e9, "FLOPs") == "1.82 GFLOPs"
    assert readable(0.912345) == "0.912" and readable(None) == "–" and readable(float("nan")) == "–"


def test_site_has_every_section_and_is_self_contained(tmp_path: Path) -> None:
    index = build([study()], tmp_path)
    page = (tmp_path / suite_filename("demo")).read_text()
    for section in ("effects", "sweet-spot", "cells", "curves", "pareto", "agreement", "gallery", "provenance"):
        assert f'id="{section}"' in page
    assert "sparseness ↑" in page and "pixel_flipping ↓" in page
    assert "compression rate (log scale)" in page and "<polyline" in page and 'class="band"' in page
    assert "Pareto-optimal" in page and "crossed-design t" in page and "Holm" in page
    assert 'id="safe"' in page and "Safe compression" in page
    assert "verdict-better best" in page and 'class="ci"' in page and "data:image/png;base64," in page
    assert "4.93 M" in page and "179 MFLOPs" in page and "seed stability" in page
    # accuracy at CR 2 changes no prediction of 40 images: undecided (a count bound, not certainty), never equivalent
    assert "undecided" in page and "equivalent (within the margin)" not in page and "One seed." not in page
    assert "2.14.1" in page and "abc123" in page
    assert 'href="suite-demo.html"' in index.read_text()
    for text in (page, index.read_text()):
        assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)  # no CDN, nothing fetched


def test_a_single_seed_page_says_its_tests_are_within_one_trained_model(tmp_path: Path) -> None:
    build([study(seeds=(0,))], tmp_path)
    assert "within one trained model" in (tmp_path / suite_filename("demo")).read_text()


def test_every_string_from_the_store_is_escaped(tmp_path: Path) -> None:
    evil = SuiteResults(
        "demo<b>",
        [
            record(
                "<script>alert(1)</script>",
                1,
                "<img src=x onerror=alert(2)>",
                0,
                accuracy=0.9,
                sparseness=0.5,
                pixel_flipping=1.0,
            ),
            record(
                "<script>alert(1)</script>",
                2,
                "<img src=x onerror=alert(2)>",
                0,
                accuracy=0.9,
                sparseness=0.6,
                pixel_flipping=2.0,
            ),
        ],
    )
    build([evil], tmp_path)
    for path in tmp_path.glob("*.html"):
        page = path.read_text()
        assert "<script>alert(1)</script>" not in page and "<img src=x" not in page
    page = (tmp_path / suite_filename("demo<b>")).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "demo&lt;b&gt;" in page


def test_the_page_links_cells_to_their_mlflow_runs_when_given_the_ui_address(tmp_path: Path) -> None:
    results = study()
    results.experiment_id = "7"
    build([results], tmp_path, mlflow_url="http://127.0.0.1:5000")
    page = (tmp_path / suite_filename("demo")).read_text()
    links = re.findall(r'class="mlflow-run" href="([^"]+)"', page)
    assert len(links) == len(results.records)  # one per cell run: every seed of every cell
    assert "http://127.0.0.1:5000/#/experiments/7/runs/resnet18-cr1-saliency-s0?workflowType=machine_learning" in links
    assert 'class="mlflow-suite" href="http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"' in page
    build([study()], tmp_path / "plain")  # without --mlflow-url: no links
    assert "mlflow-run" not in (tmp_path / "plain" / suite_filename("demo")).read_text()


def test_safe_compression_heads_the_page_with_its_evidence_one_click_away(tmp_path: Path) -> None:
    build([study()], tmp_path, max_accuracy_drop=0.05)
    page = (tmp_path / suite_filename("demo")).read_text()
    safe = page[page.index('id="safe"') : page.index('id="effects"')]
    # CR 2 changes no prediction of the 40 images, which bounds its accuracy drop only to about 0.1 (> 0.05): the
    # ladder fails at CR 2 for accuracy, and CR 4 (accuracy 0.9 -> 0.5) is not tested
    assert "resnet18" in safe and "CR 2 ✗" in safe and "CR 4 not tested" in safe
    assert re.search(r"CR 2 blocked by [^<]*accuracy \(not shown within its margin\)", safe)
    anchors = re.findall(r'href="#(cmp-[^"]+)"', safe)
    assert anchors and all(f'id="{anchor}"' in page for anchor in anchors)  # each blocker links to its row


def test_a_reference_file_that_does_not_match_the_schema_is_an_input_error_naming_it(tmp_path: Path) -> None:
    from xbench.core.errors import XbenchInputError
    from xbench.core.references import load_reference

    bad = tmp_path / "mine.json"
    bad.write_text('{"name": "mine", "title": "t", "figure": "accuracy", "label": "acc", "by_compression_rate": 3}')
    with pytest.raises(XbenchInputError) as error:
        load_reference(str(bad))
    assert str(bad) in str(error.value) and "by_compression_rate" in str(error.value)
    assert error.value.field == "reference"


def test_a_comparison_with_fewer_seeds_than_the_suite_is_marked_on_the_page(tmp_path: Path) -> None:
    results = study()
    results.records = [r for r in results.records if not (r["seed"] == 2 and r["compression_rate"] == 4.0)]
    build([results], tmp_path)
    page = (tmp_path / suite_filename("demo")).read_text()
    assert "use fewer seeds than the" in page and page.count("2 ⚠") >= 3  # saliency and gradcam metrics, accuracy


def test_pruning_methods_share_a_panel_only_when_their_rates_count_the_same_thing(tmp_path: Path) -> None:
    """magnitude and lrp (CR of the conv weights) side by side; channel_magnitude (CR of the whole model) apart."""
    records, per_image = _three_methods()
    build([SuiteResults("methods", records, per_image, {})], tmp_path)
    page = (tmp_path / suite_filename("methods")).read_text()
    section = page[page.index('id="methods"') : page.index('id="pareto"')]
    assert "CR of the scope" in section and "CR of the model" not in section
    assert ">magnitude<" in section and ">lrp<" in section and "channel_magnitude" not in section
    assert section.count("<svg") == 2  # accuracy and sparseness for resnet18 · saliency
    # a method this process does not know is placed by the figure its requested rates match
    renamed = [
        {**r, "pruning_method": "my_channels"} if r["pruning_method"] == "channel_magnitude" else r for r in records
    ]
    renamed += [
        {**r, "pruning_method": "my_other_channels", "run_id": f"{r['run_id']}-b"}
        for r in renamed
        if r["pruning_method"] == "my_channels"
    ]
    per_image.update(
        {f"{r['run_id']}-b": per_image[r["run_id"]] for r in records if r["pruning_method"] == "channel_magnitude"}
    )
    build([SuiteResults("methods", renamed, per_image, {})], tmp_path / "plugins")
    page = (tmp_path / "plugins" / suite_filename("methods")).read_text()
    section = page[page.index('id="methods"') : page.index('id="pareto"')]
    assert "CR of the model" in section and ">my_channels<" in section
    single = study()
    build([single], tmp_path / "one")
    assert 'id="methods"' not in (tmp_path / "one" / suite_filename("demo")).read_text()


def test_the_pages_import_no_torch_and_read_what_a_rate_counts_from_the_records(tmp_path: Path) -> None:
    """Built in a fresh process from plain records (three methods, so the methods view asks what each CR counts):
    torch is never imported; the recorded `compression_rate_counts` wins over what the figures suggest."""
    import json
    import subprocess
    import sys

    records, per_image = _three_methods()
    for r in records:  # the record says lrp's rates count the whole model, whatever its figures say
        if r["pruning_method"] == "lrp":
            r["compression_rate_counts"] = "the whole model"
    plain = tmp_path / "records.json"
    plain.write_text(
        json.dumps(
            {"records": records, "per_image": {k: {n: a.tolist() for n, a in v.items()} for k, v in per_image.items()}}
        )
    )
    script = f"""
import json, sys
import numpy as np
from pathlib import Path
from xbench.present.leaderboard import build
from xbench.present.loading import SuiteResults
data = json.loads(Path({str(plain)!r}).read_text())
per_image = {{k: {{n: np.asarray(a) for n, a in v.items()}} for k, v in data["per_image"].items()}}
build([SuiteResults("methods", data["records"], per_image, {{}})], Path({str(tmp_path / "site")!r}))
assert "torch" not in sys.modules, "the pages imported torch"
"""
    built = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    page = (tmp_path / "site" / suite_filename("methods")).read_text()
    section = page[page.index('id="methods"') : page.index('id="pareto"')]
    assert ">lrp<" in section and "channel_magnitude" in section and ">magnitude<" not in section


def _three_methods() -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(1)
    records, per_image = [], {}
    for seed in (0, 1, 2):
        for method, basis in (("magnitude", "scope"), ("lrp", "scope"), ("channel_magnitude", "model")):
            for rate in (1, 2, 4):
                other = 1 + (rate - 1) * 0.4  # the figure the method's requested CR does not count
                figures = {
                    "compression_rate_scope": float(rate) if basis == "scope" else other,
                    "compression_rate_model": float(rate) if basis == "model" else other,
                }
                shift = 0.2 * np.log2(rate) if method == "lrp" else 0.0
                sparseness = 0.5 + shift + rng.normal(0, 0.05, IMAGES)
                result = factories.cell_result(
                    "resnet18",
                    rate,
                    "saliency",
                    seed,
                    scores={"sparseness": sparseness},
                    figures=figures,
                    method=method,
                )
                r = factories.record(result, "methods")
                if any(existing["run_id"] == r["run_id"] for existing in records):
                    continue  # the unpruned cell is one cell, whatever method follows it
                records.append(r)
                per_image[r["run_id"]] = {"sparseness": sparseness, "correct": np.ones(IMAGES)}
    return records, per_image
