"""Shared fixtures: a tiny timm model, small shapes data, and one real smoke-suite run into a temp MLflow store."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

from tests.browser import browser  # noqa: F401  (a fixture: headless Chromium for the page tests)
from xbench.components.data import ImageData
from xbench.components.datasets import load_dataset
from xbench.core.suite import SUITES_DIR, DatasetConfig

ROOT = Path(__file__).resolve().parents[1]
SMOKE = SUITES_DIR / "smoke.yaml"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads the user's MLflow store or cache, or writes into the working tree."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("XBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "default-cache"))


@pytest.fixture(scope="session")
def small_data() -> ImageData:
    return load_dataset(DatasetConfig(name="shapes", image_size=32, train_size=64, eval_size=8), seed=0)


@pytest.fixture()
def tiny_model(small_data: ImageData) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=small_data.num_classes).eval()


class QuadrantModel(torch.nn.Module):
    """Two-class logits from the mean of one quadrant of the image: a model that looks only there."""

    def __init__(self, corner: str) -> None:
        super().__init__()
        self.corner = corner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        region = x[..., :half, :half] if self.corner == "top_left" else x[..., half:, half:]
        score = 20 * region.mean(dim=(1, 2, 3))
        return torch.stack([score, -score], dim=1)


def _checked(result: subprocess.CompletedProcess, args: tuple[str, ...], check: bool) -> subprocess.CompletedProcess:
    """The result, or with `check` an AssertionError naming the command and showing its output when it failed."""
    if check and result.returncode != 0:
        raise AssertionError(f"xbench {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def xbench(
    *args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """Run the real `xbench` command line in a subprocess."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "xbench", *args], cwd=cwd, env=environment, capture_output=True, text=True
    )  # no timeout: a slower or busier machine takes longer, and CI's own limit ends a hung run
    return _checked(result, args, check)


def xbench_here(
    *args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """Run the command line's `main` in this process: the same code as `xbench` minus starting an interpreter and
    importing torch, timm and MLflow again (3-4 s a call). For tests of what a command does; a test of the process
    itself (exit on a kill, concurrent runs, what a command imports) uses `xbench`."""
    from xbench.cli import main

    saved_environment, saved_directory = dict(os.environ), os.getcwd()
    stdout, stderr = io.StringIO(), io.StringIO()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update(env or {})
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # typer's --help and --version end this way
                code = exit_.code if isinstance(exit_.code, int) else 0
    finally:
        os.chdir(saved_directory)
        os.environ.clear()
        os.environ.update(saved_environment)
    result = subprocess.CompletedProcess(["xbench", *args], code, stdout.getvalue(), stderr.getvalue())
    return _checked(result, args, check)


def light_smoke(directory: Path) -> Path:
    """The smoke suite with its cells (2 seeds x 2 CRs x 2 explainers) trained on 128 images for one epoch and scored
    on two cheap metrics: for tests of how runs are stored and shared, not of their scores. Returns the YAML's path."""
    suite = yaml.safe_load(SMOKE.read_text())
    suite["dataset"]["train_size"] = 128
    suite["models"][0]["train"]["epochs"] = 1
    suite["metrics"] = ["sparseness", "complexity"]
    path = directory / "smoke.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke suite run once through the CLI's main, in this process (the tests of the process itself start their
    own); returns the working directory holding xbench.db."""
    workdir = tmp_path_factory.mktemp("smoke-run")
    # Progress stays on: stderr is not a terminal here, as in a log, so it comes as plain lines (kept in run.log).
    result = xbench_here("run", "suite", str(SMOKE), "--cache-dir", str(workdir / "cache"), cwd=workdir, check=True)
    (workdir / "run.log").write_text(result.stderr)
    return workdir


HOLD_PLUGIN = '''
"""An explainer that lets the first cell that calls it finish and holds every other cell until released, so a run
can be killed mid-suite, with at least one cell logged, however fast the machine. $XBENCH_TEST_MARKS/held is written
when a cell holds; $XBENCH_TEST_MARKS/release lets every call through."""
import os
import time
from pathlib import Path

from xbench.components.explainers import explainer

MARKS = Path(os.environ["XBENCH_TEST_MARKS"])


@explainer("hold_after_first_cell", "tests")
def hold_after_first_cell(model, x, targets, params):
    """|x| summed over channels; any cell but the first waits to be killed (or released)."""
    # the cell's model, named by its weights (cells at other CRs or seeds have other weights), in any process
    token = repr(sum(float(p.detach().double().abs().sum()) for p in model.parameters()))
    try:
        descriptor = os.open(MARKS / "first", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(descriptor, token.encode())
        os.close(descriptor)
    except FileExistsError:
        pass
    if (MARKS / "first").read_text() != token:
        while not (MARKS / "release").exists():
            (MARKS / "held").write_text(str(os.getpid()))
            time.sleep(0.1)
    return x.abs().sum(dim=1, keepdim=True)
'''


def hold_plugin(folder: Path) -> dict[str, str]:
    """Writes the hold plug-in (`hold_after_first_cell`) into `folder`; returns the environment a run needs to load
    it (its marks go to folder/marks)."""
    (folder / "hold_plugin.py").write_text(HOLD_PLUGIN)
    (folder / "marks").mkdir(exist_ok=True)
    return {"PYTHONPATH": str(folder), "XBENCH_TEST_MARKS": str(folder / "marks")}
