"""The engine's faithfulness family (Quantus 0.6's definitions, on the model's device): faithfulness correlation,
pixel flipping, region perturbation, selectivity, monotonicity correlation, IROF and ROAD. Registered with
`engine.engine_metric`; `xbench verify` checks each against Quantus."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from quantus.functions.perturb_func import batch_baseline_replacement_by_indices
from torch import Tensor

from xbench.core.errors import XbenchInputError
from xbench.measure.engine import IMPUTATION_ELEMENTS, Blocks, EngineContext, Replay, engine_metric
from xbench.measure.imputation import impute, prepare_imputation
from xbench.measure.operators import (
    baseline_values,
    cumulative_baseline,
    feature_flat,
    jobs,
    pearson,
    preprocess,
    ranked,
    spearman,
    trapezoid,
    with_original,
)

# ---------------------------------------------------------------------------------------------------- faithfulness


@engine_metric(
    "faithfulness_correlation",
    replay=Replay("subsets", batch_baseline_replacement_by_indices, lambda arr, indices, result: indices.copy()),
    verify_params=lambda image_size: {"nr_runs": 20},
)
def faithfulness_correlation(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    nr_runs: int = 100,
    subset_size: int = 224,
    perturb_baseline: str | float = "black",
    abs: bool = False,
    normalise: bool = True,
) -> Tensor:
    """Pearson, over `nr_runs` random feature subsets, between the attribution sum and the logit drop."""
    a = preprocess(a, normalise, abs)
    x_flat, a_flat = feature_flat(x, a)
    count, features = x_flat.shape
    subsets = context.draws.get("subsets")
    if subsets is None:
        keys = torch.rand(nr_runs, count, features, generator=context.generator, device=context.device)
        subsets = keys.topk(subset_size, dim=2, sorted=False).indices
    subsets = torch.as_tensor(subsets, device=context.device).long()
    fill = baseline_values(x_flat, perturb_baseline, context, count=nr_runs)  # a fresh draw per run for "uniform"

    def blocks() -> Blocks:
        for runs, images in jobs(nr_runs, count, context.batch_size, context.device):
            perturbed = x_flat[images].clone()
            perturbed.scatter_(1, subsets[runs, images], fill[runs, images].unsqueeze(1).expand(-1, subsets.shape[2]))
            yield perturbed.view(-1, *x.shape[1:]), y[images]

    original, perturbed = with_original(context, x, y, blocks(), nr_runs, softmax=False)
    attribution_sums = a_flat.gather(1, subsets.permute(1, 0, 2).reshape(count, -1)).view(count, nr_runs, -1).sum(2)
    return pearson(attribution_sums, original.unsqueeze(1) - perturbed)


def _cumulative_feature_blocks(
    context: EngineContext, x: Tensor, y: Tensor, rank: Tensor, steps: int, features_in_step: int, fill: Tensor
) -> Blocks:
    x_flat = x.reshape(len(x), -1)
    for step, images in jobs(steps, len(x), context.batch_size, context.device):
        flipped = rank[images] < ((step + 1) * features_in_step).unsqueeze(1)
        perturbed = torch.where(flipped, fill[images].unsqueeze(1), x_flat[images])
        yield perturbed.view(-1, *x.shape[1:]), y[images]


@engine_metric("pixel_flipping", version="2")  # 2: tie policy (random by default)
def pixel_flipping(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    features_in_step: int = 1,
    perturb_baseline: str | float = "black",
    return_auc_per_sample: bool = False,
    abs: bool = False,
    normalise: bool = True,
    ties: str = "random",
) -> Tensor:
    """Class probability as the most relevant features are replaced, cumulatively, `features_in_step` at a time."""
    a = preprocess(a, normalise, abs)
    x_flat, a_flat = feature_flat(x, a)
    steps = math.ceil(a_flat.shape[1] / features_in_step)
    fill = cumulative_baseline(x_flat, perturb_baseline, context, "pixel_flipping")
    rank = ranked(a_flat, ties, context)
    blocks = _cumulative_feature_blocks(context, x, y, rank, steps, features_in_step, fill)
    curves = context.target_scores(blocks, y.repeat(steps), softmax=True).view(steps, len(x)).T
    return trapezoid(curves) if return_auc_per_sample else curves


@dataclass(frozen=True)
class _Patches:
    """Quantus's patch grid: the image padded to a multiple of `size` (pad split floor/ceil), patches row-major."""

    pixel_patch: Tensor  # (H, W): patch index of each pixel of the unpadded image
    sums: Tensor  # (N, P): attribution sum per patch (C channels, zero padding)


def _patches(a: Tensor, x: Tensor, size: int) -> _Patches:
    height, width = x.shape[-2:]
    pad_h, pad_w = (size - height % size) % size, (size - width % size) % size
    top, left = pad_h // 2, pad_w // 2
    padded = torch.nn.functional.pad(a.expand_as(x), (left, pad_w - left, top, pad_h - top))
    rows, cols = padded.shape[-2] // size, padded.shape[-1] // size
    sums = padded.reshape(len(x), x.shape[1], rows, size, cols, size).sum(dim=(1, 3, 5)).reshape(len(x), -1)
    grid = torch.arange(rows * cols, device=x.device).view(rows, cols)
    full = grid.repeat_interleave(size, 0).repeat_interleave(size, 1)
    return _Patches(full[top : top + height, left : left + width], sums)


def _patch_blocks(
    context: EngineContext, x: Tensor, y: Tensor, patches: _Patches, patch_rank: Tensor, steps: int, fill: Tensor
) -> Blocks:
    pixel_rank = patch_rank[:, patches.pixel_patch]  # (N, H, W): when each pixel's patch is removed
    for step, images in jobs(steps, len(x), context.batch_size, context.device):
        removed = (pixel_rank[images] <= step.view(-1, 1, 1)).unsqueeze(1)
        yield torch.where(removed, fill[images].view(-1, 1, 1, 1), x[images]), y[images]


@engine_metric("region_perturbation", version="2")  # 2: tie policy (random by default)
def region_perturbation(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    patch_size: int = 8,
    order: str = "morf",
    regions_evaluation: int = 100,
    perturb_baseline: str | float = "black",
    abs: bool = False,
    normalise: bool = True,
    ties: str = "random",
) -> Tensor:
    """Probability drop as patches are removed cumulatively (most relevant first for `morf`)."""
    a = preprocess(a, normalise, abs)
    patches = _patches(a, x, patch_size)
    count, total = patches.sums.shape
    if order == "morf":
        patch_rank = ranked(patches.sums, ties, context)
    elif order == "lerf":
        patch_rank = ranked(patches.sums, ties, context, descending=False)
    elif order == "random":
        permutation = context.draws.get("order")
        if permutation is None:
            permutation = torch.stack(
                [torch.randperm(total, generator=context.generator, device=context.device) for _ in range(count)]
            )
        permutation = torch.as_tensor(permutation, device=context.device).long()
        patch_rank = torch.argsort(permutation, dim=1)
    else:
        raise XbenchInputError(f"order must be morf, lerf or random, got {order!r}", field="metrics")
    steps = min(regions_evaluation, total)
    fill = cumulative_baseline(x.reshape(count, -1), perturb_baseline, context, "region_perturbation")
    blocks = _patch_blocks(context, x, y, patches, patch_rank, steps, fill)
    original, curves = with_original(context, x, y, blocks, steps, softmax=True)
    return original.unsqueeze(1) - curves


@engine_metric("selectivity", version="2")  # 2: tie policy (random by default)
def selectivity(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    patch_size: int = 8,
    perturb_baseline: str | float = "black",
    abs: bool = False,
    normalise: bool = True,
    ties: str = "random",
) -> Tensor:
    """Class probability as every patch is removed, most relevant first (the curve; lower area is better)."""
    a = preprocess(a, normalise, abs)
    patches = _patches(a, x, patch_size)
    count, total = patches.sums.shape
    fill = cumulative_baseline(x.reshape(count, -1), perturb_baseline, context, "selectivity")
    blocks = _patch_blocks(context, x, y, patches, ranked(patches.sums, ties, context), total, fill)
    return context.target_scores(blocks, y.repeat(total), softmax=True).view(total, count).T


@engine_metric(  # version 2: tie policy (random by default)
    "monotonicity_correlation",
    version="2",
    replay=Replay(
        "baselines",
        batch_baseline_replacement_by_indices,
        lambda arr, indices, result: result[np.arange(len(result)), indices[:, 0]].copy(),
    ),
    verify_params=lambda image_size: {"nr_samples": 4, "features_in_step": image_size * image_size // 4},
)
def monotonicity_correlation(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    nr_samples: int = 100,
    features_in_step: int = 1,
    eps: float = 1e-5,
    perturb_baseline: str | float = "uniform",
    abs: bool = True,
    normalise: bool = True,
    ties: str = "random",
) -> Tensor:
    """Spearman between the attribution of each feature group (least relevant first) and the prediction variance
    when only that group is replaced, `nr_samples` times."""
    a = preprocess(a, normalise, abs)
    x_flat, a_flat = feature_flat(x, a)
    count, features = x_flat.shape
    steps = math.ceil(features / features_in_step)
    # Ascending order, as Quantus's np.argsort(a); ties decide which features share a group when they straddle one.
    group = ranked(a_flat, ties, context, descending=False) // features_in_step
    fills = context.draws.get("baselines")
    if fills is None:
        fills = baseline_values(x_flat, perturb_baseline, context, count=steps * nr_samples)
    fills = torch.as_tensor(fills, device=context.device, dtype=x.dtype).reshape(steps * nr_samples, count)

    def blocks() -> Blocks:
        for job, images in jobs(steps * nr_samples, count, context.batch_size, context.device):
            replaced = group[images] == (job // nr_samples).unsqueeze(1)
            perturbed = torch.where(replaced, fills[job, images].unsqueeze(1), x_flat[images])
            yield perturbed.view(-1, *x.shape[1:]), y[images]

    original, perturbed = with_original(context, x, y, blocks(), steps * nr_samples, softmax=True)
    inverse = torch.where(original.abs() >= eps, 1.0 / original.abs(), torch.ones_like(original)) ** 2
    perturbed = perturbed.reshape(count, steps, nr_samples)
    variances = ((perturbed - original.view(-1, 1, 1)) ** 2).mean(2) * inverse.unsqueeze(1)
    attributions = torch.zeros(count, steps, device=a.device, dtype=a_flat.dtype).scatter_add_(1, group, a_flat)
    return spearman(attributions, variances)


@engine_metric(  # version 2: tie policy (random by default)
    "irof",
    version="2",
    quantus_needs_one_channel="Quantus 0.6's IROF builds a 1-channel mask for C-channel images (AssertionError on RGB)",
)
def irof(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    segmentation_method: str = "slic",
    perturb_baseline: str | float = "mean",
    abs: bool = False,
    normalise: bool = True,
    ties: str = "random",
) -> Tensor:
    """Area over the curve of the relative probability as superpixels are removed, most relevant first.

    Segmentation (SLIC, scikit-image) runs on the CPU as in Quantus; it is not a model pass. Quantus's "mean"
    baseline is the mean of the whole batch's current perturbed images, so states are built in step order.
    """
    from quantus.helpers.utils import get_superpixel_segments

    a = preprocess(a, normalise, abs).expand_as(x)
    count = len(x)
    segments = torch.stack(
        [
            torch.as_tensor(get_superpixel_segments(np.moveaxis(image, 0, -1).astype("double"), segmentation_method))
            for image in x.cpu().numpy()
        ]
    ).to(x.device)
    segment_orders = []
    for index in range(count):
        labels = int(segments[index].max()) + 1
        if labels < 2:
            raise ValueError("IROF needs more than one superpixel per image")
        one_hot = torch.nn.functional.one_hot(segments[index].view(-1).long(), labels).to(a.dtype)  # (HW, S)
        means = (a[index].reshape(x.shape[1], -1) @ one_hot).sum(0) / (one_hot.sum(0) * x.shape[1])
        segment_orders.append(torch.argsort(ranked(means.unsqueeze(0), ties, context)[0]))
    steps = max(len(order) for order in segment_orders)
    order_table = torch.full((count, steps), -1, device=x.device, dtype=torch.long)
    for index, order in enumerate(segment_orders):
        order_table[index, : len(order)] = order
    valid = (order_table >= 0).to(torch.float64)

    def blocks() -> Blocks:
        current = x
        for step in range(steps):
            mask = (segments == order_table[:, step].view(-1, 1, 1)).unsqueeze(1)
            fill = baseline_values(current.reshape(1, -1), perturb_baseline, context)[0, 0]
            current = torch.where(mask, fill, current)
            yield current, y

    original, curves = with_original(context, x, y, blocks(), steps, softmax=True)
    relative = (curves / original.unsqueeze(1)).double() * valid
    return valid.sum(1) - trapezoid(relative)


def road_noise(a: np.ndarray, x: np.ndarray, percentages: list[int] | None, seed: int) -> np.ndarray:
    """The Gaussian draws Quantus's ROAD makes after np.random.seed(seed), placed on the pixels they perturb."""
    draws = np.random.RandomState(seed)  # the stream Quantus's private generator gives for `seed`
    percentages = percentages or list(range(1, 100, 2))
    count, channels = x.shape[:2]
    order = np.argsort(-a.reshape(count, -1), axis=1)
    area = order.shape[1]
    noise = np.zeros((len(percentages), count, channels, area), dtype=np.float64)
    for index, percentage in enumerate(percentages):
        for image in range(count):
            top = order[image, : int(area * percentage / 100)]
            noise[index, image][:, top] = draws.randn(channels, len(top))
    return noise.reshape(len(percentages), *x.shape)


# 2: multigrid imputation; 3: compiled on a CPU; 4: tie policy (random by default)
@engine_metric(
    "road",
    version="4",
    prepare=prepare_imputation,
    replay=Replay("noise", rebuild=lambda a, x, params, seed: road_noise(a, x, params.get("percentages"), seed)),
    verify_params=lambda image_size: {"percentages": list(range(5, 100, 10))},
    quantus_needs_one_channel="Quantus 0.6's ROAD indexes pixels with C*H*W feature indices (IndexError on RGB)",
)
def road(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    percentages: list[int] | None = None,
    noise: float = 0.01,
    abs: bool = False,
    normalise: bool = True,
    imputation_iterations: int = 1000,
    imputation_tolerance: float = 1e-4,
    ties: str = "random",
) -> Tensor:
    """Whether the prediction survives when the top p % pixels are imputed from their neighbours (1 or 0 per p).

    The imputation (`xbench.measure.imputation`) is solved to a relative residual of `imputation_tolerance` (1e-4: pixel
    errors of a few 1e-3 on unit-variance images, under the N(0, 0.01) noise ROAD then adds by definition).
    """
    percentages = list(range(1, 100, 2)) if percentages is None else list(percentages)
    a = preprocess(a, normalise, abs)
    pixels = a.sum(1).reshape(len(x), -1) if a.shape[1] > 1 else a.reshape(len(x), -1)
    rank = ranked(pixels, ties, context)
    area = pixels.shape[1]
    counts = torch.tensor([int(area * p / 100) for p in percentages], device=x.device)
    noise_draws = context.draws.get("noise")
    if noise_draws is not None:
        noise_draws = torch.as_tensor(np.asarray(noise_draws), device=x.device, dtype=x.dtype)

    # The solver's cost per call is mostly fixed on a CPU, so it takes more images at once than the model does
    # (`logits` re-packs them into model batches), up to ~16 MB per buffer.
    block = max(context.batch_size, IMPUTATION_ELEMENTS // x[0].numel())

    def blocks() -> Blocks:
        for step, images in jobs(len(percentages), len(x), block, context.device):
            missing = rank[images] < counts[step].unsqueeze(1)
            missing = missing.view(-1, 1, *x.shape[2:]).expand(-1, x.shape[1], -1, -1)
            imputed = impute(x[images], missing, imputation_iterations, imputation_tolerance)
            if noise_draws is not None:
                jitter = noise_draws[step, images]
            else:
                jitter = torch.randn(imputed.shape, generator=context.generator, device=x.device, dtype=x.dtype)
            yield imputed.addcmul_(jitter, missing, value=noise), y[images]

    logits = context.logits(blocks(), total=len(percentages) * len(x)).view(len(percentages), len(x), -1)
    return (logits.argmax(-1) == y.unsqueeze(0)).T.double()
