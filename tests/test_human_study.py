"""The human-study round trip on a real suite: `xbench human export` from the smoke run, people (headless Chromium)
answering the offline study page, the downloaded answers read back by `xbench human analyse --suite`, the MLflow run
it logs, and the leaderboard's "People and metrics"; the MTurk template rendered and its field names read by default."""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import xbench_here

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the smoke run's store, so the human-study runs logged here stay out of the other tests' store."""
    workdir = tmp_path_factory.mktemp("human")
    shutil.copy(smoke_run / "xbench.db", workdir / "xbench.db")
    return workdir


def _manifest(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["stimulus"]: row for row in csv.DictReader(handle)}


def _answer_page(browser: object, page: Path, downloads: Path, worker: str, choose: object) -> Path:
    """Take the study page through every task, answering with `choose(stimulus)`, and download the answers."""
    from selenium.webdriver.common.by import By

    downloads.mkdir(parents=True, exist_ok=True)
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get(page.as_uri())
    browser.find_element(By.ID, "worker").send_keys(worker)
    browser.find_element(By.ID, "begin").click()
    answered = 0
    while browser.find_element(By.ID, "task").is_displayed():
        image = browser.find_element(By.ID, "stimulus")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
        value = choose(image.get_attribute("data-stimulus"))
        browser.find_element(By.CSS_SELECTOR, f'button.answer[data-answer="{value}"]').click()
        answered += 1
    browser.find_element(By.ID, "download").click()
    target = downloads / f"answers-{worker}.csv"
    for _ in range(600):  # the file appears when Chromium finishes writing it (a few kB: immediately)
        if target.exists() and target.stat().st_size > 0:
            break
        time.sleep(0.1)
    assert target.exists(), f"the page downloaded nothing into {downloads}: {list(downloads.iterdir())}"
    with target.open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == answered
    return target


def test_pairwise_round_trip_through_the_study_page(browser: object, store: Path) -> None:
    xbench_here(
        "human",
        "export",
        "--suite",
        "smoke",
        "--design",
        "pairwise",
        "--pairs",
        "1:4",
        "--out",
        "pairwise",
        cwd=store,
        check=True,
    )
    study = store / "pairwise"
    manifest = _manifest(study / "manifest.csv")
    real = {name: row for name, row in manifest.items() if not row["expected"]}
    assert len(real) == 4 and len(manifest) == 5  # 4 kept images x 1 pair, and one attention check
    assert {(row["left"], row["right"]) for row in real.values()} <= {("CR 1", "CR 4"), ("CR 4", "CR 1")}
    assert sorted((study / "stimuli").iterdir()) == sorted(study / "stimuli" / name for name in manifest)

    def prefer_cr1(stimulus: str) -> str:
        row = manifest[stimulus]
        return row["expected"] or ("left" if row["left"] == "CR 1" else "right")

    answers = [
        _answer_page(browser, study / "study.html", store / "downloads", worker, prefer_cr1) for worker in ("P1", "P2")
    ]
    combined = store / "answers.csv"
    combined.write_text(answers[0].read_text() + "".join(answers[1].read_text().splitlines(True)[1:]))
    output = xbench_here(
        "human",
        "analyse",
        str(combined),
        "--manifest",
        str(study / "manifest.csv"),
        "--suite",
        "smoke",
        "--format",
        "json",
        cwd=store,
        check=True,
    )
    report = json.loads(output.stdout)
    assert report["workers"] == 2 and report["answers"] == 8 and report["attention_check_answers"] == 2
    pair = report["pairs"][0]
    assert (pair["a"], pair["b"], pair["a_count"], pair["b_count"], pair["equal_count"]) == ("CR 1", "CR 4", 8, 0, 0)
    assert all(worker["check_accuracy"] == 1.0 for worker in report["per_worker"].values())
    assert report["alpha"] == pytest.approx(1.0)  # both workers gave the same answer to every stimulus
    metrics = {row["metric"] for row in report["agreement"]}
    assert {"sparseness", "complexity"} <= metrics
    for row in report["agreement"]:
        assert 0 <= row["ci_low"] <= row["agreement"] <= row["ci_high"] <= 1 and row["stimuli"] <= 4

    # logged to the suite's experiment, and on the leaderboard
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store / 'xbench.db'}")
    run = client.get_run(report["run_id"])
    assert run.data.params["design"] == "pairwise" and run.data.params["pairs"] == "CR 1:CR 4"
    assert run.data.metrics["human.CR 1 vs CR 4.prefer_a"] == 1.0
    again = json.loads(
        xbench_here(
            "human",
            "analyse",
            str(combined),
            "--manifest",
            str(study / "manifest.csv"),
            "--suite",
            "smoke",
            "--format",
            "json",
            cwd=store,
            check=True,
        ).stdout
    )
    assert again["run_id"] == report["run_id"]  # the same analysis is logged once
    artifacts = {a.path for a in client.list_artifacts(report["run_id"])}
    assert {"human_study.json", "manifest.csv", "answers.csv", "report.txt"} <= artifacts
    # worker ids leave the machine only as keyed pseudonyms; the key stays beside the raw file, private
    key_file = store / "answers.csv.pseudonym-key"
    assert key_file.is_file() and key_file.stat().st_mode & 0o077 == 0
    logged = Path(client.download_artifacts(report["run_id"], "answers.csv", str(store / "logged"))).read_text()
    logged_report = json.loads(
        Path(client.download_artifacts(report["run_id"], "human_study.json", str(store / "logged"))).read_text()
    )
    assert "P1" not in logged and "P2" not in logged and "w-" in logged
    assert all(worker.startswith("w-") for worker in logged_report["per_worker"])
    xbench_here("leaderboard", "build", "--suite", "smoke", "--out", "site", cwd=store, check=True)
    from selenium.webdriver.common.by import By

    browser.get((store / "site" / "suite-smoke.html").as_uri())
    section = browser.find_element(By.ID, "people")
    assert section.text == "People and metrics"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.agreement-human tbody tr")
    assert len(rows) == len(report["agreement"])
    human_rows = browser.find_elements(By.CSS_SELECTOR, "table.human tbody tr")
    assert "CR 1 vs CR 4" in human_rows[0].text and "people prefer CR 1" in human_rows[0].text


def test_identify_round_trip_through_the_study_page(browser: object, store: Path) -> None:
    xbench_here(
        "human", "export", "--suite", "smoke", "--design", "identify", "--out", "identify", cwd=store, check=True
    )
    study = store / "identify"
    manifest = _manifest(study / "manifest.csv")
    assert {row["view"] for row in manifest.values() if not row["expected"]} == {"occlusion"}

    def name_cr1_only(stimulus: str) -> str:  # people name the class under CR 1, and don't know under CR 4
        row = manifest[stimulus]
        return row["expected"] or (row["class"] if row["variant"] == "CR 1" else "dont_know")

    answers = _answer_page(browser, study / "study.html", store / "downloads-identify", "P9", name_cr1_only)
    output = xbench_here(
        "human",
        "analyse",
        str(answers),
        "--manifest",
        str(study / "manifest.csv"),
        "--format",
        "json",
        cwd=store,
        check=True,
    )
    report = json.loads(output.stdout)
    accuracy = {v["variant"]: v["accuracy"] for v in report["variants"]}
    assert accuracy == {"CR 1": 1.0, "CR 4": 0.0}
    assert report["chi2_p"] is not None and report["per_worker"]["P9"]["check_accuracy"] == 1.0


def test_the_mturk_template_renders_the_stimuli_and_names_the_default_answer_columns(
    browser: object, store: Path
) -> None:
    from selenium.webdriver.common.by import By

    xbench_here("human", "export", "--suite", "smoke", "--per-task", "2", "--out", "mturk", cwd=store, check=True)
    study = store / "mturk"
    template = (study / "mturk" / "template.html").read_text()
    with (study / "mturk" / "input.csv").open(newline="") as handle:
        batch = list(csv.DictReader(handle))
    assert list(batch[0]) == ["stimulus_1", "stimulus_2"]
    # MTurk fills ${variable} from the batch's columns; here with file URLs of the stimuli
    filled = template
    for column, name in batch[0].items():
        filled = filled.replace("${" + column + "}", (study / "stimuli" / name).as_uri())
    assert "${" not in filled
    (study / "hit.html").write_text(filled)
    browser.get((study / "hit.html").as_uri())
    images = browser.find_elements(By.CSS_SELECTOR, "img.stimulus")
    assert len(images) == 2
    for image in images:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
    # a crowd-radio-button named NAME comes back as the boolean column Answer.NAME.on: build a results file from the
    # template's own names and read it with the defaults
    names = re.findall(r'<crowd-radio-button name="([^"]+)"', template)
    assert sorted(names) == ["equal_1", "equal_2", "left_1", "left_2", "right_1", "right_2"]
    manifest = _manifest(study / "manifest.csv")
    header = [
        "HITId",
        "WorkerId",
        "WorkTimeInSeconds",
        "Input.stimulus_1",
        "Input.stimulus_2",
        *[f"Answer.{name}.on" for name in names],
    ]
    rows = []
    for hit, inputs in enumerate(batch):
        chosen = {"left_1", "right_2"}
        rows.append(
            [
                f"H{hit}",
                f"W{hit}",  # one worker per HIT: a stimulus may come back in another HIT
                30,
                inputs["stimulus_1"],
                inputs["stimulus_2"],
                *[str(name in chosen).lower() for name in names],
            ]
        )
    results = study / "Batch_1_batch_results.csv"
    with results.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    output = xbench_here(
        "human",
        "analyse",
        str(results),
        "--manifest",
        str(study / "manifest.csv"),
        "--format",
        "json",
        cwd=store,
        check=True,
    )

    def no_bare_nan(constant: str) -> None:
        raise AssertionError(f"invalid JSON: bare {constant}")

    report = json.loads(output.stdout, parse_constant=no_bare_nan)  # strict JSON: a missing figure is null
    # the last HIT repeats its last stimulus to stay full: that stimulus is one answer of its worker, not two
    stimuli = [name for inputs in batch for name in dict.fromkeys(inputs.values())]
    real = [name for name in stimuli if not manifest[name]["expected"]]
    assert report["answers"] == len(real) and report["unusable_rows"] == 0
