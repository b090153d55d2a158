"""Layer-wise relevance propagation with Zennit: composites with xbench's canonizers for timm ResNets and VGGs (also
the relevance that `lrp` and `channel_lrp` pruning rank by)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xbench.components.explainers._base import GRADIENT_POST, explainer, without_inplace

# ---------------------------------------------------------------------------------------------------- Zennit LRP


def lrp_canonizers(model: nn.Module) -> list[Any]:
    """BatchNorm merged into the preceding conv, and timm ResNet residual sums made explicit (zennit's torchvision
    ResNet canonizer, rewritten for timm's BasicBlock/Bottleneck), so relevance is conserved through both."""
    from timm.models.resnet import BasicBlock, Bottleneck
    from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
    from zennit.layer import Sum

    def residual_forward(self: Any, x: torch.Tensor) -> torch.Tensor:  # a timm BasicBlock or Bottleneck
        shortcut = x
        names: tuple[str, ...] = ("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2")
        if isinstance(self, Bottleneck):
            names = ("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3")
        for name in names:
            x = getattr(self, name)(x)
        for name in ("se", "drop_path"):
            if getattr(self, name, None) is not None:
                x = getattr(self, name)(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x = self.canonizer_sum(torch.stack([shortcut, x], dim=-1))
        return (self.act3 if isinstance(self, Bottleneck) else self.act2)(x)

    def attributes(name: str, module: nn.Module) -> dict[str, Any] | None:
        if isinstance(module, BasicBlock | Bottleneck):
            return {"forward": residual_forward.__get__(module), "canonizer_sum": Sum()}
        return None

    return [SequentialMergeBatchNorm(), AttributeCanonizer(attributes)]


def lrp_unsupported(model: nn.Module) -> str | None:
    """LRP needs every residual sum canonized: timm ResNets (BasicBlock/Bottleneck) and plain VGG-style CNNs."""
    from timm.models.resnet import ResNet
    from timm.models.vgg import VGG

    if isinstance(model, ResNet | VGG):
        return None
    return (
        f"xbench has LRP canonizers for timm ResNet and VGG models, not {type(model).__name__} "
        "(its residual sums would not conserve relevance)"
    )


def _lrp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, composite_name: str) -> torch.Tensor:
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat

    copied = without_inplace(model)
    canonizers = lrp_canonizers(copied)
    if composite_name == "epsilon_gamma_box":
        # The box rule needs the input's bounds: those of this batch of (normalised) images.
        low, high = torch.full_like(x, float(x.min())), torch.full_like(x, float(x.max()))
        composite = EpsilonGammaBox(low=low, high=high, canonizers=canonizers)
    else:
        composite = EpsilonPlusFlat(canonizers=canonizers)
    with Gradient(model=copied, composite=composite) as attributor:
        # The output relevance is the one-hot target: the input relevance then sums to about 1 per image.
        _, relevance = attributor(
            x.detach().requires_grad_(), lambda logits: torch.nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
        )
    return relevance


@explainer("lrp_epsilon_gamma_box", "zennit", post=GRADIENT_POST, cnn_only=True, supports=lrp_unsupported)
def lrp_epsilon_gamma_box(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """LRP (Bach et al. 2015), Zennit's EpsilonGammaBox: box rule on the input, gamma on convs, epsilon on dense."""
    return _lrp(model, x, y, "epsilon_gamma_box")


@explainer("lrp_epsilon_plus_flat", "zennit", post=GRADIENT_POST, cnn_only=True, supports=lrp_unsupported)
def lrp_epsilon_plus_flat(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """LRP, Zennit's EpsilonPlusFlat: flat rule on the input, z+ on convs, epsilon on dense layers."""
    return _lrp(model, x, y, "epsilon_plus_flat")
