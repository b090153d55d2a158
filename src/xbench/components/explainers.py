"""The explainers: Captum, pytorch-grad-cam and Zennit behind one registry (`explainer.py`), plus the transformer
explainers in `transformer_explainers.py`; output is (N, 1, H, W) float32 attributions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from xbench.components import transformer_explainers  # noqa: F401  (registers attention rollout and friends)
from xbench.components.explainer import (
    Explainer,
    ExplainFn,
    default_target_layer,
    explain,
    explain_tensor,
    explainer,
    explainers,
    is_token_model,
    postprocess,
    quantus_explain_func,
)
from xbench.core.errors import XbenchInputError

__all__ = [
    "ExplainFn",
    "Explainer",
    "default_target_layer",
    "explain",
    "explain_tensor",
    "explainer",
    "explainers",
    "is_token_model",
    "postprocess",
    "quantus_explain_func",
]

# Post-processing, explicit and recorded: channel reduction and absolute value (grad-cam maps are already 1-channel).
_GRADIENT_POST = {"channel_reduction": "sum", "absolute": False}


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


def _without_inplace(model: nn.Module) -> nn.Module:
    """A copy whose activations are not in-place: Captum's backward hooks (guided backprop, DeepLift) need that."""
    import copy

    copied = copy.deepcopy(model)
    for module in copied.modules():
        if getattr(module, "inplace", False):
            setattr(module, "inplace", False)  # noqa: B010 (nn.Module types attributes as Tensor | Module)
    return copied


def _baseline(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "zero":
        return torch.zeros_like(x)
    if name == "black":
        return torch.full_like(x, float(x.min()))
    raise XbenchInputError(f"baseline must be 'zero' or 'black', got {name!r}")


@explainer("input_x_gradient", "captum", post=_GRADIENT_POST)
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


@explainer("gradient_shap", "captum", defaults={"n_samples": 16, "stdevs": 0.1}, post=_GRADIENT_POST)
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

    return GuidedBackprop(_without_inplace(model)).attribute(x.requires_grad_(), target=y)


@explainer("deeplift", "captum", defaults={"baseline": "zero"}, post=_GRADIENT_POST)
def deeplift(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """DeepLIFT rescale rule (Shrikumar et al. 2017) against a zero (dataset-mean) or black baseline."""
    from captum.attr import DeepLift

    return DeepLift(_without_inplace(model)).attribute(x, baselines=_baseline(x, params["baseline"]), target=y)


@explainer(
    "occlusion",
    "captum",
    defaults={"window_fraction": 0.125, "baseline": "zero"},
    post=_GRADIENT_POST,
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

    plain = _without_inplace(model)
    layer = plain.get_submodule(params["target_layer"] or default_target_layer(plain))
    return GuidedGradCam(plain, layer).attribute(x.requires_grad_(), target=y)


# --------------------------------------------------------------------------------------------------------------------
# The CAM family from pytorch-grad-cam: one map per image at the target layer, upsampled and scaled to [0, 1].


def _vit_reshape(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Tokens (B, prefix + h*w, C) -> (B, C, h, w) for ViT-like timm models; None for CNNs."""
    prefix = getattr(model, "num_prefix_tokens", None)
    if prefix is None:
        return None

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        side = round(patches.shape[1] ** 0.5)
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def _cam(
    cam_class_name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]
) -> torch.Tensor:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = getattr(pytorch_grad_cam, cam_class_name)
    # FullGrad uses every bias layer and prints a warning for any target layer it is given.
    layers = (
        []
        if cam_class_name == "FullGrad"
        else [model.get_submodule(params["target_layer"] or default_target_layer(model))]
    )
    with cam_class(model=model, target_layers=layers, reshape_transform=_vit_reshape(model)) as cam:
        if "batch_size" in params:
            cam.batch_size = int(params["batch_size"])
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in y])
    return torch.from_numpy(np.asarray(maps, dtype=np.float32))


_CAM_METHODS = {
    "gradcam": ("GradCAM", "Grad-CAM (Selvaraju et al. 2017)", {}),
    "gradcam_plus_plus": ("GradCAMPlusPlus", "Grad-CAM++ (Chattopadhay et al. 2018)", {}),
    "xgradcam": ("XGradCAM", "XGrad-CAM (Fu et al. 2020)", {}),
    "hirescam": ("HiResCAM", "HiResCAM (Draelos and Carin 2020)", {}),
    "layercam": ("LayerCAM", "LayerCAM (Jiang et al. 2021)", {}),
    "scorecam": ("ScoreCAM", "Score-CAM (Wang et al. 2020): one forward pass per channel", {"batch_size": 64}),
    "eigencam": ("EigenCAM", "Eigen-CAM (Muhammad and Yeasin 2020): first principal component of activations", {}),
    "fullgrad": ("FullGrad", "FullGrad (Srinivas and Fleuret 2019): input and bias gradients of every layer", {}),
}
_CNN_ONLY = {"fullgrad"}  # it gathers the bias gradients of every conv layer into maps

for _name, (_class_name, _description, _extra) in _CAM_METHODS.items():

    def _explain(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any], _class_name: str = _class_name
    ) -> torch.Tensor:
        return _cam(_class_name, model, x, y, params)

    _explain.__doc__ = f"{_description}, at the last timm feature stage unless target_layer is set."
    explainer(_name, "pytorch-grad-cam", defaults={"target_layer": None, **_extra}, cnn_only=_name in _CNN_ONLY)(
        _explain
    )


# --------------------------------------------------------------------------------------------------------------------
# Controls: every leaderboard needs a floor to beat.


@explainer("random", "control", defaults={"seed": 0})
def random_attribution(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Uniform noise, independent of model and input: the floor every explainer should beat."""
    # Seeded from the batch itself, so a batch always gets the same noise and different batches different noise.
    generator = torch.Generator().manual_seed(int(params["seed"]) + int(x.sum().item() * 1000) % 2**31)
    return torch.rand(x.shape[0], 1, *x.shape[2:], generator=generator)


@explainer("sobel", "control")
def sobel(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Edge magnitude of the input (Sobel filter on the channel mean), independent of the model."""
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    gray = x.detach().mean(dim=1, keepdim=True)
    gx = nn.functional.conv2d(gray, kernel.view(1, 1, 3, 3), padding=1)
    gy = nn.functional.conv2d(gray, kernel.t().reshape(1, 1, 3, 3), padding=1)
    return torch.sqrt(gx**2 + gy**2)


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

    copied = _without_inplace(model)
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


@explainer("lrp_epsilon_gamma_box", "zennit", post=_GRADIENT_POST, cnn_only=True, supports=lrp_unsupported)
def lrp_epsilon_gamma_box(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """LRP (Bach et al. 2015), Zennit's EpsilonGammaBox: box rule on the input, gamma on convs, epsilon on dense."""
    return _lrp(model, x, y, "epsilon_gamma_box")


@explainer("lrp_epsilon_plus_flat", "zennit", post=_GRADIENT_POST, cnn_only=True, supports=lrp_unsupported)
def lrp_epsilon_plus_flat(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """LRP, Zennit's EpsilonPlusFlat: flat rule on the input, z+ on convs, epsilon on dense layers."""
    return _lrp(model, x, y, "epsilon_plus_flat")
