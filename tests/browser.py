"""Headless Chromium for the page tests: Debian's chromium + chromium-driver, driven by selenium.

The browser is installed here with apt-get when the tests run as root and it is missing; otherwise the tests skip and
say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


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
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--window-size=1600,2400",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    yield driver
    driver.quit()
