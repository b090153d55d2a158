"""Torch-native metric engine: Quantus 0.6's costly metrics computed on the model's device, at the forward-pass floor.

Each engine metric has the definition of the Quantus class of the same name (same preprocessing, perturbation,
baseline, ordering and aggregation). What changes is how the work is done:

- perturbed inputs are built on the device from index/mask tensors (no NumPy round trip) and streamed into the
  largest batch that fits (`batch_size`, halved on CUDA out-of-memory);
- every forward and backward pass goes through `PassCounter`, so each score says what it cost;
- random draws come from a `torch.Generator` on the device. The `draws` argument replays draws recorded from a
  Quantus run instead, which is how the equality tests share randomness with the reference.

Where Quantus 0.6 has a quirk, the engine keeps it and says so (a metric must mean the same in both engines):
pixel-indexed metrics order the C*H*W broadcast features, not pixels; IROF's "mean" baseline is the mean of the
whole batch's current perturbed images. ROAD and IROF are the exceptions, because Quantus 0.6 fails on RGB inputs
(ROAD indexes pixels with C*H*W feature indices; IROF builds a 1-channel mask for C-channel images): the engine
ranks and removes whole pixels across channels, which is the papers' definition and Quantus's on 1-channel inputs,
where the equality tests compare them.

Over 450 lines: context, registry, operators and every metric family wait for #43's split (one module per
family); they are verified against Quantus together (`verify`).
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from quantus.functions.perturb_func import batch_baseline_replacement_by_indices, batch_uniform_noise
from torch import Tensor, nn

from xbench.core.errors import XbenchInputError
from xbench.core.registry import Registry
from xbench.measure.imputation import impute, prepare_imputation

ExplainTensorFn = Callable[[Tensor, Tensor], Tensor]
Blocks = Iterator[tuple[Tensor, Tensor]]
IMPUTATION_ELEMENTS = 1 << 22
TIE_STREAM = 0x7469  # keeps tie orders apart from every other stream drawn from the same seed


class PassCounter:
    """Counts the images that go through `model` forward, and those whose output is back-propagated.

    The hook is a plain closure, not a bound method: explainers that deep-copy the model (guided backprop,
    DeepLIFT) copy its hooks, and a closure keeps counting into this counter.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.forward = 0
        self.backward = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> PassCounter:
        def count_backward(images: int) -> Callable[[Tensor], None]:
            def hook(grad: Tensor) -> None:
                self.backward += images

            return hook

        def count(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                return
            images = int(output.shape[0])
            self.forward += images
            if output.requires_grad:
                output.register_hook(count_backward(images))

        self._handles.append(self.model.register_forward_hook(count))
        return self

    def __exit__(self, *exc: object) -> None:
        while self._handles:
            self._handles.pop().remove()


@dataclass
class EngineContext:
    """The model and device a metric runs on, with the batching, randomness and pass counts it shares."""

    model: nn.Module
    device: torch.device
    batch_size: int = 256
    seed: int = 0
    explain: ExplainTensorFn | None = None
    draws: dict[str, Any] = field(default_factory=dict)
    # Which random tie order (0, 1, ...) the `random` tie policy uses; its draws never touch `generator`, so a metric's
    # other randomness is the same under every tie order and under `index`.
    tie_draw: int = 0
    rankings: int = field(default=0, init=False)  # rankings made so far (the index into replayed orders)
    generator: torch.Generator = field(init=False)
    counter: PassCounter = field(init=False)

    def __post_init__(self) -> None:
        self.model.to(self.device).eval()
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.counter = PassCounter(self.model)

    def tie_generator(self) -> torch.Generator:
        """A generator for tie orders, from the seed and the tie draw (a fresh one per ranking, so each ranking of a
        metric is the same whatever else the metric drew before it)."""
        state = np.random.SeedSequence([self.seed, self.tie_draw, TIE_STREAM]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator(device=self.device).manual_seed(int(state))

    def logits(self, blocks: Blocks, total: int | None = None) -> Tensor:
        """Logits of every image of every block, in order: blocks are re-packed into batches of at most `batch_size`.

        Given the `total` number of images, the batches are of equal size (80 images at 64 go as 40 + 40, not
        64 + 16): a small last batch runs at a worse time per image, a few per cent of ROAD's time on a CPU.
        """
        size = self.batch_size if total is None else -(-total // -(-total // self.batch_size))
        outputs: list[Tensor] = []
        pending: list[Tensor] = []
        pending_size = 0
        with torch.no_grad(), self.counter:
            for inputs, _ in blocks:
                pending.append(inputs)
                pending_size += len(inputs)
                while pending_size >= size:
                    joined = torch.cat(pending)
                    outputs.append(self._forward(joined[:size]))
                    rest = joined[size:]
                    pending, pending_size = ([rest], len(rest)) if len(rest) else ([], 0)
            if pending_size:
                outputs.append(self._forward(torch.cat(pending)))
        return torch.cat(outputs)

    def _forward(self, inputs: Tensor) -> Tensor:
        start = 0
        parts = []
        while start < len(inputs):
            chunk = inputs[start : start + self.batch_size]
            try:
                parts.append(self.model(chunk).float())
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                torch.cuda.empty_cache()
                self.batch_size //= 2
                continue
            start += len(chunk)
        return torch.cat(parts)

    def target_scores(self, blocks: Blocks, targets: Tensor, softmax: bool) -> Tensor:
        """The score (softmax probability or logit) of each image's target class; `targets` lists them in order."""
        logits = self.logits(blocks, total=len(targets))
        values = logits.softmax(dim=-1) if softmax else logits
        return values.gather(1, targets.view(-1, 1)).squeeze(1)

    def target_log_probabilities(self, blocks: Blocks, targets: Tensor) -> Tensor:
        """log p of each image's target class, from the logits in float64: a confident model's p is 1.0 in float32
        (its softmax rounds), while log p and 1 - p = -expm1(log p) keep what is left."""
        logits = self.logits(blocks, total=len(targets)).double()
        index = targets.view(-1, 1)
        # log p = -log(1 + Σ_{k≠y} e^(l_k - l_y)): log_softmax's l_y - logsumexp(l) rounds to 0 once the margin
        # passes ~37 even in float64, while this keeps -e^(-margin)
        others = logits.scatter(1, index, -torch.inf) - logits.gather(1, index)
        return -torch.nn.functional.softplus(torch.logsumexp(others, dim=1))

    def explain_batches(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if self.explain is None:
            raise ValueError("this metric explains again and needs the cell's explainer")
        parts = []
        with self.counter:
            for start in range(0, len(inputs), self.batch_size):
                end = start + self.batch_size
                parts.append(self.explain(inputs[start:end], targets[start:end]).detach().float())
        return torch.cat(parts)

    def uniform(self, *shape: int, low: float, high: float) -> Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device) * (high - low) + low


RecordFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# An independent implementation of a metric that has no Quantus twin: (model, x, y, a, params, device) -> per image.
ReferenceFn = Callable[[nn.Module, np.ndarray, np.ndarray, np.ndarray, dict[str, Any], torch.device], np.ndarray]


@dataclass(frozen=True)
class Replay:
    """How `xbench verify` gives the engine the random draws Quantus made, declared by the metric that draws them:
    either the calls of a Quantus `perturb_func` are recorded (`record(arr, indices, result)` -> one draw, stacked
    under `key` in the engine's `draws`), or `rebuild(a, x, params, seed)` recomputes the draws Quantus's seeded
    generator made (under `key`)."""

    key: str
    perturb_func: Callable[..., np.ndarray] | None = None
    record: RecordFn | None = None
    rebuild: Callable[[np.ndarray, np.ndarray, dict[str, Any], int], np.ndarray] | None = None


@dataclass(frozen=True)
class EngineMetric:
    name: str
    compute: Callable[..., Tensor]
    version: str = "1"  # bump when the metric's numbers may change: cached cells scored with it then re-run
    # one-time set-up on a device (loading compiled code), run before the metric is timed so no cell's cost has it
    prepare: Callable[[torch.device], None] | None = None
    # verification hooks: the random draws to replay, and parameters (over the suite defaults for an image size)
    # that keep a comparison with Quantus short
    replay: Replay | None = None
    verify_params: Callable[[int], dict[str, Any]] | None = None
    # why Quantus cannot compute the metric on RGB inputs, if it cannot (verify then compares on a 1-channel model)
    quantus_needs_one_channel: str = ""
    # for a metric Quantus lacks: the independent implementation verify compares it with, and what that is
    reference: ReferenceFn | None = None
    reference_name: str = ""

    def parameters(self) -> set[str]:
        signature = inspect.signature(self.compute)
        return {name for name, p in signature.parameters.items() if p.kind == p.KEYWORD_ONLY}

    def check(self, params: dict[str, Any]) -> None:
        unsupported = sorted(set(params) - self.parameters())
        if unsupported:
            raise XbenchInputError(
                f"the torch engine's {self.name!r} does not take {', '.join(unsupported)}; "
                f"it takes {', '.join(sorted(self.parameters()))} (use engine: quantus for the others)",
                field="engine",
            )


engine_metrics: Registry[EngineMetric] = Registry("engine metric")


def engine_metric(
    name: str,
    version: str = "1",
    prepare: Callable[[torch.device], None] | None = None,
    replay: Replay | None = None,
    verify_params: Callable[[int], dict[str, Any]] | None = None,
    quantus_needs_one_channel: str = "",
    reference: ReferenceFn | None = None,
    reference_name: str = "",
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register `fn(context, x, y, a, **params)` as the engine's `name`, with its verification hooks (`Replay`, or a
    `reference` implementation for a metric Quantus lacks)."""

    def decorator(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        metric = EngineMetric(
            name, fn, version, prepare, replay, verify_params, quantus_needs_one_channel, reference, reference_name
        )
        engine_metrics.register(name)(metric)
        return fn

    return decorator


def prepare_metric(name: str, device: torch.device) -> None:
    """The engine metric's one-time set-up on `device`, if it has one (call it before timing the metric)."""
    prepare = engine_metrics.get(name).prepare
    if prepare is not None:
        prepare(device)


def run_metric(
    name: str, params: dict[str, Any], context: EngineContext, x: np.ndarray, y: np.ndarray, a: np.ndarray
) -> np.ndarray:
    """Quantus's per-image output for `name` (a score, or a curve per image), as float64 NumPy."""
    metric = engine_metrics.get(name)
    metric.check(params)
    device = context.device
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
    yt = torch.as_tensor(np.asarray(y), device=device).long().view(-1)
    at = torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)
    if at.ndim == xt.ndim - 1:
        at = at.unsqueeze(1)
    result = metric.compute(context, xt, yt, at, **params)
    return result.detach().double().cpu().numpy()


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


def _jobs(steps: int, images: int, block: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """(step, image) index pairs in Quantus's order (step-major), `block` at a time, on `device`."""
    total = steps * images
    for start in range(0, total, block):
        jobs = torch.arange(start, min(start + block, total), device=device)
        yield jobs // images, jobs % images


def _with_original(
    context: EngineContext, x: Tensor, y: Tensor, blocks: Blocks, steps: int, softmax: bool
) -> tuple[Tensor, Tensor]:
    """Scores of the unperturbed images (N,) and of `steps` perturbed copies of each (N, steps), in one stream so
    that the unperturbed pass shares a batch with the first perturbations."""
    scores = context.target_scores(itertools.chain([(x, y)], blocks), y.repeat(steps + 1), softmax)
    return scores[: len(x)], scores[len(x) :].view(steps, len(x)).T


def _feature_flat(x: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """x and a (broadcast to x's shape, as Quantus does) flattened to (N, C*H*W)."""
    return x.reshape(len(x), -1), a.expand_as(x).reshape(len(x), -1)


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
    x_flat, a_flat = _feature_flat(x, a)
    count, features = x_flat.shape
    subsets = context.draws.get("subsets")
    if subsets is None:
        keys = torch.rand(nr_runs, count, features, generator=context.generator, device=context.device)
        subsets = keys.topk(subset_size, dim=2, sorted=False).indices
    subsets = torch.as_tensor(subsets, device=context.device).long()
    fill = baseline_values(x_flat, perturb_baseline, context, count=nr_runs)  # a fresh draw per run for "uniform"

    def blocks() -> Blocks:
        for runs, images in _jobs(nr_runs, count, context.batch_size, context.device):
            perturbed = x_flat[images].clone()
            perturbed.scatter_(1, subsets[runs, images], fill[runs, images].unsqueeze(1).expand(-1, subsets.shape[2]))
            yield perturbed.view(-1, *x.shape[1:]), y[images]

    original, perturbed = _with_original(context, x, y, blocks(), nr_runs, softmax=False)
    attribution_sums = a_flat.gather(1, subsets.permute(1, 0, 2).reshape(count, -1)).view(count, nr_runs, -1).sum(2)
    return pearson(attribution_sums, original.unsqueeze(1) - perturbed)


def _cumulative_feature_blocks(
    context: EngineContext, x: Tensor, y: Tensor, rank: Tensor, steps: int, features_in_step: int, fill: Tensor
) -> Blocks:
    x_flat = x.reshape(len(x), -1)
    for step, images in _jobs(steps, len(x), context.batch_size, context.device):
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
    x_flat, a_flat = _feature_flat(x, a)
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
    for step, images in _jobs(steps, len(x), context.batch_size, context.device):
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
    original, curves = _with_original(context, x, y, blocks, steps, softmax=True)
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
    x_flat, a_flat = _feature_flat(x, a)
    count, features = x_flat.shape
    steps = math.ceil(features / features_in_step)
    # Ascending order, as Quantus's np.argsort(a); ties decide which features share a group when they straddle one.
    group = ranked(a_flat, ties, context, descending=False) // features_in_step
    fills = context.draws.get("baselines")
    if fills is None:
        fills = baseline_values(x_flat, perturb_baseline, context, count=steps * nr_samples)
    fills = torch.as_tensor(fills, device=context.device, dtype=x.dtype).reshape(steps * nr_samples, count)

    def blocks() -> Blocks:
        for job, images in _jobs(steps * nr_samples, count, context.batch_size, context.device):
            replaced = group[images] == (job // nr_samples).unsqueeze(1)
            perturbed = torch.where(replaced, fills[job, images].unsqueeze(1), x_flat[images])
            yield perturbed.view(-1, *x.shape[1:]), y[images]

    original, perturbed = _with_original(context, x, y, blocks(), steps * nr_samples, softmax=True)
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

    original, curves = _with_original(context, x, y, blocks(), steps, softmax=True)
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
        for step, images in _jobs(len(percentages), len(x), block, context.device):
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


# ------------------------------------------------------------------------------------------------------ robustness


# the uniform noise Quantus added to the inputs, recorded as (perturbed - input)
_UNIFORM_NOISE = Replay("noise", batch_uniform_noise, lambda arr, indices, result: (result - arr).copy())


def _sensitivities(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    nr_samples: int,
    lower_bound: float,
    upper_bound: float | None,
    abs: bool,
    normalise: bool,
    return_nan_when_prediction_changes: bool,
) -> Tensor:
    """(N, nr_samples) ||a - a(x + noise)|| / ||a||, explanations re-computed in batches of perturbed inputs."""
    a = preprocess(a, normalise, abs)
    count = len(x)
    a_flat = a.reshape(count, -1)
    low, high = (-lower_bound, lower_bound) if upper_bound is None else (lower_bound, upper_bound)
    recorded = context.draws.get("noise")
    ratios = torch.full((count, nr_samples), math.nan, dtype=torch.float64, device=x.device)
    per_group = max(1, context.batch_size // count)
    labels = context.logits(iter([(x, y)])).argmax(-1) if return_nan_when_prediction_changes else None
    for first in range(0, nr_samples, per_group):
        samples = range(first, min(first + per_group, nr_samples))
        if recorded is not None:
            noise = torch.as_tensor(np.asarray(recorded[first : samples.stop]), device=x.device, dtype=x.dtype)
            noise = noise.view(len(samples), *x.shape)
        else:
            noise = context.uniform(len(samples), *x.shape, low=low, high=high)
        perturbed = (x.unsqueeze(0) + noise).reshape(-1, *x.shape[1:])
        explained = context.explain_batches(perturbed, y.repeat(len(samples)))
        explained = explained.view(len(samples), count, -1)
        for offset, sample in enumerate(samples):
            again = preprocess(explained[offset], normalise, abs)
            ratios[:, sample] = (a_flat - again).double().norm(dim=1) / a_flat.double().norm(dim=1)
        if labels is not None:
            changed = context.logits(iter([(perturbed, y)])).argmax(-1).view(len(samples), count) != labels
            ratios[:, samples.start : samples.stop][changed.T] = math.nan
    return ratios


@engine_metric("max_sensitivity", replay=_UNIFORM_NOISE, verify_params=lambda image_size: {"nr_samples": 8})
def max_sensitivity(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    abs: bool = False,
    normalise: bool = False,
    return_nan_when_prediction_changes: bool = False,
) -> Tensor:
    """Largest relative change of the explanation under uniform input noise (Yeh et al. 2019)."""
    ratios = _sensitivities(
        context, x, y, a, nr_samples, lower_bound, upper_bound, abs, normalise, return_nan_when_prediction_changes
    )
    if return_nan_when_prediction_changes:
        return ratios.max(1).values
    return torch.where(ratios.isnan(), -math.inf, ratios).max(1).values.nan_to_num(nan=math.nan, neginf=math.nan)


@engine_metric("avg_sensitivity", replay=_UNIFORM_NOISE, verify_params=lambda image_size: {"nr_samples": 8})
def avg_sensitivity(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    abs: bool = False,
    normalise: bool = False,
    return_nan_when_prediction_changes: bool = False,
) -> Tensor:
    """Mean relative change of the explanation under uniform input noise (Yeh et al. 2019)."""
    ratios = _sensitivities(
        context, x, y, a, nr_samples, lower_bound, upper_bound, abs, normalise, return_nan_when_prediction_changes
    )
    return ratios.mean(1) if return_nan_when_prediction_changes else ratios.nanmean(1)
