"""Cost figures: FLOPs (dense, torch's FlopCounterMode) and latency/throughput with warm-up, repeats and spread."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Figures:
    """Measured values and, for each figure that could not be measured, the reason (never silently dropped)."""

    values: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def update(self, other: Figures) -> None:
        self.values.update(other.values)
        self.missing.update(other.missing)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@torch.no_grad()
def count_flops(model: nn.Module, image_size: int, device: torch.device) -> Figures:
    """FLOPs of one forward pass of one image.

    `flops_dense` (torch's FlopCounterMode, 2 x MACs) counts every weight, zeros too; `macs_dense` is half of it.
    `flops_effective` counts only nonzero weights of conv and linear layers, each layer's dense FLOPs times its weight
    density (ShrinkBench's theoretical cost): what unstructured pruning could save with sparse kernels.
    """
    model.to(device).eval()
    zero_weight_flops = 0.0

    def count_zero_weights(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal zero_weight_flops
        weight = module.weight
        per_output = weight[0].numel() if isinstance(module, nn.modules.conv._ConvNd) else weight.shape[1]
        density = int(torch.count_nonzero(weight)) / weight.numel()
        zero_weight_flops += 2 * output.numel() * per_output * (1 - density)

    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    handles = [layer.register_forward_hook(count_zero_weights) for layer in layers]
    try:
        with FlopCounterMode(display=False) as counter:
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


@torch.inference_mode()
def latency(
    model: nn.Module, image_size: int, batch_size: int, device: torch.device, warmup: int, repeats: int
) -> Figures:
    """Forward-pass latency in fp32 after `warmup` passes: p50/p90/std in ms and throughput (images/s at p50).

    On CUDA each pass is timed with CUDA events and the device synchronised; on CPU with perf_counter.
    """
    model.to(device).eval()
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    suffix = f"_bs{batch_size}"
    try:
        for _ in range(warmup):
            model(x)
        _synchronise(device)
        times_ms = []
        for _ in range(repeats):
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
    except torch.cuda.OutOfMemoryError as exc:
        return Figures(missing={f"latency_ms_p50{suffix}": f"out of memory at batch size {batch_size}: {exc}"})
    p50 = statistics.median(times_ms)
    p90 = sorted(times_ms)[min(len(times_ms) - 1, round(0.9 * (len(times_ms) - 1)))]
    return Figures(
        {
            f"latency_ms_p50{suffix}": p50,
            f"latency_ms_p90{suffix}": p90,
            f"latency_ms_std{suffix}": statistics.pstdev(times_ms),
            f"throughput{suffix}": batch_size / (p50 / 1000),
        }
    )


def measure(
    model: nn.Module, image_size: int, batch_sizes: list[int], device: torch.device, warmup: int, repeats: int
) -> Figures:
    figures = count_flops(model, image_size, device)
    for batch_size in batch_sizes:
        figures.update(latency(model, image_size, batch_size, device, warmup, repeats))
    return figures
