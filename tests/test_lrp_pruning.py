"""Pruning by LRP relevance: relevance is conserved where it should be, the pruners reach their rates, rank
differently from magnitude, and refuse what LRP cannot explain."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from xbench.components.data import ImageData
from xbench.components.pruners import PruneRequest, pruners
from xbench.components.pruners.lrp import lrp_relevance
from xbench.components.pruning import channel_pruned, make_permanent, scope_modules, sparsity_report, unprunable_reason
from xbench.core.suite import FinetuneConfig, PruningConfig

CPU = torch.device("cpu")


def config(method: str, **overrides: object) -> PruningConfig:
    return PruningConfig(method=method, compression_rates=[2], finetune=FinetuneConfig(epochs=0), **overrides)


def test_relevance_is_conserved_from_the_head_to_the_first_conv(tiny_model: torch.nn.Module) -> None:
    """One-hot output relevance gives the head 1 per image; the head's weights pass on what its bias does not
    absorb, and the z+ / flat rules below conserve it down to the first conv (BatchNorm merged, residuals summed)."""
    data = ImageData.random(16, 32, num_classes=tiny_model.num_classes, seed=3)
    relevance = lrp_relevance(tiny_model, data, CPU, images=16)
    head = tiny_model.default_cfg["classifier"]
    assert float(relevance.channels[head].sum()) == pytest.approx(16, rel=1e-4)
    first_conv = next(name for name, m in tiny_model.named_modules() if isinstance(m, torch.nn.Conv2d))
    through_head = float(relevance.weights[head].sum())
    assert float(relevance.channels[first_conv].sum()) == pytest.approx(through_head, rel=1e-3)
    # a weight's relevance is the epsilon share of its outputs': per output channel the weights add up to it, less
    # the bias's share
    assert relevance.weights[first_conv].shape == tiny_model.get_submodule(first_conv).weight.shape


def test_lrp_pruning_reaches_its_rate_and_differs_from_magnitude(
    tiny_model: torch.nn.Module, small_data: ImageData
) -> None:
    def zeros(method: str) -> list[torch.Tensor]:
        model = copy.deepcopy(tiny_model)
        params = sum(p.numel() for p in model.parameters())
        request = PruneRequest(config(method), 4, small_data, device=CPU, base_params=params)
        _, masked = pruners.get(method).prune_step(model, request)
        make_permanent(masked)
        assert sparsity_report(model, "conv")["sparsity_scope"] == pytest.approx(0.75, abs=0.005)
        return [m.weight == 0 for _, m in scope_modules(model, "conv")]

    lrp, magnitude = zeros("lrp"), zeros("magnitude")
    assert not all(torch.equal(a, b) for a, b in zip(lrp, magnitude, strict=True))


def test_channel_lrp_reaches_the_whole_model_rate(small_data: ImageData) -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=small_data.num_classes).eval()
    before = sum(p.numel() for p in model.parameters())
    pruner = pruners.get("channel_lrp")
    pruned, _ = channel_pruned(model, pruner, config("channel_lrp"), before / 2, small_data, seed=0, device=CPU)
    assert sparsity_report(pruned, "conv", original=model)["compression_rate_model"] == pytest.approx(2, rel=0.02)
    magnitude, _ = channel_pruned(
        model, pruners.get("channel_magnitude"), config("channel_magnitude"), before / 2, small_data, 0, CPU
    )
    kept = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    kept_by_magnitude = [m.out_channels for m in magnitude.modules() if isinstance(m, torch.nn.Conv2d)]
    # another criterion keeps other channels: other layer widths, or the same widths with other weights
    assert kept != kept_by_magnitude or any(
        not torch.equal(a, b)
        for a, b in zip(pruned.state_dict().values(), magnitude.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("method", ["lrp", "channel_lrp"])
def test_models_without_lrp_canonizers_are_refused(method: str) -> None:
    assert "canonizers" in (unprunable_reason("test_vit", method, "conv_linear", "layerwise", 32) or "")
    assert unprunable_reason("test_resnet", method, "conv", "layerwise", 32) is None
