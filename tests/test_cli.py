"""End to end: the `xbench` command line on the smoke suite, against a real SQLite MLflow store. Runs, kills and
concurrency go through the real process (`xbench`); what a command prints is read from its `main` (`xbench_here`)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, SMOKE, hold_plugin, xbench, xbench_here
from xbench.core.errors import XbenchInputError
from xbench.core.suite import load_suite
from xbench.plan.planner import plan, validate
from xbench.store.tracking import Store


def store(workdir: Path) -> Store:
    return Store(f"sqlite:///{workdir / 'xbench.db'}")


def active_runs(workdir: Path) -> list:
    s = store(workdir)
    experiment = s.experiment_id("smoke")
    return list(s.client.search_runs([experiment], max_results=1000))


def test_run_logs_a_parent_and_one_child_per_cell(smoke_run: Path) -> None:
    runs = active_runs(smoke_run)
    parents = [r for r in runs if r.data.tags.get("xbench.role") == "suite"]
    children = [r for r in runs if r.data.tags.get("xbench.role") == "cell"]
    suite, _ = load_suite(str(SMOKE))
    cells = plan(suite, "cpu")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["xbench.cell_key"] for r in children) == sorted(c.cell_key for c in cells)
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert {
            "model",
            "pruning_method",
            "pruning_scope",
            "pruning_granularity",
            "pruning_schedule",
            "compression_rate",
            "explainer",
            "dataset",
            "seed",
        } <= set(run.data.params)
        assert {
            "accuracy",
            "params",
            "params_nonzero",
            "sparsity",
            "sparsity_scope",
            "compression_rate_model",
            "compression_rate_scope",
            "flops_dense",
            "latency_ms_p50_bs1",
            "latency_ms_p90_bs16",
            "throughput_bs16",
            "explain_seconds",
            "score_seconds",
            "sparseness",
        } <= set(run.data.metrics)
        assert {
            "xbench.suite",
            "xbench.cell_key",
            "xbench.version",
            "xbench.git_sha",
            "xbench.device",
            "torch_version",
            "timm_version",
            "quantus_version",
        } <= set(run.data.tags)
        artifacts = {a.path for a in store(smoke_run).client.list_artifacts(run.info.run_id)}
        assert {"heatmaps.png", "scores.csv", "result.json", "gallery_attributions.npy"} <= artifacts
    pruned = [r for r in children if r.data.params["pruning_method"] == "magnitude"]
    assert pruned and all(r.data.metrics["sparsity_scope"] == pytest.approx(0.75, abs=0.005) for r in pruned)


def test_the_mlflow_ui_opens_on_training_runs_with_their_datasets(smoke_run: Path) -> None:
    """MLflow 3 shows its GenAI overview for an experiment unless it is tagged as model development; each cell run
    carries its training and eval data as dataset inputs (the UI's Dataset column)."""
    s = store(smoke_run)
    experiment = s.client.get_experiment(s.experiment_id("smoke"))
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    cell = next(r for r in active_runs(smoke_run) if r.data.tags.get("xbench.role") == "cell")
    inputs = {d.dataset.name: d for d in cell.inputs.dataset_inputs}
    assert set(inputs) == {"shapes-48px-train", "shapes-48px-eval"}
    assert {d.tags[0].value for d in inputs.values()} == {"training", "evaluation"}
    assert all(len(d.dataset.digest) >= 16 for d in inputs.values())


def test_rerunning_a_finished_suite_is_a_no_op(smoke_run: Path) -> None:
    before = len(active_runs(smoke_run))
    result = xbench("run", "suite", "smoke", "--cache-dir", str(smoke_run / "cache"), cwd=smoke_run, check=True)
    assert "nothing to do" in result.stderr + result.stdout
    assert len(active_runs(smoke_run)) == before


def test_a_no_op_rerun_answers_from_the_remembered_plan_without_loading_torch(smoke_run: Path) -> None:
    """The fast path: the plan memo and the store are enough; torch, Quantus and the explainers stay unimported."""
    script = (
        "import sys; from xbench.cli import main; "
        f"code = main(['run', 'suite', 'smoke', '--cache-dir', {str(smoke_run / 'cache')!r}]); "
        "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded', code)"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=smoke_run, capture_output=True, text=True)
    assert "torch not loaded 0" in result.stdout, result.stdout + result.stderr
    assert "nothing to do" in result.stderr


def test_progress_reaches_a_log_as_lines_while_the_suite_runs(smoke_run: Path) -> None:
    """stderr is not a terminal in the fixture's run: one line per finished cell and per training epoch."""
    log = (smoke_run / "run.log").read_text()
    cells = [line for line in log.splitlines() if " suite smoke: " in line and "elapsed" in line]
    assert len(cells) == len(plan(load_suite(str(SMOKE))[0], "cpu")), log
    assert "~" in cells[0] and "left" in cells[0] and cells[-1].split(" · ")[2] == "done"
    assert "test_resnet | dense | gradcam | seed 0" in log
    assert "train test_resnet epoch 1/4: done in" in log


def test_export_json_and_csv(smoke_run: Path, tmp_path: Path) -> None:
    records = json.loads(
        xbench_here("export", "--suite", "smoke", "--format", "json", cwd=smoke_run, check=True).stdout
    )
    assert len(records) == len(plan(load_suite(str(SMOKE))[0], "cpu"))
    required = {
        "suite",
        "cell_key",
        "run_id",
        "model",
        "pruning_method",
        "compression_rate",
        "explainer",
        "accuracy",
        "sparsity",
        "params",
        "params_nonzero",
        "flops",
        "latency_ms_p50",
        "throughput",
        "faithfulness_correlation",
        "pixel_flipping",
        "sparseness",
        "complexity",
        "attribution_localisation",
    }
    for record in records:
        assert required <= set(record)
    out = tmp_path / "smoke.csv"
    xbench_here("export", "--suite", "smoke", "--format", "csv", "-o", str(out), cwd=smoke_run, check=True)
    header = out.read_text().splitlines()[0].split(",")
    assert required <= set(header)


def test_leaderboard_build_writes_a_self_contained_page(smoke_run: Path, tmp_path: Path) -> None:
    xbench_here("leaderboard", "build", "--suite", "smoke", "--out", str(tmp_path / "site"), cwd=smoke_run, check=True)
    index = (tmp_path / "site" / "index.html").read_text()
    assert 'href="suite-smoke.html"' in index and "http" not in index
    page = (tmp_path / "site" / "suite-smoke.html").read_text()
    suite = load_suite(str(SMOKE))[0]
    cells = len(plan(suite, "cpu")) // len(suite.replicate_seeds)  # one row per cell, its seeds aggregated
    table = page.split('id="cells"')[1].split('id="curves"')[0]
    assert table.count("<tr>") == cells + 1  # and the header
    assert "test_resnet" in page and "http" not in page
    assert 'class="ci"' in page  # intervals from the per-image scores.csv artifacts
    assert "Holm" in page and "seed stability" in page
    assert page.count("data:image/png;base64,") == 2 * 2 * 2  # 2 CRs x 2 explainers x (overlay, occlusion)


def test_until_decided_adds_seeds_in_rounds_each_look_at_its_spent_level(smoke_run: Path, tmp_path: Path) -> None:
    """From the smoke run's 2 seeds, at most 3, one a round: look 1 reuses the 2 seeds, look 2 runs seed 2 only; each
    look is tested at its α-spending share (they add up to 0.05), and the report says each ladder's safe CR."""
    import shutil

    from xbench.analyse.decide import spent_levels

    shutil.copy(smoke_run / "xbench.db", tmp_path / "xbench.db")
    shutil.copytree(smoke_run / "cache", tmp_path / "cache")
    result = xbench_here(
        "run",
        "suite",
        str(SMOKE),
        "--until-decided",
        "--max-seeds",
        "3",
        "--seeds-per-round",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        cwd=tmp_path,
        check=True,
    )
    output = result.stdout + result.stderr
    first, second = spent_levels([2, 3], 3)
    assert first + second == pytest.approx(0.05)
    if "look 2 of at most 2" not in output:  # both ladders decided at 2 seeds: nothing more to run
        assert "2 of 2 explainer ladders decided" in output
    else:  # a ladder undecided at 2 seeds: seed 2 was run and its cells logged
        assert f"α = {second:.4f}" in output
        runs = Store(f"sqlite:///{tmp_path / 'xbench.db'}").load_results("smoke")
        assert sorted({int(r["seed"]) for r in runs}) == [0, 1, 2]
    assert "look 1 of at most 2" in output and f"α = {first:.4f}" in output
    assert "suite smoke: safe compression after" in output
    for explainer in ("gradcam", "saliency"):
        assert f"test_resnet magnitude {explainer}: safe up to" in output
    # `xbench stats` afterwards pays for the looks: safe compression at the last look's share, or the share of the
    # earlier look that decided a ladder, never at the full 0.05
    stats = json.loads(xbench_here("stats", "--suite", "smoke", "--format", "json", cwd=tmp_path, check=True).stdout)
    looks = stats["sequential"]["looks"]
    assert looks in ([2], [2, 3]) and stats["sequential"]["levels"] == pytest.approx(spent_levels(looks, 3))
    for ladder in stats["safe_compression"]:
        at = ladder["decided_at_seeds"] or looks[-1]
        assert ladder["level"] <= spent_levels(looks, 3)[looks.index(at)] * (1 + 1e-9)


def test_stats_reports_every_comparison_with_its_ci_and_corrected_p(smoke_run: Path, tmp_path: Path) -> None:
    printed = xbench_here("stats", "--suite", "smoke", "--format", "json", cwd=smoke_run, check=True).stdout
    result = json.loads(printed)
    # -o writes the same JSON to a file; CSV has one row per comparison with the JSON's figures
    xbench_here(
        "stats", "--suite", "smoke", "--format", "json", "-o", str(tmp_path / "s.json"), cwd=smoke_run, check=True
    )
    assert json.loads((tmp_path / "s.json").read_text()) == result
    xbench_here(
        "stats", "--suite", "smoke", "--format", "csv", "-o", str(tmp_path / "s.csv"), cwd=smoke_run, check=True
    )
    with (tmp_path / "s.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(result["comparisons"]) and {"verdict", "family", "ci_low", "p_holm"} <= set(rows[0])
    for row, comparison in zip(rows, result["comparisons"], strict=True):
        assert row["verdict"] == comparison["verdict"] and row["metric"] == comparison["metric"]
        assert float(row["mean_diff"]) == pytest.approx(comparison["mean_diff"])
    suite = load_suite(str(SMOKE))[0]
    assert result["seeds"] == suite.replicate_seeds and not result["within_one_trained_model"]
    # 1 pruned CR x (2 explainers x 5 metrics + accuracy)
    assert len(result["comparisons"]) == 2 * len(suite.metrics) + 1
    for row in result["comparisons"]:
        assert row["n_seeds"] == 2 and row["p_holm"] >= row["p"]
        assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
        assert row["verdict"] in ("better", "worse", "equivalent", "undecided") and row["margin"] > 0
        assert row["within_one_trained_model"] is False and row["fewer_seeds_than_suite"] is False
    assert sum(result["verdicts"].values()) == len(result["comparisons"]) and "accuracy" in result["margins"]
    # each comparison names the family its correction covers, and the JSON says what each family is
    assert {row["family"] for row in result["comparisons"]} == set(result["families"]) == {"accuracy", "metrics"}
    assert "1 question of accuracy: 50%" in result["families"]["accuracy"]
    assert {s["explainer"] for s in result["safe_compression"]} == {"gradcam", "saliency"}
    assert {r["metric"] for r in result["reliability"]} == {m.name for m in suite.metrics}
    planned = xbench_here("stats", "--suite", "smoke", "--plan", cwd=smoke_run, check=True).stdout
    assert "Seeds that would decide" in planned and "suite smoke: 2 seeds" in planned
    # For a person, by default: a table with one row per comparison and how to read the verdicts.
    table = xbench_here("stats", "--suite", "smoke", cwd=smoke_run, check=True, env={"COLUMNS": "250"}).stdout
    assert "95 % interval" in table and "p (corrected)" in table and "weighted Benjamini-Hochberg" in table
    counts = ", ".join(f"{n} {verdict}" for verdict, n in result["verdicts"].items())
    assert counts in table and table.count("test_resnet") == len(result["comparisons"])
    # written to a pipe or a file, the table keeps its full width: no cell cut to fit 80 columns
    piped = xbench_here("stats", "--suite", "smoke", cwd=smoke_run, check=True).stdout
    assert "…" not in piped and "Δ (variant − CR 1)" in piped and "faithfulness_correlation" in piped
    bad = xbench_here("stats", "--suite", "smoke", "--format", "yaml", cwd=smoke_run)
    assert bad.returncode == 2 and "yaml" in bad.stderr and "Traceback" not in bad.stderr


def test_run_seeds_parses_ranges_and_lists() -> None:
    from xbench.cli.run import parse_seeds
    from xbench.core.errors import XbenchInputError

    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("0-2,7, 5") == [0, 1, 2, 5, 7]
    for bad in ("4-2", "a", "-1", "1-"):
        with pytest.raises(XbenchInputError) as error:
            parse_seeds(bad)
        assert error.value.field == "--seeds"


@pytest.mark.slow
def test_run_seeds_extends_a_finished_suite_by_the_new_seeds_cells_only(tmp_path: Path) -> None:
    one_seed = _smoke_with(seeds=[0])
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(one_seed))
    cache = str(tmp_path / "cache")
    xbench_here("run", "suite", "one.yaml", "--cache-dir", cache, cwd=tmp_path, check=True)
    first = {r.info.run_id for r in active_runs(tmp_path)}
    extended = xbench_here("run", "suite", "one.yaml", "--seeds", "0-1", "--cache-dir", cache, cwd=tmp_path, check=True)
    cells = 4  # 2 compression rates x 2 explainers, per seed
    assert "new: 1" in extended.stdout + extended.stderr
    assert f"{cells} cells run, {cells} already done" in extended.stdout
    runs = active_runs(tmp_path)
    assert first <= {r.info.run_id for r in runs}  # seed 0's runs are the same runs
    seeds = sorted(r.data.params["seed"] for r in runs if "seed" in r.data.params)
    assert seeds.count("0") == seeds.count("1") == cells  # every cell once per seed, none twice
    stats = json.loads(xbench_here("stats", "--suite", "smoke", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert stats["seeds"] == [0, 1]


def test_check_holds_against_its_own_baseline_and_catches_a_planted_regression(smoke_run: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    xbench_here("check", "--write-baseline", str(baseline), "--suite", "smoke", cwd=smoke_run, check=True)
    quiet = xbench_here("check", "--baseline", str(baseline), cwd=smoke_run, env={"COLUMNS": "300"})
    assert quiet.returncode == 0 and "xbench check: suite" not in quiet.stderr  # nothing changed: no table
    listed = xbench_here("check", "--baseline", str(baseline), "--all", cwd=smoke_run, env={"COLUMNS": "300"})
    unchanged = int(re.search(r"(\d+) ok", listed.stderr).group(1))  # type: ignore[union-attr]
    assert listed.returncode == 0 and unchanged > 0
    assert sum(line.startswith("│ ok ") for line in listed.stderr.splitlines()) == unchanged  # --all: every row
    data = json.loads(baseline.read_text())
    assert data["version"] == 3 and all("per_image" in c for c in data["cells"].values())  # tested through decide
    group = next(c["replicate"] for c in data["cells"].values() if "sparseness" in c["per_image"])
    for cell in data["cells"].values():  # the baseline now claims every image of one cell far better, in each seed
        if cell["replicate"] == group:
            cell["per_image"]["sparseness"] = [None if v is None else v + 0.5 for v in cell["per_image"]["sparseness"]]
    baseline.write_text(json.dumps(data))
    result = xbench_here("check", "--baseline", str(baseline), cwd=smoke_run)
    assert result.returncode == 1 and "p worse than tolerance (Holm)" in result.stderr
    assert "regressed" in result.stderr and "sparseness" in result.stderr and group[:12] in result.stderr
    for cell in data["cells"].values():  # a version-2 baseline (no per-image scores): value by value
        cell.pop("per_image")
        cell["values"]["sparseness"] = 0.0 if cell["replicate"] != group else cell["values"]["sparseness"] + 0.5
    baseline.write_text(json.dumps(data))
    by_value = xbench_here("check", "--baseline", str(baseline), cwd=smoke_run)
    assert by_value.returncode == 1 and "regressed" in by_value.stderr and "p worse" not in by_value.stderr
    assert xbench_here("check", "--baseline", str(tmp_path / "missing.json"), cwd=smoke_run).returncode == 2


@pytest.mark.slow
def test_a_rerun_with_the_same_seeds_passes_a_baseline_whose_tolerances_come_from_them(
    smoke_run: Path, tmp_path: Path
) -> None:
    """The gate does not flake: smoke run again from scratch (new store, new cache) with the same two seeds passes the
    baseline written from the first run (tested per image, the default rule as tolerance); every image of one cell
    3 tolerances worse fails."""
    baseline = tmp_path / "baseline.json"
    xbench_here("check", "--write-baseline", str(baseline), "--suite", "smoke", cwd=smoke_run, check=True)
    assert json.loads(baseline.read_text())["tolerances"] == {}  # no rules: the default rule
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    # In a process of its own, the fixture's run in this one: the scores repeat across processes.
    xbench("run", "suite", str(SMOKE), "--cache-dir", str(rerun / "cache"), "--no-progress", cwd=rerun, check=True)
    assert xbench_here("check", "--baseline", str(baseline), cwd=rerun).returncode == 0
    data = json.loads(baseline.read_text())
    group = next(c["replicate"] for c in data["cells"].values() if "pixel_flipping" in c["per_image"])
    members = [c for c in data["cells"].values() if c["replicate"] == group]
    shift = 0.15 * max(abs(c["values"]["pixel_flipping"]) for c in members)
    for cell in members:  # every image of every seed lower in the baseline by 3 tolerances (the default rule, 5 %)
        scores = cell["per_image"]["pixel_flipping"]
        cell["per_image"]["pixel_flipping"] = [None if v is None else v - shift for v in scores]
    baseline.write_text(json.dumps(data))
    result = xbench_here("check", "--baseline", str(baseline), cwd=rerun)
    assert result.returncode == 1 and "pixel_flipping" in result.stderr


def _smoke_with(**changes: object) -> dict:
    data = yaml.safe_load(SMOKE.read_text())
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[leaf] = value
    return data


BAD_SUITES = {
    "unknown key": (_smoke_with(dataset__imagesize=32), "dataset.imagesize: unknown key"),
    "unknown model": (_smoke_with(models__0__name="resnet81"), "models[0].name: unknown timm model 'resnet81'"),
    "unknown explainer": (_smoke_with(explainers=["gradcm"]), "did you mean 'gradcam'"),
    "unknown metric": (_smoke_with(metrics=["sparsenes"]), "metrics[0].name: unknown metric"),
    "unknown pruning method": (_smoke_with(pruning__0__method="magnitud"), "pruning[0].method"),
    "compression rate below 1": (
        _smoke_with(pruning__0__compression_rates=[0.5]),
        "pruning[0].compression_rates[0]: must be >= 1",
    ),
    "bad device": (_smoke_with(device="gpu"), "device: Input should be 'auto', 'cpu' or 'cuda'"),
    "margin of an unknown figure": (
        _smoke_with(equivalence={"sparsenes": 0.1}),
        "equivalence.sparsenes: not a figure of this suite; allowed: accuracy, faithfulness_correlation",
    ),
    "margin not positive": (_smoke_with(equivalence={"accuracy": 0}), "equivalence.accuracy: must be > 0"),
    "a suite named by dots": (_smoke_with(name=".."), "name: must contain a letter, digit"),
    "an infinite compression rate": (
        _smoke_with(pruning__0__compression_rates=[1, float("inf")]),
        "pruning[0].compression_rates[1]: Input should be a finite number",
    ),
    "a NaN compression rate": (
        _smoke_with(pruning__0__compression_rates=[float("nan")]),
        "pruning[0].compression_rates[0]: Input should be a finite number",
    ),
    "a compression rate of 1e300": (
        _smoke_with(pruning__0__compression_rates=[1e300]),
        "pruning[0].compression_rates[0]: must be <= 10000",
    ),
    "an infinite learning rate": (
        _smoke_with(models__0__train__lr=float("inf")),
        "models[0].train.lr: Input should be a finite number",
    ),
    "an infinite margin": (_smoke_with(equivalence={"accuracy": float("inf")}), "equivalence.accuracy"),
    "a training set of 1e15 images": (
        _smoke_with(dataset__train_size=10**15),
        "dataset.train_size: Input should be less than or equal to 10000000",
    ),
    "a seed of 10^26": (_smoke_with(seeds=[0, 10**26]), "seeds[1]"),
    "more images explained than evaluated": (
        _smoke_with(dataset__explain_size=17),
        "dataset.explain_size: must be at most dataset.eval_size (16), got 17",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SUITES))
def test_a_bad_suite_field_is_named_with_what_is_allowed(case: str, tmp_path: Path) -> None:
    """What `run suite` checks before it writes anything (loading, then validating), in this process; the exit code
    and the untouched folder are checked through the real command line below."""
    data, expected = BAD_SUITES[case]
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(data))
    with pytest.raises(XbenchInputError) as error:
        validate(load_suite(str(suite_file))[0])
    assert expected in str(error.value)


@pytest.mark.parametrize("content", [b"not weights", b"PK\x03\x04 truncated zip", b""])
def test_a_checkpoint_path_that_is_not_weights_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "w.bin").write_bytes(content)
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(_smoke_with(models__0__options={"checkpoint_path": str(tmp_path / "w.bin")})))
    with pytest.raises(XbenchInputError, match=r"models\[0\]\.options: timm.create_model\('test_resnet'\) does not"):
        validate(load_suite(str(suite_file))[0])


def test_a_key_given_twice_is_an_error_not_the_last_one_silently(tmp_path: Path) -> None:
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(SMOKE.read_text() + "seeds: [5, 6]\n")  # smoke already says seeds: [0, 1]
    with pytest.raises(XbenchInputError, match="the key 'seeds' is given twice"):
        load_suite(str(suite_file))


def test_a_plan_larger_than_max_cells_is_refused_before_planning(tmp_path: Path) -> None:
    result = xbench_here("run", "suite", str(SMOKE), "--seeds", "0-100000", "--dry-run", cwd=tmp_path)
    assert result.returncode == 2 and "--max-cells" in result.stderr and "400,004 cells" in result.stderr
    assert "(100,001 seeds)" in result.stderr  # not a hundred thousand numbers
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("case", ["unknown model", "margin of an unknown figure", "malformed yaml", "missing suite"])
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(case: str, tmp_path: Path) -> None:
    suite_file = tmp_path / "suite.yaml"
    if case == "malformed yaml":
        suite_file.write_text("name: smoke\nmodels: [unclosed\n")
        expected = "malformed YAML"
    elif case == "missing suite":
        suite_file = tmp_path / "nope.yaml"
        expected = "does not exist"
    else:
        data, expected = BAD_SUITES[case]
        suite_file.write_text(yaml.safe_dump(data))
    result = xbench("run", "suite", str(suite_file), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "xbench.db").exists() and not (tmp_path / "cache").exists()


def _finished_cells(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute(
                "select count(*) from runs join tags on runs.run_uuid = tags.run_uuid where tags.key = 'xbench.role'"
                " and tags.value = 'cell' and runs.status = 'FINISHED' and runs.lifecycle_stage = 'active'"
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow  # over 30 s: out of the fast lane, in `make test-all` and CI
def test_a_killed_run_resumes_and_logs_each_cell_once(tmp_path: Path) -> None:
    suite_file = tmp_path / "resume.yaml"
    # Small on purpose: what is tested is the kill and the resume, not the scores.
    light = _smoke_with(
        name="resume",
        seeds=[0],
        pruning__0__compression_rates=[1, 2],
        dataset__train_size=128,
        models__0__train__epochs=1,
        metrics=["sparseness", "complexity"],
        plugins=["hold_plugin"],
        explainers=["saliency", "hold_after_first_cell"],
    )
    suite_file.write_text(yaml.safe_dump(light))
    # Every cell but the first holds in the plug-in explainer, so the kill lands mid-suite however fast the machine
    # (no polling race); the rerun finds the release mark.
    held = hold_plugin(tmp_path)
    unplugged = tmp_path / "unplugged.yaml"  # as many cells, without importing the plug-in into this process
    unplugged.write_text(yaml.safe_dump({**light, "plugins": [], "explainers": ["saliency", "gradcam"]}))
    total = len(plan(load_suite(str(unplugged))[0], "cpu"))
    command = [
        sys.executable,
        "-m",
        "xbench",
        "run",
        "suite",
        str(suite_file),
        "--cache-dir",
        str(tmp_path / "c"),
        "--no-progress",
    ]
    environment = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **held}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # No deadline: the run either holds with its first cell logged, or exits (then the assertion below says so);
    # CI's limit ends a hang.
    while process.poll() is None:
        if (tmp_path / "marks" / "held").exists() and _finished_cells(tmp_path / "xbench.db") >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended without holding"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_at_kill = _finished_cells(tmp_path / "xbench.db")
    assert 1 <= done_at_kill < total, "the kill must land mid-suite"

    (tmp_path / "marks" / "release").touch()
    xbench("run", "suite", str(suite_file), "--cache-dir", str(tmp_path / "c"), cwd=tmp_path, env=held, check=True)
    s = store(tmp_path)
    runs = list(s.client.search_runs([s.experiment_id("resume")], max_results=1000))
    cells = [r for r in runs if r.data.tags.get("xbench.role") == "cell"]
    keys = [r.data.tags["xbench.cell_key"] for r in cells]
    assert len(keys) == len(set(keys)) == total
    assert all(r.info.status == "FINISHED" for r in cells)
    parents = [r for r in runs if r.data.tags.get("xbench.role") == "suite"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the resumed run continued the same parent


@pytest.mark.slow
def test_two_concurrent_runs_on_one_sqlite_store_log_each_cell_once(tmp_path: Path) -> None:
    """The second run waits for the first (a file lock beside the database), then finds its cells finished."""
    suite_file = tmp_path / "twice.yaml"
    suite_file.write_text(yaml.safe_dump(_smoke_with(name="twice", seeds=[0])))
    total = len(plan(load_suite(str(suite_file))[0], "cpu"))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "xbench", "run", "suite", str(suite_file), "--cache-dir", str(tmp_path / f"c{i}")],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [process.communicate() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert sum("waiting for it to finish" in err for _, err in outputs) == 1
    assert sum("nothing to do" in out + err for out, err in outputs) == 1
    s = store(tmp_path)
    cells = [
        r
        for r in s.client.search_runs([s.experiment_id("twice")], max_results=1000)
        if r.data.tags.get("xbench.role") == "cell"
    ]
    keys = [r.data.tags["xbench.cell_key"] for r in cells]
    assert len(keys) == len(set(keys)) == total and all(r.info.status == "FINISHED" for r in cells)


@pytest.mark.parametrize(
    "command",
    [
        ["run", "suite"],
        ["list"],
        ["export"],
        ["stats"],
        ["leaderboard", "build"],
        ["check"],
        ["profile"],
        ["ui"],
        ["server", "start"],
        ["human", "export"],
        ["human", "analyse"],
    ],
)
def test_every_command_explains_itself(command: list[str], tmp_path: Path) -> None:
    """--help gives a summary, an example of this very command, and every option with a sentence of its own."""
    import typer.main

    from xbench.cli import app

    result = xbench_here(*command, "--help", cwd=tmp_path, check=True, env={"COLUMNS": "200"})
    examples = [line.strip() for line in result.stdout.splitlines() if "Example:" in line]
    assert examples and all(f"xbench {' '.join(command)}" in line for line in examples), examples
    group = typer.main.get_command(app)  # typer's own click: its classes, read by what they have
    for name in command:
        group = group.commands[name]  # type: ignore[attr-defined]
    assert group.help and len(group.help.split()) >= 8  # a summary, not a word
    for param in group.params:
        if param.param_type_name == "option" and not getattr(param, "hidden", False):
            assert param.help, f"{' '.join(command)} {param.opts[0]} has no help"
            assert max(param.opts, key=len) in result.stdout, param.opts


def test_list_shows_plugins_with_their_metadata(tmp_path: Path) -> None:
    metrics = xbench_here("list", "metrics", cwd=tmp_path, check=True).stdout
    assert "pixel_flipping" in metrics and "lower is better" in metrics
    lacking_in_quantus = ("insertion", "deletion", "average_drop", "increase_in_confidence", "average_gain")
    assert all(name in metrics for name in lacking_in_quantus)
    explainers = xbench_here("list", "explainers", cwd=tmp_path, check=True).stdout
    assert all(name in explainers for name in ("gradcam", "attention_rollout", "transformer_attribution", "attnlrp"))
    pruners = xbench_here("list", "pruners", cwd=tmp_path, check=True).stdout.split()
    assert {"lrp", "channel_lrp", "nm_2_4"} <= set(pruners)
    assert "torchvision" in xbench_here("list", "datasets", cwd=tmp_path, check=True).stdout.split()
    assert "resnet18" in xbench_here("list", "models", "--filter", "resnet1*", cwd=tmp_path, check=True).stdout
    assert xbench_here("list", "nonsense", cwd=tmp_path).returncode == 2


def test_a_percent_encoded_database_password_is_decoded_and_every_secret_file_is_private(tmp_path: Path) -> None:
    import stat

    from xbench.cli.server import auth_config, password_out_of_uri

    uri, environment = password_out_of_uri("postgresql://xbench:pa%40ss%2Fw@db:5432/xbench")
    assert uri == "postgresql://xbench@db:5432/xbench" and environment == {"PGPASSWORD": "pa@ss/w"}
    old = tmp_path / "mlflow-auth.db"
    old.write_text("")
    old.chmod(0o644)  # as MLflow made it before: the admin's password hash readable by every local user
    auth_config(tmp_path / "mlflow-basic-auth.ini", old)
    for name in ("mlflow-basic-auth.ini", "mlflow-auth.db", "mlflow-flask-secret"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    auth_config(fresh / "mlflow-basic-auth.ini", fresh / "mlflow-auth.db")
    assert stat.S_IMODE((fresh / "mlflow-auth.db").stat().st_mode) == 0o600


def test_a_server_for_other_machines_asks_for_auth_and_keeps_the_database_password_out_of_argv(tmp_path: Path) -> None:
    from xbench.cli.server import password_out_of_uri

    uri, environment = password_out_of_uri("postgresql://xbench:s3cret@db:5432/xbench")
    assert uri == "postgresql://xbench@db:5432/xbench" and environment == {"PGPASSWORD": "s3cret"}
    start = ["server", "start", "--backend-store-uri", "postgresql://xbench:s3cret@db:5432/xbench", "--print"]
    open_server = xbench_here(*start, "--host", "0.0.0.0", cwd=tmp_path)
    assert open_server.returncode == 2 and "--host" in open_server.stderr and "--auth" in open_server.stderr
    anonymous = xbench_here(*start, "--host", "0.0.0.0", "--allow-anonymous", cwd=tmp_path, check=True)
    assert "without authentication" in anonymous.stderr and "s3cret" not in anonymous.stdout
    secured = xbench_here(*start, "--host", "0.0.0.0", "--auth", cwd=tmp_path, check=True)
    assert "--app-name basic-auth" in secured.stdout and "s3cret" not in secured.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["stats", "--suite", "smoke", "--format", "json"],
        ["check", "--baseline", str(ROOT / "leaderboard" / "baselines" / "smoke.json")],
    ],
    ids=["stats", "check"],
)
def test_stats_and_check_import_no_torch(smoke_run: Path, command: list[str]) -> None:
    """What reads results never needs the model stack: in a fresh interpreter, the real command, then sys.modules."""
    script = (
        "import sys\n"
        f"sys.argv = ['xbench', *{command!r}]\n"
        "from xbench.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "heavy = [m for m in ('torch', 'timm', 'quantus', 'captum', 'zennit') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=smoke_run, env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "heavy: []"
