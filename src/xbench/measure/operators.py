"""The operators the engine's metrics share, each with Quantus 0.6's definition: preprocessing of attributions,
baselines, orderings with ties (random or by index), correlations, trapezoids, and the blocks of perturbed inputs a
metric streams through the model."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from xbench.core.errors import XbenchInputError
from xbench.measure.engine import Blocks, EngineContext

# ---------------------------------------------------------------------------------------------- shared definitions


def preprocess(a: Tensor, normalise: bool, absolute: bool) -> Tensor:
    """Quantus's `normalise_by_max` over the whole batch (all axes), then abs, in that order."""
    if normalise and bool((a != 0).any()):
        a = a / a.abs().max()
    return a.abs() if absolute else a


def baseline_values(x_flat: Tensor, name: str | float, context: EngineContext, count: int = 1) -> Tensor:
    """Per-image fill values (count, N), as Quantus's `get_baseline_value(..., batched=True)` gives them."""
    if isinstance(name, int | float):
        return torch.full((count, len(x_flat)), float(name), device=x_flat.device)
    fills = {"black": lambda: x_flat.amin(1), "white": lambda: x_flat.amax(1), "mean": lambda: x_flat.mean(1)}
    if name == "uniform":
        return context.uniform(count, len(x_flat), low=0.0, high=1.0)
    if name not in fills:
        raise XbenchInputError(f"perturb_baseline must be one of black, white, mean, uniform or a number, got {name!r}")
    return fills[name]().unsqueeze(0).expand(count, -1)


def cumulative_baseline(x_flat: Tensor, name: str | float, context: EngineContext, metric: str) -> Tensor:
    """The fill of a metric that perturbs cumulatively. Quantus recomputes the baseline from the already perturbed
    image at every step; for black, white and constants that is the original's value, for mean and uniform it is not,
    and the engine does not replicate that."""
    if name in ("mean", "uniform"):
        raise XbenchInputError(
            f"the torch engine's {metric} takes perturb_baseline black, white or a number, not {name!r} "
            "(use engine: quantus)",
            field="engine",
        )
    return baseline_values(x_flat, name, context)[0]


def descending_order(values: Tensor) -> Tensor:
    """order[n] = the features of row n sorted descending, ties in index order (a stable descending argsort).

    float32 rows are sorted as int64 keys that hold the value's order in the high bits and the index in the low
    ones: the keys are unique, so an unstable sort of them is stable for the values, and 30-40 % faster than
    PyTorch's stable argsort on a CPU.
    """
    count = values.shape[1]
    bits = max(1, (count - 1).bit_length())
    if values.dtype != torch.float32 or bits > 31:
        return torch.argsort(values, dim=1, descending=True, stable=True)
    signed = (values + 0.0).view(torch.int32).long()  # + 0.0 turns -0.0 into 0.0, which it equals
    ordered = signed ^ ((signed >> 31) & 0x7FFFFFFF)  # integers in the order of the floats
    keys = ordered.neg_().bitwise_left_shift_(bits).bitwise_or_(torch.arange(count, device=values.device))
    return torch.sort(keys, dim=1).values.bitwise_and_((1 << bits) - 1)


def descending_rank(values: Tensor) -> Tensor:
    """rank[n, i] = position of feature i when row n is sorted descending (ties in index order)."""
    order = descending_order(values)
    positions = torch.arange(values.shape[1], device=values.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)  # the inverse permutation, without a second sort


TIE_POLICIES = ("random", "index")


def ranked(values: Tensor, ties: str, context: EngineContext, descending: bool = True) -> Tensor:
    """rank[n, i] = position of feature i when row n is sorted (descending by default), equal values ordered by `ties`.

    - `random`: equal values in a random order, drawn per image from the context's tie draw, so no image position is
      favoured (attribution maps are full of ties: CAMs upsampled from a few cells, zeros of sparse explainers).
    - `index`: equal values in index order (top-left first), what Quantus's argsort mostly does; for comparison.
    """
    if ties not in TIE_POLICIES:
        raise XbenchInputError(f"ties must be one of {', '.join(TIE_POLICIES)}, got {ties!r}", field="metrics")
    replayed = context.draws.get("orders")
    if replayed:  # verification: the orders Quantus's argsort gave, one per ranking, in the metric's own direction
        order = torch.as_tensor(np.asarray(replayed[context.rankings]), device=values.device).long().view(values.shape)
        context.rankings += 1
        positions = torch.arange(values.shape[1], device=values.device).expand_as(order)
        return torch.empty_like(order).scatter_(1, order, positions)
    keyed = values if descending else -values
    if ties == "index":
        return descending_rank(keyed)
    generator = context.tie_generator()
    shuffle = torch.rand(keyed.shape, generator=generator, device=keyed.device).argsort(dim=1)
    shuffled_rank = descending_rank(keyed.gather(1, shuffle))  # ties in shuffled order
    return torch.empty_like(shuffled_rank).scatter_(1, shuffle, shuffled_rank)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation in float64 (NaN for a constant row, as SciPy gives)."""
    a, b = a.double(), b.double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def average_ranks(values: Tensor) -> Tensor:
    """Row-wise ranks from 1, ties sharing their average rank (SciPy's `rankdata`)."""
    less = (values.unsqueeze(2) > values.unsqueeze(1)).sum(2)
    equal = (values.unsqueeze(2) == values.unsqueeze(1)).sum(2)
    return less.double() + (equal.double() + 1) / 2


def spearman(a: Tensor, b: Tensor) -> Tensor:
    return pearson(average_ranks(a.double()), average_ranks(b.double()))


def trapezoid(curves: Tensor) -> Tensor:
    """np.trapz(curves, dx=1, axis=1)."""
    if curves.shape[1] < 2:
        return torch.zeros(len(curves), dtype=curves.dtype, device=curves.device)
    return ((curves[:, 1:] + curves[:, :-1]) / 2).sum(1)


def jobs(steps: int, images: int, block: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """(step, image) index pairs in Quantus's order (step-major), `block` at a time, on `device`."""
    total = steps * images
    for start in range(0, total, block):
        jobs = torch.arange(start, min(start + block, total), device=device)
        yield jobs // images, jobs % images


def with_original(
    context: EngineContext, x: Tensor, y: Tensor, blocks: Blocks, steps: int, softmax: bool
) -> tuple[Tensor, Tensor]:
    """Scores of the unperturbed images (N,) and of `steps` perturbed copies of each (N, steps), in one stream so
    that the unperturbed pass shares a batch with the first perturbations."""
    scores = context.target_scores(itertools.chain([(x, y)], blocks), y.repeat(steps + 1), softmax)
    return scores[: len(x)], scores[len(x) :].view(steps, len(x)).T


def feature_flat(x: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """x and a (broadcast to x's shape, as Quantus does) flattened to (N, C*H*W)."""
    return x.reshape(len(x), -1), a.expand_as(x).reshape(len(x), -1)
