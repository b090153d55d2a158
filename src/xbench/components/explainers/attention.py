"""Explainers made for vision transformers (timm ViT and DeiT): attention rollout, Chefer et al.'s gradient-weighted
attention, and AttnLRP. Each works on a copy of the model, with hooks on that copy only: the model a cell measures is
never changed, and no class of timm or torch is patched.

Why not the `lxt` package for AttnLRP: lxt 2.1 requires transformers, accelerate, bitsandbytes and open_clip_torch,
its rule functions cannot be imported without importing transformers (its package `__init__` loads its Llama, Qwen
and BERT patches), its Vision Transformer support is torchvision's, not timm's, and it patches classes globally. The
rules it applies to a ViT (its `cp_LRP` map) are few and written out in its source; they are implemented here, per
instance, in the same Gradient x Input form.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from xbench.components.explainers._base import explainer

_HEAD_FUSIONS = ("mean", "max", "min")


def vit_unsupported(model: nn.Module) -> str | None:
    """None for timm VisionTransformers (ViT, DeiT) whose blocks use timm's `Attention`; otherwise why not.

    Swin, for instance, attends within shifted windows: there is no token-to-token matrix over the whole image.
    """
    from timm.layers import Attention
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        return (
            f"it needs a timm VisionTransformer (ViT, DeiT) with global self-attention, and this is "
            f"{type(model).__name__}"
        )
    if not all(isinstance(getattr(block, "attn", None), Attention) for block in model.blocks):
        return "its blocks do not use timm's Attention module, whose attention matrix the method reads"
    if model.global_pool not in ("token", "avg"):
        return f"it pools tokens by {model.global_pool!r}; the method reads the class token (or the patch tokens' mean)"
    return None


def _patch_grid(model: Any, x: torch.Tensor) -> tuple[int, int]:
    patch_h, patch_w = model.patch_embed.patch_size
    return x.shape[-2] // patch_h, x.shape[-1] // patch_w


def _to_image(token_scores: torch.Tensor, model: Any, x: torch.Tensor) -> torch.Tensor:
    """(B, patches) scores -> (B, 1, H, W), bilinear like pytorch-grad-cam's upsampling of a CAM."""
    grid = _patch_grid(model, x)
    maps = token_scores.reshape(len(x), 1, *grid)
    return nn.functional.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _readout(joint: torch.Tensor, model: Any) -> torch.Tensor:
    """(B, N, N) token-to-token relevance -> (B, patches): the class token's row, or for mean-pooled models the mean
    of the patch tokens' rows; the columns of the patch tokens."""
    prefix = model.num_prefix_tokens
    rows = joint[:, 0, :] if model.global_pool == "token" else joint[:, prefix:, :].mean(dim=1)
    return rows[:, prefix:]


class _AttentionRecorder:
    """Records each block's attention probabilities (B, heads, N, N), and their gradients when asked, on a copy of
    the model whose attention runs unfused (so the probabilities exist as a tensor)."""

    def __init__(self, model: nn.Module, gradients: bool) -> None:
        from timm.layers import Attention

        self.model: Any = copy.deepcopy(model).eval()
        self.attentions: list[torch.Tensor] = []
        self.gradients: dict[int, torch.Tensor] = {}
        for module in self.model.modules():
            if isinstance(module, Attention):
                module.fused_attn = False
                module.attn_drop.register_forward_hook(self._record(gradients))

    def _record(self, gradients: bool) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            index = len(self.attentions)
            self.attentions.append(output)
            if gradients and output.requires_grad:
                output.register_hook(lambda grad: self.gradients.__setitem__(index, grad))

        return hook


@explainer(
    "attention_rollout",
    "xbench",
    defaults={"head_fusion": "mean", "discard_ratio": 0.0},
    supports=vit_unsupported,
)
def attention_rollout(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema 2020): each block's head-fused attention plus identity, multiplied.

    Class-agnostic: the target is not used."""
    fusion = params["head_fusion"]
    if fusion not in _HEAD_FUSIONS:
        from xbench.core.errors import XbenchInputError

        raise XbenchInputError(f"head_fusion must be one of {', '.join(_HEAD_FUSIONS)}, got {fusion!r}")
    recorder = _AttentionRecorder(model, gradients=False)
    with torch.no_grad():
        recorder.model(x)
    return _to_image(_readout(rollout(recorder.attentions, fusion, float(params["discard_ratio"])), model), model, x)


def rollout(attentions: list[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """(B, N, N) rollout of per-block attentions (B, heads, N, N): each block's heads fused, optionally the weakest
    `discard_ratio` of its entries zeroed (jacobgil/vit-explain's option; 0 is the paper's rollout), then (A + I) / 2
    renormalised per row, multiplied from the first block to the last."""
    joint: torch.Tensor | None = None
    for attention in attentions:
        fused = getattr(attention.float(), head_fusion)(dim=1)
        fused = fused.values if head_fusion != "mean" else fused
        if discard_ratio > 0:
            flat = fused.flatten(1)
            lowest = flat.topk(int(flat.shape[1] * discard_ratio), dim=1, largest=False).indices
            fused = flat.scatter(1, lowest, 0.0).view_as(fused)
        identity = torch.eye(fused.shape[-1], device=fused.device)
        step = (fused + identity) / 2
        step = step / step.sum(dim=-1, keepdim=True)
        joint = step if joint is None else step @ joint
    assert joint is not None, "the model has no attention blocks"
    return joint


def _target_score(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, y.view(-1, 1)).sum()


@explainer("transformer_attribution", "xbench", supports=vit_unsupported)
def transformer_attribution(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Gradient-weighted attention relevance (Chefer et al. 2021, generic attention explainability), per target.

    R starts as the identity; each block adds E_heads[(dA * A)+] R, where dA is the target logit's gradient."""
    recorder = _AttentionRecorder(model, gradients=True)
    with torch.enable_grad():
        logits = recorder.model(x.detach().requires_grad_())
        _target_score(logits, y).backward()
    relevance: torch.Tensor | None = None
    for index, attention in enumerate(recorder.attentions):
        weighted = (recorder.gradients[index] * attention).clamp(min=0).mean(dim=1).detach()
        if relevance is None:
            relevance = torch.eye(weighted.shape[-1], device=weighted.device).expand_as(weighted).clone()
        relevance = relevance + weighted @ relevance
    assert relevance is not None, "the model has no attention blocks"
    return _to_image(_readout(relevance, model), model, x)


# --------------------------------------------------------------------------------------------------------------------
# AttnLRP in Gradient x Input form (Achtibat et al. 2024, with the CP-LRP rule inside attention, as lxt applies it to
# Vision Transformers): after these rules, input x gradient of the target logit is the LRP relevance.


class _IdentityRule(torch.autograd.Function):
    """Identity rule for an element-wise non-linearity: the relevance passes through unchanged, i.e. the gradient is
    scaled by output / input (lxt's `identity_rule_implicit`, epsilon 1e-10)."""

    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(output / (inputs + 1e-10))
        return output.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ratio,) = ctx.saved_tensors
        return ratio * grad, None


def _identity_rule(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    return _IdentityRule.apply(inputs[0], output)


def _layer_norm_rule(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    """Identity rule on LayerNorm: the standard deviation is a constant for the backward pass (lxt's
    `layer_norm_forward`)."""
    norm: Any = module
    x = inputs[0]
    mean = x.mean(dim=-1, keepdim=True)
    std = ((x - mean) ** 2).mean(dim=-1, keepdim=True).add(norm.eps).sqrt()
    result = (x - mean) / std.detach()
    if norm.weight is not None:
        result = result * norm.weight
    if norm.bias is not None:
        result = result + norm.bias
    return result


def _stop_gradient(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    return output.detach()


def attnlrp_model(model: nn.Module) -> nn.Module:
    """A copy of the ViT with AttnLRP's rules attached as forward hooks: identity rule on GELU, LayerNorm's
    standard deviation held constant, and no relevance through queries and keys (CP-LRP: the softmax's inputs)."""
    from timm.layers import Attention

    copied = copy.deepcopy(model).eval()
    for module in copied.modules():
        if isinstance(module, nn.GELU):
            module.register_forward_hook(_identity_rule)
        elif isinstance(module, nn.LayerNorm):
            module.register_forward_hook(_layer_norm_rule)
        elif isinstance(module, Attention):
            # q_norm and k_norm (identities unless the model normalises q and k) carry q and k to the softmax
            module.q_norm.register_forward_hook(_stop_gradient)
            module.k_norm.register_forward_hook(_stop_gradient)
    return copied


@explainer("attnlrp", "xbench", post={"channel_reduction": "sum", "absolute": False}, supports=vit_unsupported)
def attnlrp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """AttnLRP (Achtibat et al. 2024), CP-LRP in the attention as lxt applies it to ViTs; input x LRP gradient.

    Input x gradient of the target logit through `attnlrp_model`'s rules: the relevance, summed over channels."""
    explained = attnlrp_model(model)
    inputs = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        _target_score(explained(inputs), y).backward()
    assert inputs.grad is not None
    return (inputs * inputs.grad).detach()
