"""Cost figures: FLOPs (dense, torch's FlopCounterMode) and latency/throughput with warm-up, repeats and spread."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_model
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from xbench.core.suite import PerfConfig


@dataclass
class Figures:
    """Measured values and, for each figure that could not be measured, the reason (never silently dropped)."""

    values: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def update(self, other: Figures) -> None:
        self.values.update(other.values)
        self.missing.update(other.missing)


def device_name(device: torch.device) -> str:
    """The device that timed a figure: the GPU's name, or the CPU's model and torch's threads (part of the key of
    cached speed figures, so timings from another kind of machine are never reused)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({_cpu_model()}, {torch.get_num_threads()} threads)"


@functools.cache
def _cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what `platform` knows, often only the architecture)."""
    import platform

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _fused_attention_flops(
    query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: object, **kwargs: object
) -> int:
    """FLOPs of one fused attention call: the two matmuls (Q K^T and softmax(.) V), as torch counts the CUDA kernels."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def attention_flop_formulas() -> dict[object, object]:
    """Formulas for the fused attention ops torch's FlopCounterMode does not know (it counts only the CUDA kernels).

    timm calls `F.scaled_dot_product_attention` whenever fused attention is on; on CPU that dispatches to
    `_scaled_dot_product_flash_attention_for_cpu`, which the counter would skip, so every transformer lost its
    attention matmuls (4.24 instead of 4.60 GMACs for ViT-S/16 at 224 px). With these, fused and unfused attention
    count the same.
    """
    aten = torch.ops.aten
    names = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable")
    return {getattr(aten, name): _fused_attention_flops for name in names if hasattr(aten, name)}


@torch.no_grad()
def count_flops(model: nn.Module, image_size: int, device: torch.device) -> Figures:
    """FLOPs of one forward pass of one image.

    `flops_dense` (torch's FlopCounterMode, 2 x MACs) counts every weight, zeros too, and the attention matmuls of
    fused and unfused attention alike; `macs_dense` is half of it. Element-wise work (norms, activations, softmax) is
    not counted, as in the published figures of timm and fvcore.
    `flops_effective` counts only nonzero weights of conv and linear layers, each layer's dense FLOPs times its weight
    density (ShrinkBench's theoretical cost): what unstructured pruning could save with sparse kernels.
    """
    model.to(device).eval()
    zero_weight_flops = 0.0

    def count_zero_weights(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal zero_weight_flops
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        per_output = weight[0].numel() if isinstance(module, nn.modules.conv._ConvNd) else weight.shape[1]
        density = int(torch.count_nonzero(weight)) / weight.numel()
        zero_weight_flops += 2 * output.numel() * per_output * (1 - density)

    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    handles = [layer.register_forward_hook(count_zero_weights) for layer in layers]
    try:
        with FlopCounterMode(display=False, custom_mapping=attention_flop_formulas()) as counter:
            model(torch.zeros(1, 3, image_size, image_size, device=device))
        dense = float(counter.get_total_flops())
    except Exception as exc:  # any failure of the counter is recorded, not raised
        reason = f"FlopCounterMode failed: {type(exc).__name__}: {exc}"
        return Figures(missing={"flops_dense": reason, "flops_effective": reason})
    finally:
        for handle in handles:
            handle.remove()
    return Figures({"flops_dense": dense, "macs_dense": dense / 2, "flops_effective": dense - zero_weight_flops})


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _timed_passes(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device, settings: PerfConfig
) -> list[float]:
    autocast = (
        torch.autocast(device.type, dtype=_DTYPES[settings.precision])
        if settings.precision in _DTYPES
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        for _ in range(settings.warmup):
            model(x)
        _synchronise(device)
        times_ms = []
        for _ in range(settings.repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(x)
                end.record()
                torch.cuda.synchronize(device)
                times_ms.append(start.elapsed_time(end))
            else:
                started = time.perf_counter()
                model(x)
                times_ms.append((time.perf_counter() - started) * 1000)
    return times_ms


def latency(model: nn.Module, image_size: int, batch_size: int, device: torch.device, settings: PerfConfig) -> Figures:
    """Forward-pass latency after `warmup` passes: p50/p90/std in ms, throughput (images/s at p50), peak memory.

    On CUDA each pass is timed with CUDA events and the device synchronised; on CPU with perf_counter. Precision,
    channels_last and torch.compile follow `settings`. On CUDA out-of-memory the batch size is halved until it fits,
    and the figures are recorded under the batch size actually measured.
    """
    runner: Callable[[torch.Tensor], torch.Tensor] = model.to(device).eval()
    if settings.channels_last or settings.compile:
        runner = copy.deepcopy(model)  # leave the caller's model as it was
        if settings.channels_last:
            runner = runner.to(memory_format=torch.channels_last)
        if settings.compile:
            runner = torch.compile(runner)
    missing: dict[str, str] = {}
    size = batch_size
    while True:
        x = torch.randn(size, 3, image_size, image_size, device=device)
        if settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            times_ms = _timed_passes(runner, x, device, settings)
            break
        except torch.cuda.OutOfMemoryError as exc:
            del x
            torch.cuda.empty_cache()
            reason = f"out of memory at batch size {size} ({exc})"
            if size == 1:
                missing[f"latency_ms_p50_bs{batch_size}"] = reason
                return Figures(missing=missing)
            missing[f"latency_ms_p50_bs{size}"] = f"{reason}; measured at batch size {size // 2} instead"
            size //= 2
    suffix = f"_bs{size}"
    p50 = statistics.median(times_ms)
    p90 = sorted(times_ms)[min(len(times_ms) - 1, round(0.9 * (len(times_ms) - 1)))]
    figures = Figures(
        {
            f"latency_ms_p50{suffix}": p50,
            f"latency_ms_p90{suffix}": p90,
            f"latency_ms_std{suffix}": statistics.pstdev(times_ms),
            f"throughput{suffix}": size / (p50 / 1000),
        },
        missing,
    )
    if device.type == "cuda":
        figures.values[f"peak_memory_mb{suffix}"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        figures.missing[f"peak_memory_mb{suffix}"] = "peak memory is measured on CUDA only (max_memory_allocated)"
    return figures


def file_size_mb(model: nn.Module) -> float:
    """Size of the model saved as safetensors (dense: unstructured zeros take as much room as any weight)."""
    handle, path = tempfile.mkstemp(suffix=".safetensors")
    os.close(handle)
    try:
        save_model(model, path)
        return os.path.getsize(path) / 2**20
    finally:
        os.unlink(path)


def measure(model: nn.Module, image_size: int, device: torch.device, settings: PerfConfig) -> Figures:
    """FLOPs, file size, and latency/throughput/peak memory at each of the settings' batch sizes."""
    figures = count_flops(model, image_size, device)
    figures.values["file_size_mb"] = file_size_mb(model)
    for batch_size in settings.batch_sizes:
        figures.update(latency(model, image_size, batch_size, device, settings))
    return figures


def speedups(reference: dict[str, float], variant: dict[str, float], batch_sizes: list[int]) -> dict[str, float]:
    """A variant's speed-ups over its unpruned `reference`: theoretical (dense FLOPs of the reference over the
    variant's effective FLOPs, i.e. nonzero weights) and measured (p50 latency ratio at each batch size)."""
    result = {}
    if "flops_dense" in reference and "flops_effective" in variant:
        result["theoretical_speedup"] = reference["flops_dense"] / variant["flops_effective"]
    for batch_size in batch_sizes:
        name = f"latency_ms_p50_bs{batch_size}"
        if name in reference and name in variant:
            result[f"measured_speedup_bs{batch_size}"] = reference[name] / variant[name]
    return result
