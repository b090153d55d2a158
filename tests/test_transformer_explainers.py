"""The transformer explainers on small timm ViTs: shapes, refusals, a plain reference for rollout, LRP conservation
for AttnLRP, and the sanity checks (a randomised model, another target class)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from timm.utils import AttentionExtract

from xbench.components.explainers import explain, explainers
from xbench.components.explainers.attention import attnlrp_model

TRANSFORMER_EXPLAINERS = ["attention_rollout", "transformer_attribution", "attnlrp"]
CPU = torch.device("cpu")


def small_vit(seed: int = 0, name: str = "vit_tiny_patch16_224", **options: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(
        name, pretrained=False, num_classes=4, img_size=32, patch_size=8, depth=3, **options
    ).eval()


def images(count: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, 32, 32, generator=generator), torch.tensor([0, 1, 2, 3][:count])


def attribution(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    plugin = explainers.get(name)
    return explain(plugin, plugin.resolve({}), model, x, y, CPU)


@pytest.mark.parametrize("name", TRANSFORMER_EXPLAINERS)
@pytest.mark.parametrize("model_name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_maps_have_the_input_shape_and_are_finite(name: str, model_name: str) -> None:
    x, y = images()
    maps = attribution(name, small_vit(name=model_name), x, y)
    assert maps.shape == (3, 1, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.std() > 0


@pytest.mark.parametrize("name", TRANSFORMER_EXPLAINERS)
def test_cnns_and_swin_are_refused_with_a_reason(name: str) -> None:
    plugin = explainers.get(name)
    assert plugin.limited
    resnet = timm.create_model("test_resnet", pretrained=False, num_classes=4)
    assert "ResNet" in (plugin.unsupported_reason(resnet) or "")
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=4, depths=(1, 1, 1, 1))
    assert "SwinTransformer" in (plugin.unsupported_reason(swin) or "")
    assert plugin.unsupported_reason(small_vit()) is None


def reference_rollout(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Abnar and Zuidema's rollout written out in NumPy, from the attention maps timm's own AttentionExtract reads
    (an FX trace of the softmax), not from xbench's hooks."""
    traced = model
    for block in traced.blocks:  # type: ignore[union-attr]
        block.attn.fused_attn = False
    maps = AttentionExtract(traced)(x)
    joint = None
    for name in sorted(maps, key=lambda key: int(key.split(".")[1])):
        attention = maps[name].detach().double().numpy().mean(axis=1)
        step = (attention + np.eye(attention.shape[-1])) / 2
        step = step / step.sum(axis=-1, keepdims=True)
        joint = step if joint is None else step @ joint
    assert joint is not None
    scores = joint[:, 0, 1:].reshape(len(x), 1, 4, 4)
    upsampled = torch.nn.functional.interpolate(torch.from_numpy(scores), size=(32, 32), mode="bilinear")
    return upsampled.numpy()


def test_rollout_equals_a_plain_reference_computation() -> None:
    x, y = images()
    model = small_vit()
    ours = attribution("attention_rollout", model, x, y)
    reference = reference_rollout(small_vit(), x)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)


def test_rollout_discards_the_weakest_attention_when_asked() -> None:
    x, y = images()
    plugin = explainers.get("attention_rollout")
    plain = explain(plugin, plugin.resolve({}), small_vit(), x, y, CPU)
    sparse = explain(plugin, plugin.resolve({"discard_ratio": 0.9}), small_vit(), x, y, CPU)
    assert not np.allclose(plain, sparse)


def test_attnlrp_conserves_the_target_logit() -> None:
    """With AttnLRP's rules the network is linear in its inputs, biases and embeddings, so their relevances add up to
    the target logit exactly; a rule that is not wired in (GELU, LayerNorm, q/k) breaks the sum."""
    model = small_vit().double()
    x, y = images()
    x = x.double()
    explained = attnlrp_model(model)
    inputs = x.clone().requires_grad_()
    logits = explained(inputs)
    target = logits.gather(1, y.view(-1, 1)).sum()
    target.backward()
    assert inputs.grad is not None
    sources = float((inputs * inputs.grad).detach().sum())
    for name, parameter in explained.named_parameters():
        if name.endswith("bias") or name in ("cls_token", "pos_embed"):
            assert parameter.grad is not None, name
            sources += float((parameter * parameter.grad).detach().sum())
    assert sources == pytest.approx(float(target), rel=1e-9)
    with torch.no_grad():  # the rules change the backward pass only
        torch.testing.assert_close(logits, model(x))
    # the plain gradient x input of the same model does not conserve (so the test can fail)
    plain_inputs = x.clone().requires_grad_()
    model.zero_grad()
    model(plain_inputs).gather(1, y.view(-1, 1)).sum().backward()
    assert plain_inputs.grad is not None
    plain = float((plain_inputs * plain_inputs.grad).detach().sum())
    plain += sum(
        float((p * p.grad).detach().sum())
        for n, p in model.named_parameters()
        if (n.endswith("bias") or n in ("cls_token", "pos_embed")) and p.grad is not None
    )
    assert plain != pytest.approx(float(target), rel=1e-3)


@pytest.mark.parametrize("name", TRANSFORMER_EXPLAINERS)
def test_randomising_the_model_changes_the_map(name: str) -> None:
    """Adebayo et al.'s sanity check: the last block re-initialised, the map moves."""
    x, y = images()
    trained = small_vit()
    randomised = small_vit()
    torch.manual_seed(5)
    for module in randomised.blocks[-1].modules():  # type: ignore[union-attr]
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.5)
    before, after = attribution(name, trained, x, y), attribution(name, randomised, x, y)
    correlation = np.corrcoef(before.ravel(), after.ravel())[0, 1]
    assert correlation < 0.95


@pytest.mark.parametrize("name", ["transformer_attribution", "attnlrp"])
def test_class_sensitive_explainers_change_with_the_target(name: str) -> None:
    x, _ = images(count=2)
    model = small_vit()
    first = attribution(name, model, x, torch.tensor([0, 0]))
    second = attribution(name, model, x, torch.tensor([3, 3]))
    assert not np.allclose(first, second)


def test_rollout_is_class_agnostic_and_leaves_the_model_unchanged() -> None:
    x, _ = images(count=2)
    model = small_vit()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    first = attribution("attention_rollout", model, x, torch.tensor([0, 0]))
    second = attribution("attention_rollout", model, x, torch.tensor([3, 3]))
    np.testing.assert_array_equal(first, second)
    for name in TRANSFORMER_EXPLAINERS:
        attribution(name, model, x, torch.tensor([0, 1]))
    assert all(block.attn.fused_attn for block in model.blocks)  # type: ignore[union-attr]
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    assert not any(module._forward_hooks for module in model.modules())
