"""`xbench ui`: the link to a suite's runs in MLflow's model-training view, a UI that stops with its command, and the
link opened in a fresh headless Chromium showing the Runs view with the parent run and its nested cell runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.services import free_port
from xbench.store.links import run_url, runs_url, ui_base_url


def test_links_open_the_model_training_view() -> None:
    assert (
        runs_url("http://127.0.0.1:5000/", "3") == "http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning"
    )
    assert run_url("http://h:1", "3", "abc") == "http://h:1/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert ui_base_url("sqlite:///x.db") == "http://127.0.0.1:5000"
    assert ui_base_url("http://server:5000/") == "http://server:5000"  # a tracking server serves its own UI


def _group_alive(pgid: int) -> bool:
    listing = subprocess.run(["ps", "-eo", "pgid="], capture_output=True, text=True, check=True).stdout.split()
    return str(pgid) in listing


@contextmanager
def ui(workdir: Path, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`xbench ui` started as a user would; yields it and the line that says the UI is ready."""
    command = [sys.executable, "-m", "xbench", "ui", "--port", str(free_port()), *args]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:  # no time limit: a slow machine starts MLflow slowly
            if "MLflow UI on" in line:
                yield process, line
                break
        else:
            pytest.fail(f"xbench ui exited {process.wait()} before the UI answered")
    finally:
        if process.poll() is None:  # as a user's Ctrl-C would: `xbench ui` then stops the server it started
            process.send_signal(signal.SIGINT)
            process.wait()


@pytest.mark.slow
def test_sigterm_to_xbench_ui_leaves_no_mlflow_process(tmp_path: Path) -> None:
    with ui(tmp_path, "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}") as (process, line):
        assert "no suite results yet" in line
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True)
        (server,) = (int(pid) for pid in children.stdout.split())
        pgid = os.getpgid(server)
        assert pgid != os.getpgid(process.pid) and _group_alive(pgid)  # MLflow and its workers: their own group
        process.send_signal(signal.SIGTERM)
        assert process.wait() == 128 + signal.SIGTERM
        deadline_polls = 0
        while _group_alive(pgid) and deadline_polls < 100:  # the group was SIGKILLed on return: only reaping left
            time.sleep(0.1)
            deadline_polls += 1
        assert not _group_alive(pgid)


@pytest.mark.slow
def test_the_printed_link_opens_the_runs_view_with_parent_and_nested_cell_runs(smoke_run: Path, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with ui(smoke_run, "--suite", "smoke") as (_, line):
        link = line.split(": ", 2)[-1].split()[0]
        assert link.endswith("?workflowType=machine_learning") and "/#/experiments/" in link
        browser.get(link)  # the fixture's Chromium: a new, empty profile
        wait = WebDriverWait(browser, 120, poll_frequency=0.5)  # a ceiling for a hung page, not a speed claim
        parents = wait.until(lambda d: d.find_elements(By.XPATH, "//a[starts-with(normalize-space(.), 'smoke ')]"))
        assert "Traces 0" not in browser.find_element(By.TAG_NAME, "body").text  # not the GenAI overview
        assert browser.find_elements(By.XPATH, "//h2[normalize-space(.)='Runs'] | //*[normalize-space(text())='Runs']")
        expand = parents[0].find_element(
            By.XPATH, "./ancestor::span[contains(@class,'ag-cell-value')]//button"
        )  # the nested-runs toggle beside the parent's name
        expand.click()
        cells = wait.until(
            lambda d: [a.text for a in d.find_elements(By.CSS_SELECTOR, "a[href*='/runs/']") if "|" in a.text]
        )
        assert any("seed" in name and "CR" in name for name in cells), cells
        screenshots = Path(
            os.environ.get("XBENCH_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
        )
        screenshots.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(screenshots / "mlflow-runs.png"))
