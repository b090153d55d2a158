"""Explainers: Captum and pytorch-grad-cam behind one registry; output is (N, 1, H, W) float32 attributions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xbench.errors import XbenchInputError
from xbench.registry import Registry

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


explainers: Registry[Explainer] = Registry("explainer")

# Post-processing, explicit and recorded: channel reduction and absolute value (grad-cam maps are already 1-channel).
_GRADIENT_POST = {"channel_reduction": "sum", "absolute": False}


def explainer(
    name: str,
    library: str,
    defaults: dict[str, Any] | None = None,
    post: dict[str, Any] | None = None,
    version: str = "1",
) -> Callable[[ExplainFn], ExplainFn]:
    def decorator(fn: ExplainFn) -> ExplainFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        explainers.register(name)(
            Explainer(name, fn, dict(defaults or {}), version, doc[0] if doc else "", library, dict(post or {}))
        )
        return fn

    return decorator


def explain(
    plugin: Explainer,
    params: dict[str, Any],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_size: int = 32,
) -> np.ndarray:
    """Attributions for the target classes `y`, batched on `device`, post-processed to (N, 1, H, W)."""
    model.to(device).eval()
    parts = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        attribution = plugin.explain(model, xb, yb, params).detach().float()
        parts.append(postprocess(attribution, params).cpu())
    return torch.cat(parts).numpy().astype(np.float32)


def postprocess(attribution: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    if attribution.ndim == 3:
        attribution = attribution.unsqueeze(1)
    if params.get("absolute"):
        attribution = attribution.abs()
    if attribution.shape[1] > 1:
        reduction = params.get("channel_reduction", "sum")
        if reduction not in ("sum", "mean", "max"):
            raise XbenchInputError(f"channel_reduction must be sum, mean or max, got {reduction!r}")
        attribution = getattr(attribution, reduction)(dim=1, keepdim=True)
        if reduction == "max":
            attribution = attribution.values
    return attribution


def default_target_layer(model: nn.Module) -> str:
    """The last feature stage of a timm CNN (from timm's feature_info), where Grad-CAM is usually taken."""
    info = getattr(model, "feature_info", None)
    if info:
        return info[-1]["module"]
    raise XbenchInputError(
        f"{type(model).__name__} has no timm feature_info; set target_layer for this explainer in the suite"
    )


@explainer("saliency", "captum", post={"channel_reduction": "max", "absolute": True})
def saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Gradient of the class score w.r.t. the input (Simonyan et al. 2014): |grad|, max over channels."""
    from captum.attr import Saliency

    return Saliency(model).attribute(x.requires_grad_(), target=y, abs=False)


@explainer("integrated_gradients", "captum", defaults={"n_steps": 32, "baseline": "zero"}, post=_GRADIENT_POST)
def integrated_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017) from a zero (dataset-mean) or black baseline."""
    from captum.attr import IntegratedGradients

    if params["baseline"] == "zero":
        baseline = torch.zeros_like(x)
    elif params["baseline"] == "black":
        baseline = torch.full_like(x, float(x.min()))
    else:
        raise XbenchInputError(f"baseline must be 'zero' or 'black', got {params['baseline']!r}")
    return IntegratedGradients(model).attribute(
        x, baselines=baseline, target=y, n_steps=int(params["n_steps"]), internal_batch_size=len(x) * 8
    )


@explainer("gradcam", "pytorch-grad-cam", defaults={"target_layer": None})
def gradcam(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at the last feature stage (timm feature_info) unless target_layer is set."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.get_submodule(params["target_layer"] or default_target_layer(model))
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in y])
    return torch.from_numpy(np.asarray(maps, dtype=np.float32))
