"""ROAD's imputation solve (`make bench`): 80 images (8 images x 10 percentages, as ROAD runs them), with the holes
that random attributions leave (scattered) and those of a smooth, Grad-CAM-like map (blobs), solved as xbench does
(plain CG, compiled on a CPU; multigrid-preconditioned CG for wide holes), with the batched PyTorch solver that CUDA
tensors take, and with plain CG only.

They record figures in the pytest-benchmark JSON (extra_info); they assert nothing about time.
"""

from __future__ import annotations

import pytest
import torch

from xbench.measure.imputation import _wide_holes, impute
from xbench.measure.operators import descending_rank

PERCENTAGES = range(5, 100, 10)
IMAGES = 8


def _holes(kind: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(IMAGES, 1, size, size, generator=generator)
    if kind == "blobs":
        coarse = torch.rand(IMAGES, 1, 4, 4, generator=generator)
        scores = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    else:
        scores = torch.rand(IMAGES, 1, size, size, generator=generator)
    rank = descending_rank(scores.flatten(1))
    counts = torch.tensor([int(size * size * p / 100) for p in PERCENTAGES])
    jobs = torch.arange(len(counts) * IMAGES)  # step-major, as ROAD orders them
    step, image = jobs // IMAGES, jobs % IMAGES
    missing = (rank[image] < counts[step].unsqueeze(1)).view(-1, 1, size, size)
    return x[image], missing


SOLVERS = {"xbench": {}, "batched": {"compiled": False}, "plain_cg": {"multigrid": False}}


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize(("kind", "size"), [("scattered", 64), ("blobs", 64), ("blobs", 224)])
def test_road_imputation(benchmark: pytest.FixtureRequest, kind: str, size: int, solver: str) -> None:
    x, missing = _holes(kind, size)
    exact = impute(x.double(), missing, tolerance=1e-10)
    result = benchmark.pedantic(impute, args=(x, missing), kwargs=SOLVERS[solver], rounds=3, warmup_rounds=1)
    benchmark.extra_info["images"] = len(x)
    benchmark.extra_info["images_with_wide_holes"] = int(_wide_holes(missing).sum())
    benchmark.extra_info["max_abs_error"] = float((result.double() - exact).abs().max())
