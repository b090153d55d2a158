"""The torch metric engine against its references and the forward-pass floor (the figures `xbench verify-metrics`
prints).

Each benchmark times the engine on a randomly initialised resnet18 at 64 px, 8 images, with Quantus's recorded draws
replayed; `extra_info` in the JSON holds the max abs difference to the reference (Quantus 0.6, or the independent
implementation a metric Quantus lacks names), the reference's time, the floor and the pass counts. Nothing here
asserts a time: the figures are recorded and compared with `--benchmark-compare`.
"""

from __future__ import annotations

import pytest
import torch

from xbench.components.explainers import explain_tensor, explainers
from xbench.measure.engine import EngineContext, engine_metrics, run_metric
from xbench.measure.metrics import metrics
from xbench.measure.verify import (
    VERIFY_EXPLAINER,
    pass_times,
    random_inputs,
    verification_params,
    verify_metric,
)

CPU = torch.device("cpu")
MODEL, IMAGE_SIZE, IMAGES = "resnet18", 64, 8


@pytest.mark.parametrize("name", engine_metrics.names())
def test_engine_metric(benchmark: pytest.FixtureRequest, name: str) -> None:
    channels = 1 if engine_metrics.get(name).quantus_needs_one_channel else 3
    model, x, y, a = random_inputs(MODEL, IMAGE_SIZE, IMAGES, seed=0, in_chans=channels)
    plugin = explainers.get(VERIFY_EXPLAINER)

    def explain(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return explain_tensor(plugin, plugin.resolve({}), model, inputs, targets, CPU, batch_size=len(inputs))

    if metrics.get(name).needs_explain_func:
        a = explain(torch.as_tensor(x), torch.as_tensor(y)).numpy()
    times = pass_times(model, tuple(x.shape[1:]), CPU)
    params = verification_params(IMAGE_SIZE)[name]
    result = verify_metric(name, model, x, y, a, CPU, times, params)  # best of 3, as `xbench verify-metrics`
    draws = {}  # the engine's own draws: the benchmark times what a suite runs

    def run() -> None:
        context = EngineContext(model, CPU, batch_size=times.batch_size, explain=explain, draws=draws)
        run_metric(name, params, context, x, y, a)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(result.as_dict())
    benchmark.extra_info["floor_batch_size"] = times.batch_size
    benchmark.extra_info["engine_min_over_floor"] = benchmark.stats.stats.min / result.floor_seconds
