"""Pruning benchmarks (`make bench`): time per method on resnet18, and measured vs theoretical speed-up.

They record figures in the pytest-benchmark JSON (extra_info); they assert nothing about time.
"""

from __future__ import annotations

import copy

import pytest
import torch

from xbench.components.data import ImageData
from xbench.components.models import timm_model
from xbench.components.pruners import pruners
from xbench.components.pruning import channel_pruned, make_permanent
from xbench.core.suite import PerfConfig, PruningConfig
from xbench.measure.profiling import profile

CPU = torch.device("cpu")


@pytest.mark.parametrize("method", pruners.names())
def test_pruning_time_resnet18_cr4(benchmark: pytest.FixtureRequest, method: str) -> None:
    """Wall time to prune resnet18 (64 px) to CR 4 (2:4 sparsity: its one rate, CR 2), including the channel-ratio
    search for structured methods and the relevance pass of LRP pruning."""
    model = timm_model("resnet18", 10, 64).eval()
    pruner = pruners.get(method)
    rate = 4 if pruner.compression_rate_error(4) is None else 2
    config = PruningConfig(method=method, compression_rates=[rate])
    data = ImageData.random(64, 64, 10)
    params = sum(p.numel() for p in model.parameters())

    def prune() -> None:
        if pruner.structured:
            channel_pruned(model, pruner, config, params / rate, data, seed=0, device=CPU)
        else:
            _, masked = pruner.prune_step(copy.deepcopy(model), config, rate, params, data, 0, CPU)
            make_permanent(masked)

    benchmark.pedantic(prune, rounds=2, iterations=1)


@pytest.mark.parametrize("rate", [2, 4])
def test_channel_magnitude_measured_vs_theoretical_speedup(benchmark: pytest.FixtureRequest, rate: int) -> None:
    """resnet18 at 224 px, batch 8, CPU: the pruned forward pass is timed; both speed-ups go into extra_info."""
    settings = PerfConfig(warmup=3, repeats=10)
    result = profile("resnet18", 224, [8], CPU, prune=f"channel_magnitude:{rate}", settings=settings)
    figures = result["variants"][f"channel_magnitude:{rate}"]["figures"]
    benchmark.extra_info.update(
        theoretical_speedup=figures["theoretical_speedup"],
        measured_speedup_bs8=figures["measured_speedup_bs8"],
        compression_rate_model=figures["compression_rate_model"],
    )
    model = timm_model("resnet18", 1000, 224).eval()
    pruned = channel_pruned(
        model,
        pruners.get("channel_magnitude"),
        PruningConfig(method="channel_magnitude", compression_rates=[rate]),
        sum(p.numel() for p in model.parameters()) / rate,
        ImageData.random(64, 224, 10),
        seed=0,
        device=CPU,
    )[0]
    x = torch.randn(8, 3, 224, 224)

    def forward() -> None:
        with torch.inference_mode():
            pruned(x)

    benchmark.pedantic(forward, rounds=5, iterations=1, warmup_rounds=2)
