"""pytest-benchmark figures for the core pieces (run with `make bench`; they record times, they assert none)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch
from torch import nn

from xbench.components.data import render_shapes
from xbench.components.pruners import pruners
from xbench.components.pruning import make_permanent, prune_step
from xbench.core.suite import PerfConfig, PruningConfig
from xbench.measure.perf import latency


def test_latency_harness_overhead(benchmark: pytest.FixtureRequest) -> None:
    """The harness around a model that does nothing: what every latency figure carries on top of the model."""
    benchmark(latency, nn.Identity(), 8, 1, torch.device("cpu"), PerfConfig(warmup=0, repeats=100))


def test_shapes_generation_per_100_images(benchmark: pytest.FixtureRequest) -> None:
    benchmark(render_shapes, 100, 64, np.random.default_rng(0))


@pytest.mark.parametrize("granularity", ["layerwise", "global"])
def test_magnitude_pruning_resnet18_cr8(benchmark: pytest.FixtureRequest, granularity: str) -> None:
    model = timm.create_model("resnet18", num_classes=10)
    config = PruningConfig(method="magnitude", granularity=granularity, compression_rates=[8])

    def prune_copy() -> None:
        pruned = copy.deepcopy(model)
        make_permanent(prune_step(pruned, pruners.get("magnitude"), config, 8, seed=0))

    benchmark.pedantic(prune_copy, rounds=3, iterations=1)
