"""A wheel that works: built from the sources, installed (not editable) into a fresh venv, it runs a suite from an
empty directory, with its suites, references and templates as package data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_installs_and_runs_the_smoke_suite_from_an_empty_directory(tmp_path: Path) -> None:
    # Built from a copy, so the build leaves nothing in the checkout; no build isolation (offline: setuptools is here).
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # The suites live at the top (suites/), linked into the package (src/xbench/suites -> ../../suites): the link is
    # copied as a link, so the build itself must follow it into the wheel.
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=skip, symlinks=True)
    shutil.copytree(ROOT / "suites", source / "suites")
    assert (source / "src" / "xbench" / "suites").is_symlink()
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist), "."],
        source,
    )
    [wheel] = dist.glob("xbench-*.whl")

    # A fresh venv whose dependencies come from this one (offline), through a .pth: only the wheel brings xbench.
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip()
    )
    (site / "xbench-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    located = _run([str(python), "-c", "import xbench; print(xbench.__file__)"], empty, env).stdout.strip()
    assert Path(located).is_relative_to(site), located  # the installed copy, not the checkout
    shipped = site / "xbench" / "suites"
    assert not shipped.is_symlink() and {p.name for p in shipped.glob("*.yaml")} == {
        p.name for p in (ROOT / "suites").glob("*.yaml")
    }
    listed = _run([str(fresh / "bin" / "xbench"), "list", "suites"], empty, env).stdout
    assert "smoke" in listed and "paper" in listed
    run = _run(
        [str(fresh / "bin" / "xbench"), "run", "suite", "smoke", "--cache-dir", str(tmp_path / "cache")], empty, env
    )
    assert "suite smoke: 8 cells run" in run.stdout and (empty / "xbench.db").is_file()
    stats = _run([str(fresh / "bin" / "xbench"), "stats", "--suite", "smoke", "--format", "json"], empty, env).stdout
    assert len(json.loads(stats)["comparisons"]) > 0
