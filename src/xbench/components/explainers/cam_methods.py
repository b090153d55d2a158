"""The CAM family from pytorch-grad-cam: one map per image at the target layer (the last timm feature stage unless
`target_layer` is set), upsampled and scaled to [0, 1]."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from xbench.components.explainers._base import default_target_layer, explainer

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
