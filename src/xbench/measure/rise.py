"""Insertion and deletion (RISE; Petsiuk, Das and Saenko, BMVC 2018): the area under the class-probability curve as
the most relevant pixels are deleted from the image, or inserted into a blurred copy of it.

The protocol is RISE's `CausalMetric`, batched on the model's device:

- a pixel's relevance is its attribution summed over channels (`abs` takes magnitudes first); pixels go most relevant
  first, ties in the order the `ties` policy gives (RISE's argsort leaves them to NumPy's sort);
- `step` pixels change per step (default: one image side, RISE's 224 at 224 px), so there are ceil(H*W / step) steps
  and ceil(H*W / step) + 1 images per image, the unchanged start included;
- deletion starts from the image and replaces pixels by `baseline` (default 0.0: RISE's zeros, which on normalised
  inputs is the dataset's mean colour); insertion starts from `baseline` (default `blur`: RISE's Gaussian blur, an
  11x11 kernel of sigma 5 with zero padding) and puts the image's pixels back;
- the score is the softmax probability of the target class (RISE takes the predicted class; xbench takes the class the
  map explains, as every other metric does), and the AUC is RISE's trapezoid over [0, 1]:
  (sum - first / 2 - last / 2) / steps.

Insertion: higher is better. Deletion: lower is better.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.ndimage import convolve, gaussian_filter
from torch import Tensor, nn

from xbench.core.errors import XbenchInputError
from xbench.measure.engine import Blocks, EngineContext, ReferenceFn
from xbench.measure.metric import torch_metric
from xbench.measure.operators import baseline_values, jobs, ranked

BLUR = "blur"


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """RISE's `gkern`: SciPy's Gaussian filter of a centred delta, a (size, size) kernel that sums to about 1."""
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    return gaussian_filter(delta, sigma)


def blurred(x: Tensor, size: int, sigma: float) -> Tensor:
    """RISE's insertion substrate: each channel convolved with the kernel, zero-padded to keep the image's size."""
    channels = x.shape[1]
    kernel = torch.as_tensor(gaussian_kernel(size, sigma), dtype=x.dtype, device=x.device)
    weight = kernel.expand(channels, 1, size, size).contiguous()
    return nn.functional.conv2d(x, weight, padding=size // 2, groups=channels)


def substrate(x: Tensor, baseline: str | float, blur_size: int, blur_sigma: float, context: EngineContext) -> Tensor:
    """The image the pixels come from (deletion) or go into (insertion): the blur, or a baseline value per image."""
    if baseline == BLUR:
        return blurred(x, blur_size, blur_sigma)
    if baseline == "uniform":
        raise XbenchInputError("insertion and deletion take baseline blur, black, white, mean or a number", "metrics")
    fill = baseline_values(x.reshape(len(x), -1), baseline, context)[0]
    return fill.view(-1, 1, 1, 1).expand_as(x)


def causal_curve(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    start: Tensor,
    finish: Tensor,
    step: int,
    absolute: bool,
    ties: str,
) -> Tensor:
    """(N, steps + 1) target probabilities as the pixels of `finish` replace those of `start`, most relevant first."""
    if step < 1:
        raise XbenchInputError(f"step must be a positive number of pixels, got {step}", field="metrics")
    count, channels, height, width = x.shape
    pixels = height * width
    relevance = (a.abs() if absolute else a).expand(count, -1, height, width).sum(1).reshape(count, pixels)
    rank = ranked(relevance, ties, context)  # rank[n, p]: when pixel p changes (0 = first)
    steps = math.ceil(pixels / step)
    start_flat, finish_flat = start.reshape(count, channels, pixels), finish.reshape(count, channels, pixels)

    def blocks() -> Blocks:
        for done, images in jobs(steps + 1, count, context.batch_size, context.device):
            changed = (rank[images] < (done * step).unsqueeze(1)).unsqueeze(1)
            mixed = torch.where(changed, finish_flat[images], start_flat[images])
            yield mixed.view(-1, channels, height, width), y[images]

    scores = context.target_scores(blocks(), y.repeat(steps + 1), softmax=True)
    return scores.view(steps + 1, count).T


def rise_auc(curves: Tensor) -> Tensor:
    """RISE's `auc`: the trapezoid under a curve drawn over [0, 1] at equal steps."""
    steps = curves.shape[1] - 1
    return (curves.sum(1) - curves[:, 0] / 2 - curves[:, -1] / 2) / steps


def _defaults(image_size: int) -> dict[str, Any]:
    return {"step": image_size}


def _verify_params(image_size: int) -> dict[str, Any]:
    # the reference sorts with NumPy's stable argsort, so tied pixels go in index order: the engine's `index` policy
    return {"ties": "index"}


def causal_reference(insert: bool) -> ReferenceFn:
    """RISE's `CausalMetric.single_run`, image by image and step by step, in NumPy and SciPy (the blur by
    `scipy.ndimage.convolve`), written apart from the batched engine for `xbench verify-metrics` to compare."""

    def reference(
        model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray, params: dict[str, Any], device: torch.device
    ) -> np.ndarray:
        step, baseline = params["step"], params.get("baseline", BLUR if insert else 0.0)
        kernel = gaussian_kernel(params.get("blur_size", 11), params.get("blur_sigma", 5.0))
        aucs = []
        for image, target, attribution in zip(x, y, a, strict=True):
            channels, height, width = image.shape
            pixels = height * width
            if baseline == BLUR:
                other = np.stack([convolve(channel, kernel, mode="constant", cval=0.0) for channel in image])
            else:
                named = {"black": image.min(), "white": image.max(), "mean": image.mean()}
                other = np.full_like(image, named[baseline] if isinstance(baseline, str) else baseline)
            start, finish = (other, image) if insert else (image, other)
            relevance = np.abs(attribution) if params.get("abs", False) else attribution
            order = np.argsort(-relevance.reshape(-1, pixels).sum(0), kind="stable")
            steps = (pixels + step - 1) // step
            current = start.reshape(channels, pixels).astype(np.float32)
            scores = []
            for index in range(steps + 1):
                inputs = torch.as_tensor(current.reshape(1, channels, height, width), device=device)
                with torch.no_grad():
                    scores.append(float(model(inputs).softmax(-1)[0, int(target)]))
                coordinates = order[step * index : step * (index + 1)]
                current[:, coordinates] = finish.reshape(channels, pixels)[:, coordinates]
            curve = np.array(scores)
            aucs.append((curve.sum() - curve[0] / 2 - curve[-1] / 2) / steps)
        return np.array(aucs)

    return reference


@torch_metric(
    "deletion",
    higher_is_better=False,
    category="faithfulness",
    defaults=_defaults,
    ranks_features=True,
    reference=causal_reference(insert=False),
    reference_name="RISE CausalMetric loop",
    verify_params=_verify_params,
)
def deletion(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    step: int = 224,
    baseline: str | float = 0.0,
    blur_size: int = 11,
    blur_sigma: float = 5.0,
    abs: bool = False,
    ties: str = "random",
) -> Tensor:
    """Deletion AUC (RISE): class probability as the most relevant pixels are deleted to `baseline`; lower is better."""
    finish = substrate(x, baseline, blur_size, blur_sigma, context)
    curves = causal_curve(context, x, y, a, x, finish, step, abs, ties)
    return rise_auc(curves)


@torch_metric(
    "insertion",
    higher_is_better=True,
    category="faithfulness",
    defaults=_defaults,
    ranks_features=True,
    reference=causal_reference(insert=True),
    reference_name="RISE CausalMetric loop",
    verify_params=_verify_params,
)
def insertion(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    step: int = 224,
    baseline: str | float = BLUR,
    blur_size: int = 11,
    blur_sigma: float = 5.0,
    abs: bool = False,
    ties: str = "random",
) -> Tensor:
    """Insertion AUC (RISE): class probability as the most relevant pixels are put back into `baseline` (a blurred
    copy by default); higher is better."""
    start = substrate(x, baseline, blur_size, blur_sigma, context)
    curves = causal_curve(context, x, y, a, start, x, step, abs, ties)
    return rise_auc(curves)
