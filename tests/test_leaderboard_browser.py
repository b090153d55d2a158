"""The built leaderboard in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

The browser is installed here with apt-get when the test runs as root and it is missing; otherwise the tests skip and
say why. The screenshot is kept in test-artifacts/ (CI uploads it).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, xbench
from xbench.leaderboard import SuiteResults, build, suite_filename

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("XBENCH_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def _ensure_chromium() -> str | None:
    """None when Chromium and its driver are there (installing them if we may), else why not."""
    if CHROMIUM.exists() and DRIVER.exists():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "Chromium is not installed and this user cannot apt-get it (apt-get install chromium chromium-driver)"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"]
    for command in (["apt-get", "update", "-qq"], install):
        result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=900)
        if result.returncode != 0:
            return f"could not install Chromium ({' '.join(command)}): {result.stderr.strip()[-300:]}"
    return None if CHROMIUM.exists() and DRIVER.exists() else "apt-get ran but /usr/bin/chromium is still missing"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    reason = _ensure_chromium()
    if reason:
        pytest.skip(reason)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--window-size=1600,2400"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def smoke_site(smoke_run: Path) -> Path:
    xbench("leaderboard", "build", "--out", "site", cwd=smoke_run, check=True)
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
        "run_id": "r1", "model": evil, "pruning_method": "none", "compression_rate": 1.0, "explainer": "saliency",
        "accuracy": 0.9, "sparseness": 0.5, "metric_directions": {"sparseness": "higher"}, "device": "cpu",
        "start_time": 0, "provenance": {},
    }  # fmt: skip
    build([SuiteResults("evil<b>", [record], {"r1": {"sparseness": np.array([0.4, 0.6])}})], tmp_path)
    browser.get((tmp_path / suite_filename("evil<b>")).as_uri())
    assert browser.title != "pwned"
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # the page's own
    assert evil in browser.find_element(By.CSS_SELECTOR, "h2#cells ~ table.cells").text
    assert _console_errors(browser) == []
