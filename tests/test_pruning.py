import copy
from pathlib import Path

import pytest
import timm
import torch
from torch import nn
from torch.nn.utils import prune

from xbench.cache import Cache
from xbench.data import ImageData
from xbench.pruning import (
    make_permanent,
    prune_step,
    pruned_model,
    pruners,
    schedule_steps,
    scope_modules,
    sparsity_report,
    unstructured_masks,
)
from xbench.suite import FinetuneConfig, PruningConfig, TrainConfig


def config(**overrides: object) -> PruningConfig:
    values = {"method": "magnitude", "compression_rates": [2], "finetune": FinetuneConfig(epochs=0)}
    values.update(overrides)
    return PruningConfig(**values)


def test_layerwise_masks_match_torch_l1_unstructured() -> None:
    torch.manual_seed(0)
    weights = [torch.randn(8, 4, 3, 3), torch.randn(16, 8)]
    masks = unstructured_masks([w.abs() for w in weights], 0.75, "layerwise")
    for weight, mask in zip(weights, masks, strict=True):
        expected = prune.L1Unstructured(amount=0.75).compute_mask(weight, torch.ones_like(weight))
        assert torch.equal(mask, expected.bool())


def test_global_masks_match_torch_global_unstructured() -> None:
    torch.manual_seed(0)
    layers = [nn.Linear(10, 20), nn.Linear(20, 5)]
    reference = copy.deepcopy(layers)
    prune.global_unstructured([(m, "weight") for m in reference], prune.L1Unstructured, amount=0.6)
    masks = unstructured_masks([m.weight.detach().abs() for m in layers], 0.6, "global")
    for mask, module in zip(masks, reference, strict=True):
        assert torch.equal(mask, module.weight_mask.bool())


def test_scope_selects_layer_types(tiny_model: nn.Module) -> None:
    conv = scope_modules(tiny_model, "conv")
    conv_linear = scope_modules(tiny_model, "conv_linear")
    everything = scope_modules(tiny_model, "all")
    assert all(isinstance(m, nn.Conv2d) for _, m in conv)
    assert len(conv) < len(conv_linear) < len(everything)


@pytest.mark.parametrize("granularity", ["layerwise", "global"])
@pytest.mark.parametrize("scope", ["conv", "conv_linear", "all"])
@pytest.mark.parametrize("rate", [2, 4, 8, 32])
def test_sparsity_in_scope_matches_the_compression_rate(
    tiny_model: nn.Module, granularity: str, scope: str, rate: float
) -> None:
    model = copy.deepcopy(tiny_model)
    masked = prune_step(model, pruners.get("magnitude"), config(scope=scope, granularity=granularity), rate, seed=0)
    make_permanent(masked)
    report = sparsity_report(model, scope)
    assert report["sparsity_scope"] == pytest.approx(1 - 1 / rate, abs=0.005)
    assert report["compression_rate_scope"] == pytest.approx(rate, rel=0.03)
    if scope == "conv":  # norms and the head lie outside the scope, so the whole model shrinks less
        assert report["compression_rate_model"] < report["compression_rate_scope"]
    assert report["params"] == sum(p.numel() for p in model.parameters())


def test_schedule_steps_follow_the_seed_paper() -> None:
    assert schedule_steps(32, "iterative") == [2, 4, 8, 16, 32]
    assert schedule_steps(3, "iterative") == [2, 3]
    assert schedule_steps(2, "iterative") == [2]
    assert schedule_steps(32, "oneshot") == [32]


def test_a_later_step_keeps_earlier_pruned_weights_pruned(tiny_model: nn.Module) -> None:
    model = copy.deepcopy(tiny_model)
    make_permanent(prune_step(model, pruners.get("magnitude"), config(), 2, seed=0))
    first_zeros = [m.weight == 0 for _, m in scope_modules(model, "conv")]
    with torch.no_grad():  # fine-tuning would move surviving weights; make some of them tiny
        for _, module in scope_modules(model, "conv"):
            module.weight.mul_(torch.rand_like(module.weight))
    make_permanent(prune_step(model, pruners.get("magnitude"), config(), 4, seed=0))
    for zeros, (_, module) in zip(first_zeros, scope_modules(model, "conv"), strict=True):
        assert bool((module.weight[zeros] == 0).all())
    assert sparsity_report(model, "conv")["sparsity_scope"] == pytest.approx(0.75, abs=0.005)


def test_iterative_pruning_fine_tunes_under_the_mask_and_caches_each_step(
    tmp_path: Path, small_data: ImageData, tiny_model: nn.Module
) -> None:
    cache = Cache(tmp_path)
    train = TrainConfig(epochs=1, lr=0.01, batch_size=32)
    settings = config(schedule="iterative", finetune=FinetuneConfig(epochs=1, lr=0.01))
    model = pruned_model(
        tiny_model, "base", "test_resnet", settings, 8, small_data, train, 0, cache, torch.device("cpu")
    )
    assert sparsity_report(model, "conv")["sparsity_scope"] == pytest.approx(1 - 1 / 8, abs=0.005)
    assert len(list((tmp_path / "pruned").glob("*.safetensors"))) == 3  # CR 2, 4, 8
    assert not any(hasattr(m, "weight_orig") for m in model.modules())  # masks made permanent
    # Reloaded from the cache (no pickle): same weights.
    again = pruned_model(
        tiny_model, "base", "test_resnet", settings, 8, small_data, train, 0, cache, torch.device("cpu")
    )
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_every_registered_pruner_reaches_its_rate(tiny_model: nn.Module) -> None:
    for name in pruners.names():
        model = copy.deepcopy(tiny_model)
        make_permanent(prune_step(model, pruners.get(name), config(method=name), 4, seed=0))
        assert sparsity_report(model, "conv")["sparsity_scope"] == pytest.approx(0.75, abs=0.005), name


def test_timm_model_is_rebuilt_after_pruning() -> None:
    model = timm.create_model("test_resnet", num_classes=3)
    make_permanent(prune_step(model, pruners.get("magnitude"), config(), 2, seed=0))
    assert set(model.state_dict()) == set(timm.create_model("test_resnet", num_classes=3).state_dict())
