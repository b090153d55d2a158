"""Confidence change when the image is masked by its own explanation (Chattopadhay et al., Grad-CAM++, WACV 2018;
Zhang et al., Opti-CAM, 2023): the protocol torch-cam and pytorch-grad-cam report for CAMs.

Y is the softmax probability of the target class on the image, O on the image multiplied by its explanation map E:
the attribution summed over channels (`abs` takes magnitudes first), scaled per image to [0, 1] as pytorch-grad-cam's
`scale_cam_image` does, (m - min) / (1e-7 + max(m - min)), and broadcast over the channels. Per image (the suite's
mean over images is the papers' figure):

- `average_drop` = 100 * max(0, Y - O) / Y: the confidence the masked image loses; lower is better;
- `increase_in_confidence` = 100 * [O > Y]: whether the masked image is more confident; higher is better;
- `average_gain` = 100 * max(0, O - Y) / (1 - Y): the confidence it gains, of what it could; higher is better.

Two forward passes per image, streamed in one batch stream. The figures come from log-probabilities in float64
(log Y, log O from the logits), so a model that is certain in float32 (Y = 1.0 after its softmax rounds) still gives
them: O / Y = exp(log O - log Y), 1 - Y = -expm1(log Y). Where a figure is truly undefined it is 0: a probability of 0
has nothing to lose (`average_drop`), one of exactly 1 even in float64 (a logit margin beyond about 745) nothing to
gain (`average_gain`).
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


def log_confidences(context: EngineContext, x: Tensor, y: Tensor, a: Tensor, absolute: bool) -> tuple[Tensor, Tensor]:
    """(log Y, log O): target log-probabilities on the images and on the images masked by their maps, float64."""
    masked = x * explanation_mask(a, absolute)
    scores = context.target_log_probabilities(itertools.chain([(x, y)], [(masked, y)]), y.repeat(2))
    return scores[: len(x)], scores[len(x) :]


def confidence_changes(log_y: Any, log_o: Any, which: str) -> Any:
    """The three figures from log Y and log O (torch tensors or numpy arrays, float64), without cancellation."""
    lib: Any = torch if isinstance(log_y, Tensor) else np
    zero, one = lib.zeros_like(log_y), lib.ones_like(log_y)
    if which == "increase_in_confidence":
        return lib.where(log_o > log_y, 100 * one, zero)
    finite = lib.isfinite(log_y)
    ratio_minus_one = lib.expm1(lib.where(finite, log_o - log_y, zero))  # O / Y - 1
    if which == "average_drop":  # 100 max(0, Y - O) / Y = 100 max(0, 1 - O / Y); Y = 0 has nothing to lose
        return lib.where(finite, 100 * lib.clip(-ratio_minus_one, 0, None), zero)
    # 100 max(0, O - Y) / (1 - Y) = 100 max(0, Y (O / Y - 1)) / (-expm1(log Y)); Y = 1 has nothing to gain
    room = -lib.expm1(log_y)
    gained = lib.clip(lib.exp(log_y) * ratio_minus_one, 0, None)
    return lib.where(room > 0, 100 * gained / lib.where(room > 0, room, one), zero)


def _log_probability(logits: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log softmax of the target, -log1p(Σ_{k≠y} e^(l_k - l_y)) with scipy (the reference's own arithmetic)."""
    from scipy.special import logsumexp

    others = logits - logits[rows, targets][:, None]
    others[rows, targets] = -np.inf
    return np.asarray(-np.logaddexp(0.0, logsumexp(others, axis=1)), dtype=np.float64)


def grad_cam_reference(which: str) -> ReferenceFn:
    """The metric as pytorch-grad-cam's `CamMultImageConfidenceChange` computes it (the image multiplied by the map
    scaled by its `scale_cam_image`, the target's softmax before and after), with the probabilities taken in float64
    from the logits: its float32 softmax rounds a confident model's Y to 1.0 and then divides 0 by 0."""

    def reference(
        model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray, params: dict[str, Any], device: torch.device
    ) -> np.ndarray:
        from pytorch_grad_cam.utils.image import scale_cam_image

        maps = (np.abs(a) if params.get("abs", False) else a).sum(1)
        inputs = torch.as_tensor(x, device=device)
        masks = torch.as_tensor(scale_cam_image(maps), device=device, dtype=inputs.dtype)
        rows, targets = np.arange(len(y)), torch.as_tensor(y).long()
        with torch.no_grad():
            log_y = _log_probability(model(inputs).double().cpu().numpy(), rows, targets.numpy())
            log_o = _log_probability(model(inputs * masks[:, None]).double().cpu().numpy(), rows, targets.numpy())
        return np.asarray(confidence_changes(log_y, log_o, which), dtype=np.float64)

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
    return confidence_changes(*log_confidences(context, x, y, a, abs), "average_drop")


@_confidence_metric("increase_in_confidence", higher_is_better=True)
def increase_in_confidence(context: EngineContext, x: Tensor, y: Tensor, a: Tensor, *, abs: bool = False) -> Tensor:
    """100 * [O > Y]: 100 where the image masked by its explanation is more confident than the image, else 0."""
    return confidence_changes(*log_confidences(context, x, y, a, abs), "increase_in_confidence")


@_confidence_metric("average_gain", higher_is_better=True)
def average_gain(context: EngineContext, x: Tensor, y: Tensor, a: Tensor, *, abs: bool = False) -> Tensor:
    """100 * max(0, O - Y) / (1 - Y): the share of the confidence it could gain that the masked image gains."""
    return confidence_changes(*log_confidences(context, x, y, a, abs), "average_gain")
