"""The built leaderboard in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

The browser is installed here with apt-get when the test runs as root and it is missing; otherwise the tests skip and
say why. The screenshot is kept in test-artifacts/ (CI uploads it).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, xbench_here
from xbench.present.leaderboard import build
from xbench.present.loading import SuiteResults, suite_filename

ARTIFACTS = Path(os.environ.get("XBENCH_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.fixture(scope="module")
def smoke_site(smoke_run: Path) -> Path:
    xbench_here("leaderboard", "build", "--out", "site", cwd=smoke_run, check=True)
    return smoke_run / "site"


def _console_errors(driver: object) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _non_blank(png: bytes) -> float:
    """Share of pixels that are not (near) white."""
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    return float((pixels.min(axis=-1) < 0.9).mean())


@pytest.mark.slow
def test_leaderboard_loads_sorts_and_draws_in_chromium(browser: object, smoke_site: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get((smoke_site / "index.html").as_uri())
    assert _console_errors(browser) == []
    browser.find_element(By.LINK_TEXT, "smoke").click()
    assert browser.current_url.endswith(suite_filename("smoke"))
    assert _console_errors(browser) == []

    table = browser.find_element(By.CSS_SELECTOR, "h2#cells ~ table.cells")
    header = next(th for th in table.find_elements(By.TAG_NAME, "th") if th.text.startswith("pixel_flipping"))
    column = table.find_elements(By.TAG_NAME, "th").index(header)

    def column_values() -> list[float]:
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        return [float(row.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-value")) for row in rows]

    before = column_values()
    header.click()
    ascending = column_values()
    header.click()
    descending = column_values()
    assert ascending == sorted(before) and descending == sorted(before, reverse=True)
    assert ascending != before or descending != before  # the rows really moved

    chart = browser.find_element(By.CSS_SELECTOR, "#curves ~ div.charts svg.chart")
    assert chart.find_elements(By.TAG_NAME, "polyline")
    assert _non_blank(chart.screenshot_as_png) > 0.01
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(ARTIFACTS / "leaderboard-smoke.png"))
    assert _non_blank((ARTIFACTS / "leaderboard-smoke.png").read_bytes()) > 0.02


@pytest.mark.slow
def test_names_from_the_store_render_as_text_in_chromium(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    evil = "<script>document.title='pwned'</script>"
    record = {
        "run_id": "r1",
        "model": evil,
        "pruning_method": "none",
        "compression_rate": 1.0,
        "explainer": "saliency",
        "accuracy": 0.9,
        "sparseness": 0.5,
        "metric_directions": {"sparseness": "higher"},
        "device": "cpu",
        "start_time": 0,
        "provenance": {},
    }
    build([SuiteResults("evil<b>", [record], {"r1": {"sparseness": np.array([0.4, 0.6])}})], tmp_path)
    browser.get((tmp_path / suite_filename("evil<b>")).as_uri())
    assert browser.title != "pwned"
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # the page's own
    assert evil in browser.find_element(By.CSS_SELECTOR, "h2#cells ~ table.cells").text
    assert _console_errors(browser) == []


@pytest.mark.slow
def test_the_front_page_answers_ranks_sorts_filters_and_links_to_its_evidence_in_chromium(
    browser: object, smoke_site: Path
) -> None:
    """The first screen holds the answer sentence and the ranking; a heading sorts it, the labelled filter narrows
    it, the answer's evidence link opens the suite page at its safe-compression table. Screenshot kept."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(1400, 900)
    browser.get((smoke_site / "index.html").as_uri())
    assert _console_errors(browser) == []
    sentence = browser.find_element(By.CSS_SELECTOR, "p.answer strong")
    table = browser.find_element(By.CSS_SELECTOR, "table.ranking")
    height = browser.execute_script("return window.innerHeight")
    assert sentence.text.startswith("On smoke,") and sentence.location["y"] < height
    assert table.location["y"] < height  # the ranking starts on the first screen
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "leaderboard-front.png"))
    assert _non_blank((ARTIFACTS / "leaderboard-front.png").read_bytes()) > 0.02

    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    change = next(th for th in headers if th.text.startswith("area kept"))
    column = headers.index(change)

    def values() -> list[float]:
        rows = [r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
        return [float(r.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-value")) for r in rows]

    change.click()
    assert values() == sorted(values())
    change.click()
    assert values() == sorted(values(), reverse=True) and len(values()) == 2  # smoke: Grad-CAM and Saliency

    label = browser.find_element(By.CSS_SELECTOR, "label[for='ranking-filter']")
    box = browser.find_element(By.ID, "ranking-filter")
    assert label.text and box.get_attribute("id") == label.get_attribute("for")
    box.send_keys("saliency")
    shown = [r.text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
    assert len(shown) == 1 and "Saliency" in shown[0]

    browser.find_element(By.CSS_SELECTOR, "p.answer a").click()
    assert browser.current_url.endswith(suite_filename("smoke") + "#safe")
    assert browser.find_element(By.ID, "safe").is_displayed() and _console_errors(browser) == []
