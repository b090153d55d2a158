"""Check the torch engine against Quantus 0.6 (or, for a metric Quantus lacks, the independent implementation it names):
same model, inputs, explanations and random draws; time both and
compare with the forward-pass floor: the model passes the metric needs, run bare at the model's best batch size on
the device, timed in the same repeats as the engine."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from xbench.components.attributions import tie_shares
from xbench.components.explainers import explain_tensor, explainers, quantus_explain_func
from xbench.measure.engine import EngineContext, Replay, engine_metrics, prepare_metric, run_metric
from xbench.measure.metrics import metrics, quantus_class_for
from xbench.measure.quantus_numpy import QuantusNumpy, quantus_numpy

VERIFY_EXPLAINER = "saliency"


@dataclass(frozen=True)
class PassTimes:
    """Seconds per image for a forward pass and for the extra backward pass, at the model's best batch size."""

    forward: float
    backward: float
    batch_size: int


PASS_BATCH_SIZES = (16, 32, 64, 128, 256)  # tried by pass_times for the best per-image time


def pass_times(
    model: nn.Module,
    image_shape: tuple[int, ...],
    device: torch.device,
    batch_sizes: tuple[int, ...] = PASS_BATCH_SIZES,
    repeats: int = 3,
) -> PassTimes:
    """The best per-image forward time over `batch_sizes`, and the backward time at that batch size."""
    model.to(device).eval()

    def timed(fn: Callable[[], None]) -> float:
        fn()
        best = float("inf")
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - started)
        return best

    per_image = {}
    for batch_size in batch_sizes:
        inputs = torch.randn(batch_size, *image_shape, device=device)

        def forward(inputs: torch.Tensor = inputs) -> None:
            with torch.no_grad():
                model(inputs)

        per_image[batch_size] = timed(forward) / batch_size
    best = min(per_image, key=per_image.__getitem__)
    inputs = torch.randn(best, *image_shape, device=device, requires_grad=True)

    def forward_backward() -> None:  # gradients w.r.t. the input only, as the gradient explainers take them
        torch.autograd.grad(model(inputs)[:, 0].sum(), inputs)

    both = timed(forward_backward) / best
    return PassTimes(per_image[best], max(0.0, both - per_image[best]), best)


def floor_run(
    model: nn.Module,
    image_shape: tuple[int, ...],
    device: torch.device,
    batch_size: int,
    forward_passes: int,
    backward_passes: int,
) -> Callable[[], float]:
    """A timed run of just the passes a metric needs, at `batch_size` on distinct random inputs: forward passes
    under no_grad, and forward + backward (input gradients) for those that were back-propagated.

    The last batch is run full and its time pro-rated; passes fewer than one batch run as one batch of their own
    (no run of them can be faster than that, and a full batch pro-rated would be a floor nothing can reach). Timed
    alongside the engine, in the same repeats, so that both see the same machine: a floor timed once up front is off
    by +-10 % on a shared CPU.
    """
    pool = [torch.randn(batch_size, *image_shape, device=device) for _ in range(4)]

    def timed(images: int, backward: bool) -> float:
        if 0 < images < batch_size:
            return timed_batch(images, backward)
        batches = -(-images // batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for index in range(batches):
            inputs = pool[index % len(pool)]
            if backward:
                inputs = inputs.detach().requires_grad_()
                torch.autograd.grad(model(inputs)[:, 0].sum(), inputs)
            else:
                with torch.no_grad():
                    model(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - started) * images / max(1, batches * batch_size)

    def timed_batch(images: int, backward: bool) -> float:
        inputs = pool[0][:images]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        if backward:
            inputs = inputs.detach().requires_grad_()
            torch.autograd.grad(model(inputs)[:, 0].sum(), inputs)
        else:
            with torch.no_grad():
                model(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    def run() -> float:
        return timed(max(0, forward_passes - backward_passes), False) + timed(backward_passes, True)

    return run


@dataclass
class Verification:
    metric: str
    max_abs_diff: float
    engine_seconds: float
    reference_seconds: float
    floor_seconds: float
    forward_passes: int
    backward_passes: int
    images: int
    note: str = ""
    case: str = "random"  # which attributions: see ATTRIBUTION_CASES
    tie_share: float = 0.0  # share of attribution values another value of the same map shares
    reference: str = "Quantus 0.6"  # the implementation the engine was compared with

    @property
    def floor_ratio(self) -> float:
        return self.engine_seconds / self.floor_seconds if self.floor_seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "floor_ratio": self.floor_ratio, "speedup_vs_reference": self.speedup}

    @property
    def speedup(self) -> float:
        return self.reference_seconds / self.engine_seconds if self.engine_seconds > 0 else float("nan")


def verification_params(image_size: int) -> dict[str, dict[str, Any]]:
    """Per-metric parameters: xbench's defaults for the image size, with the sample counts each engine metric's
    `verify_params` cuts to keep a run short."""
    params = {}
    for name in engine_metrics.names():
        shorter = engine_metrics.get(name).verify_params
        params[name] = metrics.get(name).resolve({}, image_size) | (shorter(image_size) if shorter else {})
    return params


class _Recorder:
    """A Quantus perturb_func that records what it was asked to do, so the engine can replay the same draws."""

    def __init__(self, replay: Replay) -> None:
        assert replay.perturb_func is not None and replay.record is not None
        self.function, self.record = replay.perturb_func, replay.record
        self.calls: list[Any] = []

    def __call__(self, arr: np.ndarray, indices: np.ndarray, **kwargs: Any) -> np.ndarray:
        result = self.function(arr=arr, indices=indices, **kwargs)
        self.calls.append(self.record(arr, indices, result))
        return result


def orders_features(name: str) -> bool:
    """Whether the engine metric ranks features (and so takes a tie policy)."""
    return "ties" in engine_metrics.get(name).parameters()


def quantus_reference(
    name: str,
    params: dict[str, Any],
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    device: torch.device,
    seed: int,
    explain_func: Callable[..., np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, Any], float]:
    """Quantus's raw per-image output, the draws it made (for the engine to replay) and its wall time."""
    replay = engine_metrics.get(name).replay
    recorder = _Recorder(replay) if replay is not None and replay.perturb_func is not None else None
    extra = {"perturb_func": recorder} if recorder else {}
    quantus_class = quantus_class_for(metrics.get(name))
    instance = quantus_class(
        **params, **extra, return_aggregate=False, disable_warnings=True, display_progressbar=False
    )
    model.to(device).eval()
    started = time.perf_counter()
    view = QuantusNumpy(seed, record=orders_features(name))  # Quantus's own tie order, recorded for the engine
    with warnings.catch_warnings(), quantus_numpy(view, quantus_class.evaluate_batch.__module__):
        warnings.simplefilter("ignore")
        result = instance(
            model=model,
            x_batch=x,
            y_batch=y,
            a_batch=a,
            device=str(device),
            batch_size=max(256, len(x)),
            explain_func=explain_func,
        )
    seconds = time.perf_counter() - started  # the recorder's copies cost microseconds against the model's passes
    draws: dict[str, Any] = {}
    if replay is not None and recorder is not None:
        draws[replay.key] = np.stack(recorder.calls)
    if replay is not None and replay.rebuild is not None:
        draws[replay.key] = replay.rebuild(a, x, params, seed)
    if view.record:
        draws["orders"] = view.orders
    return np.asarray(result, dtype=np.float64).reshape(len(x), -1), draws, seconds


def reference_scores(
    name: str,
    params: dict[str, Any],
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    device: torch.device,
    seed: int,
    explain_func: Callable[..., np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, Any], float, str]:
    """The independent result the engine must equal: Quantus's where Quantus has the metric, else the metric's own
    `reference` implementation; with the draws to replay, the reference's wall time, and what it was."""
    if metrics.get(name).quantus_class is not None:
        return (*quantus_reference(name, params, model, x, y, a, device, seed, explain_func), "Quantus 0.6")
    engine = engine_metrics.get(name)
    if engine.reference is None:
        raise ValueError(f"{name} has neither a Quantus twin nor a reference implementation to be verified against")
    model.to(device).eval()
    started = time.perf_counter()
    result = engine.reference(model, x, y, a, params, device)
    seconds = time.perf_counter() - started
    return np.asarray(result, dtype=np.float64).reshape(len(x), -1), {}, seconds, engine.reference_name


def verify_metric(
    name: str,
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    device: torch.device,
    times: PassTimes,
    params: dict[str, Any],
    seed: int = 0,
    explainer: str = VERIFY_EXPLAINER,
    repeats: int = 3,
    timed: bool = True,
) -> Verification:
    """The engine's scores against the reference's; `timed` also times the engine (best of `repeats`) against the
    floor of the passes it made. Untimed, the engine runs once and the floor is not measured (NaN)."""
    plugin = explainers.get(explainer)
    explainer_params = plugin.resolve({})
    needs_explain = metrics.get(name).needs_explain_func
    explain_func = quantus_explain_func(plugin, explainer_params, device) if needs_explain else None
    reference, draws, reference_seconds, reference_name = reference_scores(
        name, params, model, x, y, a, device, seed, explain_func
    )

    def explain(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return explain_tensor(plugin, explainer_params, model, inputs, targets, device, batch_size=len(inputs))

    prepare_metric(name, device)  # compiled code is loaded before the clock starts, as the runner does
    engine_seconds = floor_seconds = float("inf")
    floor: Callable[[], float] | None = None
    for _ in range(repeats if timed else 1):  # best of `repeats` for both, interleaved
        context = EngineContext(model, device, batch_size=times.batch_size, seed=seed, explain=explain, draws=draws)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        result = run_metric(name, params, context, x, y, a).reshape(len(x), -1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        engine_seconds = min(engine_seconds, time.perf_counter() - started)
        if not timed:
            floor_seconds = float("nan")
            continue
        if floor is None:
            counter = context.counter
            floor = floor_run(model, tuple(x.shape[1:]), device, times.batch_size, counter.forward, counter.backward)
            floor()  # warm-up, as the engine's first repeat was
        floor_seconds = min(floor_seconds, floor())
    both = np.isfinite(reference) & np.isfinite(result)
    mismatched_nans = int((np.isfinite(reference) != np.isfinite(result)).sum())
    difference = float(np.abs(reference[both] - result[both]).max()) if both.any() else 0.0
    counter = context.counter
    return Verification(
        metric=name,
        max_abs_diff=float("inf") if mismatched_nans else difference,
        engine_seconds=engine_seconds,
        reference_seconds=reference_seconds,
        floor_seconds=floor_seconds,
        forward_passes=counter.forward,
        backward_passes=counter.backward,
        images=len(x),
        note=f"{mismatched_nans} NaN(s) differ" if mismatched_nans else "",
        reference=reference_name,
    )


ATTRIBUTION_CASES = {
    "random": "tie-free random attributions, one value per channel",
    "gradcam": "Grad-CAM of the model: a coarse map upsampled, so most values are tied",
    "flat_background": "input x gradient of images on a flat (zero) background: every background pixel is 0",
}


def case_attributions(
    case: str, model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray, device: torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, attributions) for a verification case: the random ones as given, or real explanations with
    ties, on the images whose map is not constant (a constant map has no order to compare; xbench scores it NaN)."""
    if case == "random":
        return x, y, a
    if case == "gradcam":
        explainer = "gradcam"
    elif case == "flat_background":
        explainer = "input_x_gradient"
        size = x.shape[-1]
        flat = np.zeros_like(x)  # the object: a centred square of the image; the rest a flat background
        keep = slice(size // 4, size - size // 4)
        flat[..., keep, keep] = x[..., keep, keep]
        x = flat
    else:
        raise ValueError(f"unknown case {case!r}; cases: {', '.join(ATTRIBUTION_CASES)}")
    plugin = explainers.get(explainer)
    explained = explain_tensor(plugin, plugin.resolve({}), model, torch.as_tensor(x), torch.as_tensor(y), device)
    tied = explained.cpu().numpy()
    scorable = ~tie_shares(tied)["constant"]
    return x[scorable], y[scorable], tied[scorable]


def random_inputs(
    model_name: str, image_size: int, images: int, seed: int, num_classes: int = 10, in_chans: int = 3
) -> tuple[nn.Module, np.ndarray, np.ndarray, np.ndarray]:
    """A randomly initialised timm model, random images and labels, and tie-free random attributions.

    Attributions get one value per channel: with one value per pixel broadcast to C channels, Quantus's
    np.argsort orders the C equal values of a pixel in an unspecified way and the engine in channel order.
    """
    from xbench.components.models import timm_model

    torch.manual_seed(seed)
    model = timm_model(model_name, num_classes, image_size, in_chans=in_chans).eval()
    generator = np.random.default_rng(seed)
    x = generator.normal(size=(images, in_chans, image_size, image_size)).astype(np.float32)
    y = generator.integers(0, num_classes, size=images)
    a = generator.random(size=(images, in_chans, image_size, image_size)).astype(np.float32)
    return model, x, y, a


def verify_all(
    model_name: str = "resnet18",
    image_size: int = 64,
    images: int = 8,
    seed: int = 0,
    device: torch.device | None = None,
    names: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    cases: list[str] | None = None,
    timed: bool = True,
) -> tuple[list[Verification], PassTimes]:
    """Every engine metric (or `names`) against Quantus; ROAD and IROF on a 1-channel copy of the model.

    `cases` (default: all of ATTRIBUTION_CASES) adds tied attributions for the metrics that order features; the
    engine then replays the order Quantus's argsort gave the tied values. `timed=False` checks the scores only: no
    pass times or floors are measured (NaN), the engine runs once at the largest batch size.
    """
    device = device or torch.device("cpu")

    def skipped(name: str, case: str) -> None:
        if progress:
            progress(f"{name} ({case}): skipped, every map is constant at {image_size} px (nothing to order)")

    model, x, y, a = random_inputs(model_name, image_size, images, seed)
    gray = random_inputs(model_name, image_size, images, seed, in_chans=1)
    untimed = PassTimes(forward=float("nan"), backward=float("nan"), batch_size=max(PASS_BATCH_SIZES))
    times = pass_times(model, tuple(x.shape[1:]), device) if timed else untimed
    gray_times: PassTimes | None = None if timed else untimed
    params = verification_params(image_size)
    results = []
    for name in names or engine_metrics.names():
        for case in cases or list(ATTRIBUTION_CASES):
            if case != "random" and not orders_features(name):
                continue
            if progress:
                progress(f"{name} ({case})")
            one_channel_why = engine_metrics.get(name).quantus_needs_one_channel
            if one_channel_why:
                gray_times = gray_times or pass_times(gray[0], tuple(gray[1].shape[1:]), device)
                gx, gy, attributions = case_attributions(case, gray[0], gray[1], gray[2], gray[3], device)
                if not len(gx):
                    skipped(name, case)
                    continue
                result = verify_metric(
                    name, gray[0], gx, gy, attributions, device, gray_times, params[name], seed, timed=timed
                )
                result.note = f"1-channel model: {one_channel_why}"
            else:
                cx, cy, attributions = case_attributions(case, model, x, y, a, device)
                if not len(cx):
                    skipped(name, case)
                    continue
                if metrics.get(name).needs_explain_func:
                    plugin = explainers.get(VERIFY_EXPLAINER)
                    attributions = (
                        explain_tensor(
                            plugin, plugin.resolve({}), model, torch.as_tensor(cx), torch.as_tensor(cy), device
                        )
                        .cpu()
                        .numpy()
                    )
                result = verify_metric(
                    name, model, cx, cy, attributions, device, times, params[name], seed, timed=timed
                )
            result.case = case
            result.tie_share = float(tie_shares(attributions)["tie_share"].mean())
            results.append(result)
    return results, times
