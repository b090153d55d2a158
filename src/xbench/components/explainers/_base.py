"""What an explainer is: the `Explainer` plug-in, its registry and decorator, and how attributions are computed
and post-processed to (N, 1, H, W) float32. A new explainer is one module (here, or a plug-in named in a suite's
`plugins:`) with a function registered by `@explainer(name, library)`; the registry imports the built-in modules
(`BUILT_IN`: Captum, pytorch-grad-cam, controls, Zennit LRP, attention) the first time it is read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xbench.core.errors import XbenchInputError
from xbench.core.registry import Registry

ExplainFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, dict[str, Any]], torch.Tensor]


@dataclass(frozen=True)
class Explainer:
    """`explain(model, x, targets, params)` returns raw attributions; `defaults` are its parameters, all recorded."""

    name: str
    explain: ExplainFn
    defaults: dict[str, Any]
    version: str
    description: str
    library: str
    post: dict[str, Any] = field(default_factory=dict)
    cnn_only: bool = False
    supports: Callable[[nn.Module], str | None] | None = None
    gradient_free: bool = False  # forward passes only: it can explain a quantized model that has no gradients

    @property
    def limited(self) -> bool:
        """Whether some architectures are refused (checked at plan time on a randomly initialised copy)."""
        return self.cnn_only or self.supports is not None

    def unsupported_reason(self, model: nn.Module) -> str | None:
        """Why this explainer cannot explain `model`, or None."""
        if self.cnn_only and is_token_model(model):
            return "it needs a convolutional feature map, and this is a token (ViT-like) model"
        return self.supports(model) if self.supports else None

    def resolve(self, params: dict[str, Any], field_path: str = "explainers") -> dict[str, Any]:
        """Suite params over defaults; unknown params are an input error naming the allowed ones."""
        allowed = {**self.defaults, **self.post}
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise XbenchInputError(
                f"unknown parameter(s) {', '.join(unknown)} for explainer {self.name!r}; "
                f"allowed: {', '.join(sorted(allowed)) or 'none'}",
                field=field_path,
            )
        return {**allowed, **params}


BUILT_IN = tuple(
    f"xbench.components.explainers.{name}" for name in ("captum_methods", "cam_methods", "controls", "lrp", "attention")
)
explainers: Registry[Explainer] = Registry("explainer", modules=BUILT_IN)
# Post-processing, explicit and recorded: channel reduction and absolute value (grad-cam maps are already 1-channel).
GRADIENT_POST = {"channel_reduction": "sum", "absolute": False}


def explainer(
    name: str,
    library: str,
    defaults: dict[str, Any] | None = None,
    post: dict[str, Any] | None = None,
    version: str = "1",
    cnn_only: bool = False,
    supports: Callable[[nn.Module], str | None] | None = None,
    gradient_free: bool = False,
) -> Callable[[ExplainFn], ExplainFn]:
    def decorator(fn: ExplainFn) -> ExplainFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        description = doc[0] if doc else ""
        explainers.register(name)(
            Explainer(
                name,
                fn,
                dict(defaults or {}),
                version,
                description,
                library,
                dict(post or {}),
                cnn_only,
                supports,
                gradient_free,
            )
        )
        return fn

    return decorator


def explain_tensor(
    plugin: Explainer,
    params: dict[str, Any],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_size: int = 32,
) -> torch.Tensor:
    """Attributions for the target classes `y`, batched on `device`, post-processed to (N, 1, H, W), on `device`."""
    model.to(device).eval()
    parts = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        attribution = plugin.explain(model, xb, yb, params).detach().float()
        parts.append(postprocess(attribution, params))
    return torch.cat(parts)


def explain(
    plugin: Explainer,
    params: dict[str, Any],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_size: int = 32,
) -> np.ndarray:
    """`explain_tensor`, as a float32 NumPy array on the CPU."""
    return explain_tensor(plugin, params, model, x, y, device, batch_size).cpu().numpy().astype(np.float32)


def quantus_explain_func(plugin: Explainer, params: dict[str, Any], device: torch.device) -> Callable[..., np.ndarray]:
    """The explainer as Quantus calls it when a metric explains again (robustness, randomisation)."""

    def explain_func(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(targets)).long().reshape(-1)
        return explain(plugin, params, model, x, y, device)

    return explain_func


def postprocess(attribution: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    if attribution.ndim == 3:
        attribution = attribution.unsqueeze(1)
    if params.get("absolute"):
        attribution = attribution.abs()
    if attribution.shape[1] > 1:
        reduction = params.get("channel_reduction", "sum")
        if reduction not in ("sum", "mean", "max"):
            raise XbenchInputError(f"channel_reduction must be sum, mean or max, got {reduction!r}")
        reduced = getattr(attribution, reduction)(dim=1, keepdim=True)
        attribution = reduced.values if reduction == "max" else reduced
    return attribution


def is_token_model(model: nn.Module) -> bool:
    """ViT-like timm models (class/register tokens before the patch tokens)."""
    return getattr(model, "num_prefix_tokens", None) is not None


def default_target_layer(model: nn.Module) -> str:
    """The last feature stage of a timm CNN (from timm's feature_info), where Grad-CAM is usually taken.

    For ViT-like models, the first norm of the last block: after it only the class token reaches the head, so the
    patch tokens would get no gradient.
    """
    blocks = getattr(model, "blocks", None)
    if is_token_model(model) and blocks is not None and len(blocks):
        return f"blocks.{len(blocks) - 1}.norm1"
    info = getattr(model, "feature_info", None)
    if info:
        return info[-1]["module"]
    raise XbenchInputError(
        f"{type(model).__name__} has no timm feature_info; set target_layer for this explainer in the suite"
    )


def without_inplace(model: nn.Module) -> nn.Module:
    """A copy whose activations are not in-place: Captum's backward hooks (guided backprop, DeepLift) need that."""
    import copy

    copied = copy.deepcopy(model)
    for module in copied.modules():
        if getattr(module, "inplace", False):
            setattr(module, "inplace", False)  # noqa: B010 (nn.Module types attributes as Tensor | Module)
    return copied
