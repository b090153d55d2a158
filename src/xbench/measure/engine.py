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

Here: the context a metric runs in, its pass counter, and `engine_metric`, which adds an implementation to its
metric's entry in the one metric registry (`metric.metrics`; `engine_metrics` reads the implementations from it).
The operators the metrics share are `operators`; the families are `faithfulness`, `robustness`, `rise` and
`confidence`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from xbench.core.errors import XbenchInputError
from xbench.core.registry import UnknownNameError
from xbench.measure.metric import Metric, metrics

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


class EngineMetrics:
    """The torch engine's implementations, read from the one metric registry (`metric.metrics`): the metrics whose
    entry has one. Not a registry of its own: `engine_metric` adds an implementation to its metric's entry."""

    def get(self, name: str) -> EngineMetric:
        implementation = metrics.get(name).engine if name in metrics else None
        if implementation is None:
            raise UnknownNameError("engine metric", name, self.names())
        return implementation

    def names(self) -> list[str]:
        return [name for name in metrics.names() if metrics.get(name).engine is not None]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in metrics and metrics.get(name).engine is not None


engine_metrics = EngineMetrics()


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
    """Add `fn(context, x, y, a, **params)` to the catalogued metric `name` as the torch engine's implementation, with
    its verification hooks (`Replay`, or a `reference` implementation for a metric Quantus lacks)."""

    def decorator(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        implementation = EngineMetric(
            name, fn, version, prepare, replay, verify_params, quantus_needs_one_channel, reference, reference_name
        )
        import xbench.measure.metrics  # noqa: F401  (the catalogue, whose entry the implementation joins)

        def joined(metric: Metric) -> Metric:
            if metric.engine is not None:
                raise ValueError(f"the torch engine's {name!r} is already registered")
            return dataclasses.replace(metric, engine=implementation)

        metrics.update(name, joined)
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
