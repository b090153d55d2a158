"""2:4 semi-structured sparsity: the pattern, the one rate it reaches and what that rate counts, plan-time refusal
of other rates, and the latency figure's honest absence off sparse tensor cores."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from xbench.components.data import ImageData
from xbench.components.pruners import PruneRequest, pruners
from xbench.components.pruners.nm_2_4 import follows_pattern, nm_mask, semi_structured_unavailable
from xbench.components.pruning import make_permanent, scope_modules, sparsity_report
from xbench.core.errors import XbenchInputError
from xbench.core.suite import FinetuneConfig, PerfConfig, PruningConfig, parse_suite
from xbench.measure.perf import latency
from xbench.plan.planner import validate

CPU = torch.device("cpu")


def test_the_mask_keeps_the_two_largest_of_every_four_along_the_reduction_dimension() -> None:
    weight = torch.tensor([[0.1, -4.0, 3.0, 0.2, 1.0, 1.0, -1.0, 0.5]])
    assert nm_mask(weight, 2, 4).tolist() == [[False, True, True, False, True, True, False, False]]
    conv = torch.randn(6, 8, 3, 3)  # groups run over (in_channels x kh x kw), the GEMM's K
    mask = nm_mask(conv, 2, 4)
    assert mask.reshape(6, -1, 4).sum(dim=-1).eq(2).all()
    assert follows_pattern(conv * mask, 2, 4) and not follows_pattern(conv, 2, 4)


def test_a_model_pruned_2_4_reaches_cr_2_over_the_layers_that_carry_the_pattern(
    tiny_model: nn.Module, small_data: ImageData
) -> None:
    pruner = pruners.get("nm_2_4")
    settings = PruningConfig(method="nm_2_4", compression_rates=[2], scope="conv_linear", finetune=FinetuneConfig())
    model = copy.deepcopy(tiny_model)
    _, masked = pruner.prune_step(model, PruneRequest(settings, 2, small_data, device=CPU))
    make_permanent(masked)
    patterned = pruner.patterned_modules(model, "conv_linear")
    assert patterned and all(follows_pattern(m.weight, 2, 4) for m in patterned)
    rate, counted = pruner.achieved_rate(model, tiny_model, settings)
    assert rate == pytest.approx(2.0, rel=0.01)
    dense = [m for _, m in scope_modules(model, "conv_linear") if m not in patterned]
    # test_resnet's stem conv sees 3 channels x 3 x 3 = 27 inputs: not a multiple of 4, so it stays dense, and the
    # figure says so
    assert dense and f"{len(dense)} left dense" in counted
    assert sparsity_report(model, "conv_linear", original=tiny_model)["compression_rate_scope"] < rate


def test_other_rates_are_refused_at_plan_time_naming_the_field() -> None:
    suite = parse_suite(
        {
            "name": "t",
            "dataset": {"image_size": 32},
            "models": [{"name": "test_resnet"}],
            "pruning": [{"method": "nm_2_4", "compression_rates": [1, 2, 4]}],
            "explainers": ["saliency"],
        }
    )
    with pytest.raises(XbenchInputError, match=r"compression_rates.*reaches CR 2 only"):
        validate(suite)


def test_off_sparse_tensor_cores_the_speed_figure_says_why_it_is_missing(tiny_model: nn.Module) -> None:
    values, missing = pruners.get("nm_2_4").sparse_figures(tiny_model, 32, CPU, PerfConfig(batch_sizes=[1, 4]), latency)
    assert values == {}
    assert set(missing) == {"semi_structured_speedup_bs1", "semi_structured_speedup_bs4"}
    assert "no speed-up is expected" in missing["semi_structured_speedup_bs1"]
    assert semi_structured_unavailable(CPU) == missing["semi_structured_speedup_bs4"]
    assert pruners.get("magnitude").sparse_figures(tiny_model, 32, CPU, PerfConfig(), latency) == ({}, {})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="semi-structured kernels need a CUDA GPU")
def test_on_a_gpu_the_2_4_linear_layers_run_semi_structured() -> None:  # pragma: no cover - GPU machines only
    device = torch.device("cuda")
    if semi_structured_unavailable(device):
        pytest.skip(semi_structured_unavailable(device) or "")
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 512), nn.ReLU(), nn.Linear(512, 128)).to(device)
    for layer in (model[1], model[3]):
        torch.nn.utils.prune.custom_from_mask(layer, "weight", nm_mask(layer.weight, 2, 4))
        torch.nn.utils.prune.remove(layer, "weight")
    values, missing = pruners.get("nm_2_4").sparse_figures(model, 32, device, PerfConfig(batch_sizes=[64]), latency)
    assert values.get("semi_structured_layers") == 2, missing
    assert values["semi_structured_speedup_bs64"] > 0
