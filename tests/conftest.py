"""Shared fixtures: a tiny timm model, small shapes data, and one real smoke-suite run into a temp MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from tests.browser import browser  # noqa: F401  (a fixture: headless Chromium for the page tests)
from xbench.components.data import ImageData, load_dataset
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


def xbench(
    *args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """Run the real `xbench` command line in a subprocess."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "xbench", *args], cwd=cwd, env=environment, capture_output=True, text=True
    )  # no timeout: a slower or busier machine takes longer, and CI's own limit ends a hung run
    if check and result.returncode != 0:
        raise AssertionError(f"xbench {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke suite run once through the CLI; returns the working directory holding xbench.db."""
    workdir = tmp_path_factory.mktemp("smoke-run")
    # Progress stays on: stderr is a pipe here, as in a log, so it comes as plain lines (kept in run.log).
    result = xbench("run", "suite", str(SMOKE), "--cache-dir", str(workdir / "cache"), cwd=workdir, check=True)
    (workdir / "run.log").write_text(result.stderr)
    return workdir
