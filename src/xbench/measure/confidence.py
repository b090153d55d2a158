"""Confidence change when the image is masked by its own explanation (Chattopadhay et al., Grad-CAM++, WACV 2018;
Zhang et al., Opti-CAM, 2023): the protocol torch-cam and pytorch-grad-cam report for CAMs.

Y is the softmax probability of the target class on the image, O on the image multiplied by its explanation map E:
the attribution summed over channels (`abs` takes magnitudes first), scaled per image to [0, 1] as pytorch-grad-cam's
`scale_cam_image` does, (m - min) / (1e-7 + max(m - min)), and broadcast over the channels. Per image (the suite's
mean over images is the papers' figure):

- `average_drop` = 100 * max(0, Y - O) / Y: the confidence the masked image loses; lower is better;
- `increase_in_confidence` = 100 * [O > Y]: whether the masked image is more confident; higher is better;
- `average_gain` = 100 * max(0, O - Y) / (1 - Y): the confidence it gains, of what it could; higher is better.

Two forward passes per image, streamed in one batch stream.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from xbench.measure.engine import EngineContext, ReferenceFn
from xbench.measure.metric import torch_metric

SCALE_EPSILON = 1e-7  # pytorch-grad-cam's scale_cam_image


def explanation_mask(a: Tensor, absolute: bool) -> Tensor:
    """E: the map summed over channels, min-max scaled per image to [0, 1], shaped (N, 1, H, W)."""
    relevance = (a.abs() if absolute else a).sum(1, keepdim=True)
    flat = relevance.flatten(1)
    shifted = flat - flat.amin(1, keepdim=True)
    scaled = shifted / (SCALE_EPSILON + shifted.amax(1, keepdim=True))
    return scaled.view_as(relevance)


def confidences(context: EngineContext, x: Tensor, y: Tensor, a: Tensor, absolute: bool) -> tuple[Tensor, Tensor]:
    """(Y, O): target probabilities on the images and on the images masked by their maps, in one batch stream."""
    masked = x * explanation_mask(a, absolute)
    scores = context.target_scores(itertools.chain([(x, y)], [(masked, y)]), y.repeat(2), softmax=True)
    return scores[: len(x)].double(), scores[len(x) :].double()


def _share(part: Tensor, whole: Tensor) -> Tensor:
    """part / whole, and 0 where `whole` is 0 (a probability of 0 has nothing to lose, one of 1 nothing to gain)."""
    return torch.where(whole > 0, part / whole.clamp_min(torch.finfo(whole.dtype).tiny), torch.zeros_like(part))


def grad_cam_reference(which: str) -> ReferenceFn:
    """The metric from pytorch-grad-cam's `CamMultImageConfidenceChange` (O - Y, with `ClassifierOutputSoftmaxTarget`
    and maps scaled by its `scale_cam_image`), and Y from a plain forward pass."""

    def reference(
        model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray, params: dict[str, Any], device: torch.device
    ) -> np.ndarray:
        from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
        from pytorch_grad_cam.utils.image import scale_cam_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        maps = (np.abs(a) if params.get("abs", False) else a).sum(1)
        inputs = torch.as_tensor(x, device=device)
        targets = [ClassifierOutputSoftmaxTarget(int(target)) for target in y]
        change = CamMultImageConfidenceChange()(inputs, scale_cam_image(maps), targets, model).astype(np.float64)
        with torch.no_grad():
            original = model(inputs).softmax(-1)[np.arange(len(y)), torch.as_tensor(y).long()].double().cpu().numpy()
        if which == "average_drop":
            return 100 * np.maximum(-change, 0) / original
        if which == "increase_in_confidence":
            return 100 * (change > 0).astype(np.float64)
        return 100 * np.maximum(change, 0) / (1 - original)

    return reference


def _confidence_metric(name: str, higher_is_better: bool) -> Any:
    return torch_metric(
        name,
        higher_is_better=higher_is_better,
        category="faithfulness",
        reference=grad_cam_reference(name),
        reference_name="pytorch-grad-cam",
    )


@_confidence_metric("average_drop", higher_is_better=False)
def average_drop(context: EngineContext, x: Tensor, y: Tensor, a: Tensor, *, abs: bool = False) -> Tensor:
    """100 * max(0, Y - O) / Y: the share of its confidence the image loses when masked by its explanation."""
    original, masked = confidences(context, x, y, a, abs)
    return 100 * _share((original - masked).clamp_min(0), original)


@_confidence_metric("increase_in_confidence", higher_is_better=True)
def increase_in_confidence(context: EngineContext, x: Tensor, y: Tensor, a: Tensor, *, abs: bool = False) -> Tensor:
    """100 * [O > Y]: 100 where the image masked by its explanation is more confident than the image, else 0."""
    original, masked = confidences(context, x, y, a, abs)
    return 100 * (masked > original).double()


@_confidence_metric("average_gain", higher_is_better=True)
def average_gain(context: EngineContext, x: Tensor, y: Tensor, a: Tensor, *, abs: bool = False) -> Tensor:
    """100 * max(0, O - Y) / (1 - Y): the share of the confidence it could gain that the masked image gains."""
    original, masked = confidences(context, x, y, a, abs)
    return 100 * _share((masked - original).clamp_min(0), 1 - original)
