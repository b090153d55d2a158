import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import timm
import torch
from torch import nn
from torch.nn.utils import prune

from xbench.components.data import ImageData
from xbench.components.models import timm_model
from xbench.components.pruners import Pruner, PruneRequest, pruners
from xbench.components.pruning import (
    channel_pruned,
    make_permanent,
    prune_step,
    pruned_model,
    rebuild,
    schedule_steps,
    scope_modules,
    sparsity_report,
    structure_of,
    unprunable_reason,
    unstructured_masks,
)
from xbench.core.cache import Cache
from xbench.core.suite import FinetuneConfig, ModelConfig, PruningConfig, TrainConfig
from xbench.measure.perf import count_flops

CPU = torch.device("cpu")


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


@pytest.mark.parametrize("method", ["magnitude", "lrp"])  # lrp: relevance recomputed on each step's model
def test_iterative_pruning_fine_tunes_under_the_mask_and_caches_each_step(
    tmp_path: Path, small_data: ImageData, tiny_model: nn.Module, method: str
) -> None:
    cache = Cache(tmp_path)
    train = TrainConfig(epochs=1, lr=0.01, batch_size=32)
    settings = config(method=method, schedule="iterative", finetune=FinetuneConfig(epochs=1, lr=0.01))
    model_config, asked = ModelConfig(name="test_resnet", train=train), PruneRequest(settings, 8, small_data)
    model = pruned_model(tiny_model, "base", model_config, asked, cache)
    assert sparsity_report(model, "conv")["sparsity_scope"] == pytest.approx(1 - 1 / 8, abs=0.005)
    assert len(list((tmp_path / "pruned").glob("*.safetensors"))) == 3  # CR 2, 4, 8
    assert not any(hasattr(m, "weight_orig") for m in model.modules())  # masks made permanent
    # Reloaded from the cache (no pickle): same weights.
    again = pruned_model(tiny_model, "base", model_config, asked, cache)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_every_unstructured_pruner_reaches_its_rate(tiny_model: nn.Module, small_data: ImageData) -> None:
    for name in [n for n in pruners.names() if pruners.get(n).kind == "unstructured"]:
        model = copy.deepcopy(tiny_model)
        params = sum(p.numel() for p in model.parameters())
        asked = PruneRequest(config(method=name), 4, small_data, base_params=params)
        _, masked = pruners.get(name).prune_step(model, asked)
        make_permanent(masked)
        assert sparsity_report(model, "conv")["sparsity_scope"] == pytest.approx(0.75, abs=0.005), name


def test_timm_model_is_rebuilt_after_pruning() -> None:
    model = timm.create_model("test_resnet", num_classes=3)
    make_permanent(prune_step(model, pruners.get("magnitude"), config(), 2, seed=0))
    assert set(model.state_dict()) == set(timm.create_model("test_resnet", num_classes=3).state_dict())


def test_random_pruning_differs_from_magnitude_and_is_seeded(tiny_model: nn.Module) -> None:
    def zeros(method: str, seed: int) -> list[torch.Tensor]:
        model = copy.deepcopy(tiny_model)
        make_permanent(prune_step(model, pruners.get(method), config(method=method), 2, seed=seed))
        return [m.weight == 0 for _, m in scope_modules(model, "conv")]

    same = [torch.equal(a, b) for a, b in zip(zeros("random", 0), zeros("random", 0), strict=True)]
    other_seed = [torch.equal(a, b) for a, b in zip(zeros("random", 0), zeros("random", 1), strict=True)]
    versus_magnitude = [torch.equal(a, b) for a, b in zip(zeros("random", 0), zeros("magnitude", 0), strict=True)]
    assert all(same) and not all(other_seed) and not all(versus_magnitude)


STRUCTURED = [name for name in pruners.names() if pruners.get(name).structured]


@pytest.mark.parametrize("name", STRUCTURED)
def test_channel_pruning_reaches_the_whole_model_rate_and_cuts_flops(name: str, small_data: ImageData) -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=small_data.num_classes).eval()
    before = sum(p.numel() for p in model.parameters())
    pruned, ratio = channel_pruned(
        model, pruners.get(name), config(method=name), before / 4, small_data, seed=0, device=torch.device("cpu")
    )
    report = sparsity_report(pruned, "conv", original=model)
    assert report["compression_rate_model"] == pytest.approx(4, rel=0.02)
    assert 0 < ratio < 0.95
    assert pruned.get_classifier().out_features == small_data.num_classes  # the head keeps every class
    flops = count_flops(pruned, 32, torch.device("cpu")).values["flops_dense"]
    assert flops < count_flops(model, 32, torch.device("cpu")).values["flops_dense"]
    assert sum(p.numel() for p in model.parameters()) == before  # the input model is left alone


def test_a_pruned_structure_is_rebuilt_without_pickle(small_data: ImageData, tiny_model: nn.Module) -> None:
    pruned, _ = channel_pruned(
        tiny_model,
        pruners.get("channel_magnitude"),
        config(method="channel_magnitude"),
        sum(p.numel() for p in tiny_model.parameters()) / 2,
        small_data,
        seed=0,
        device=torch.device("cpu"),
    )
    structure = json.loads(json.dumps(structure_of(pruned)))  # as stored on disk
    rebuilt = rebuild("test_resnet", small_data.num_classes, structure)
    rebuilt.load_state_dict(pruned.state_dict())
    x = small_data.eval_x[:4]
    torch.testing.assert_close(rebuilt.eval()(x), pruned.eval()(x))


@pytest.mark.parametrize("method", ["channel_magnitude", "channel_lrp"])
def test_structured_pruning_through_the_cache(
    tmp_path: Path, small_data: ImageData, tiny_model: nn.Module, method: str
) -> None:
    cache = Cache(tmp_path)
    train = TrainConfig(epochs=1, batch_size=32)
    settings = config(method=method, schedule="iterative", finetune=FinetuneConfig(epochs=1, lr=1e-3))
    model_config = ModelConfig(name="test_resnet", train=train)
    first = pruned_model(tiny_model, "b", model_config, PruneRequest(settings, 4, small_data), cache)
    assert sparsity_report(first, "conv", original=tiny_model)["compression_rate_model"] == pytest.approx(4, rel=0.05)
    again = pruned_model(tiny_model, "b", model_config, PruneRequest(settings, 4, small_data), cache)
    x = small_data.eval_x[:4]
    torch.testing.assert_close(first(x), again(x))
    # two steps (CR 2, then 4), each its weights and structure, each with its sha256 beside it
    assert sorted(p.suffix for p in (tmp_path / "pruned").iterdir() if p.suffix != ".sha256") == [
        ".json",
        ".json",
        ".safetensors",
        ".safetensors",
    ]
    assert len([p for p in (tmp_path / "pruned").iterdir() if p.suffix == ".sha256"]) == 4


@pytest.mark.parametrize("model_name", ["test_efficientnet", "test_convnext", "test_vit"])
def test_channel_pruning_works_across_timm_families(model_name: str, small_data: ImageData) -> None:
    torch.manual_seed(0)
    model = timm_model(model_name, small_data.num_classes, 32).eval()
    settings = config(method="channel_magnitude", scope="conv_linear")
    pruned, _ = channel_pruned(
        model,
        pruners.get("channel_magnitude"),
        settings,
        sum(p.numel() for p in model.parameters()) / 2,
        small_data,
        0,
        torch.device("cpu"),
    )
    assert sparsity_report(pruned, "conv_linear", original=model)["compression_rate_model"] == pytest.approx(2, rel=0.1)
    rebuilt = rebuild(model_name, small_data.num_classes, json.loads(json.dumps(structure_of(pruned))), 32)
    rebuilt.load_state_dict(pruned.state_dict())
    torch.testing.assert_close(rebuilt.eval()(small_data.eval_x[:2]), pruned(small_data.eval_x[:2]))


@pytest.mark.parametrize("name", pruners.names())
def test_every_method_prunes_a_vit(name: str, small_data: ImageData) -> None:
    torch.manual_seed(0)
    model = timm_model("test_vit", small_data.num_classes, 32).eval()
    pruner = pruners.get(name)
    settings = config(method=name, scope="conv_linear")
    if getattr(pruner, "needs_batchnorm", False) or "lrp" in name:  # refused at plan time (tests/test_plan.py)
        assert unprunable_reason("test_vit", name, "conv_linear", "layerwise", 32) is not None
        return
    if pruner.kind == "semi-structured":  # tests/test_nm_sparsity.py
        assert pruner.compression_rate_error(4) is not None
        return
    if pruner.structured:
        params = sum(p.numel() for p in model.parameters())
        pruned, _ = channel_pruned(model, pruner, settings, params / 2, small_data, 0, torch.device("cpu"))
        assert sparsity_report(pruned, "conv_linear", original=model)["compression_rate_model"] > 1.8
    else:
        pruned = copy.deepcopy(model)
        make_permanent(prune_step(pruned, pruner, settings, 4, seed=0))
        assert sparsity_report(pruned, "conv_linear")["sparsity_scope"] == pytest.approx(0.75, abs=0.005)
    assert pruned(small_data.eval_x[:2]).shape == (2, small_data.num_classes)


@dataclass(frozen=True)
class TwoOfFour(Pruner):
    """A pruning kind from outside the package: in every group of 4 consecutive weights of a layer in scope, the 2 of
    smallest magnitude are zeroed (NVIDIA's 2:4 semi-structured pattern; CR 2 of the scope, nothing else)."""

    kind: ClassVar[str] = "semi-structured"

    def prune_step(self, model, request):  # type: ignore[no-untyped-def]
        assert request.compression_rate == 2, "2:4 sparsity is CR 2 of its scope"
        masked = []
        for _, module in scope_modules(model, request.config.scope):
            weight = module.weight.detach()
            groups = weight.abs().reshape(-1, 4)
            keep = torch.ones_like(groups, dtype=torch.bool)
            keep.scatter_(1, groups.argsort(dim=1)[:, :2], False)
            torch.nn.utils.prune.custom_from_mask(module, "weight", keep.reshape(weight.shape))
            masked.append((module, "weight"))
        return model, masked

    def achieved_rate(self, pruned, original, config):  # type: ignore[no-untyped-def]
        return sparsity_report(pruned, config.scope, original=original)["compression_rate_scope"], "scope weights"


def test_a_pruning_kind_is_a_class_a_plugin_can_add(
    tiny_model: torch.nn.Module, small_data: ImageData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pruned_model() asks the method's kind to prune: a new kind needs no branch in xbench."""
    monkeypatch.setitem(pruners._entries, "two_of_four", TwoOfFour("two_of_four", "1", "2:4 semi-structured"))
    settings = config(method="two_of_four", schedule="oneshot")
    model = pruned_model(
        tiny_model, "base", ModelConfig(name="test_resnet"), PruneRequest(settings, 2, small_data), Cache(tmp_path)
    )
    for _, module in scope_modules(model, "conv"):
        nonzero_per_group = (module.weight.reshape(-1, 4) != 0).sum(dim=1)
        assert int(nonzero_per_group.max()) <= 2
    assert sparsity_report(model, "conv")["sparsity_scope"] == pytest.approx(0.5, abs=0.01)
    assert not any(hasattr(m, "weight_orig") for m in model.modules())  # its masks were made permanent
