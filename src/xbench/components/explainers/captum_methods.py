"""Captum's gradient and perturbation attributions (saliency, integrated gradients, SmoothGrad, DeepLIFT, occlusion,
...): one explainer each, output (N, C, H, W) reduced to one channel as each one's `post` says."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xbench.components.explainers._base import GRADIENT_POST, default_target_layer, explainer, without_inplace
from xbench.core.errors import XbenchInputError


@explainer("saliency", "captum", post={"channel_reduction": "max", "absolute": True})
def saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Gradient of the class score w.r.t. the input (Simonyan et al. 2014): |grad|, max over channels."""
    from captum.attr import Saliency

    return Saliency(model).attribute(x.requires_grad_(), target=y, abs=False)


@explainer("integrated_gradients", "captum", defaults={"n_steps": 32, "baseline": "zero"}, post=GRADIENT_POST)
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


def _baseline(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "zero":
        return torch.zeros_like(x)
    if name == "black":
        return torch.full_like(x, float(x.min()))
    raise XbenchInputError(f"baseline must be 'zero' or 'black', got {name!r}")


@explainer("input_x_gradient", "captum", post=GRADIENT_POST)
def input_x_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Input times gradient (Shrikumar et al. 2016)."""
    from captum.attr import InputXGradient

    return InputXGradient(model).attribute(x.requires_grad_(), target=y)


@explainer(
    "smoothgrad",
    "captum",
    defaults={"nt_samples": 16, "stdevs": 0.15},
    post={"channel_reduction": "max", "absolute": True},
)
def smoothgrad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): saliency averaged over noisy copies of the input (stdevs in input units)."""
    from captum.attr import NoiseTunnel, Saliency

    return NoiseTunnel(Saliency(model)).attribute(
        x.requires_grad_(),
        nt_type="smoothgrad",
        nt_samples=int(params["nt_samples"]),
        stdevs=float(params["stdevs"]),
        target=y,
        abs=False,
    )


@explainer("gradient_shap", "captum", defaults={"n_samples": 16, "stdevs": 0.1}, post=GRADIENT_POST)
def gradient_shap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """GradientSHAP (Lundberg and Lee 2017): expected gradients against zero and black baselines."""
    from captum.attr import GradientShap

    baselines = torch.cat([_baseline(x[:1], "zero"), _baseline(x[:1], "black")])
    return GradientShap(model).attribute(
        x, baselines=baselines, n_samples=int(params["n_samples"]), stdevs=float(params["stdevs"]), target=y
    )


@explainer("guided_backprop", "captum", post={"channel_reduction": "max", "absolute": True})
def guided_backprop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): only positive gradients pass back through ReLUs."""
    from captum.attr import GuidedBackprop

    return GuidedBackprop(without_inplace(model)).attribute(x.requires_grad_(), target=y)


@explainer("deeplift", "captum", defaults={"baseline": "zero"}, post=GRADIENT_POST)
def deeplift(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """DeepLIFT rescale rule (Shrikumar et al. 2017) against a zero (dataset-mean) or black baseline."""
    from captum.attr import DeepLift

    return DeepLift(without_inplace(model)).attribute(x, baselines=_baseline(x, params["baseline"]), target=y)


@explainer(
    "occlusion",
    "captum",
    defaults={"window_fraction": 0.125, "baseline": "zero"},
    post=GRADIENT_POST,
    gradient_free=True,
)
def occlusion(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Occlusion (Zeiler and Fergus 2014): the score drop when a square window is replaced by the baseline."""
    from captum.attr import Occlusion

    window = max(1, round(x.shape[-1] * float(params["window_fraction"])))
    stride = max(1, window // 2)
    return Occlusion(model).attribute(
        x,
        sliding_window_shapes=(x.shape[1], window, window),
        strides=(x.shape[1], stride, stride),
        baselines=_baseline(x, params["baseline"]),
        target=y,
        perturbations_per_eval=16,
    )


@explainer(
    "guided_gradcam",
    "captum",
    defaults={"target_layer": None},
    post={"channel_reduction": "max", "absolute": True},
    cnn_only=True,
)
def guided_gradcam(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times the upsampled Grad-CAM map."""
    from captum.attr import GuidedGradCam

    plain = without_inplace(model)
    layer = plain.get_submodule(params["target_layer"] or default_target_layer(plain))
    return GuidedGradCam(plain, layer).attribute(x.requires_grad_(), target=y)
