"""int4 weight-only quantization, group-wise: each output channel's weights in groups of `group_size` along the
input, each group rounded to 16 levels (-8..7) with its own fp32 scale (symmetric: no zero point). Activations stay
fp32.

What runs is the weights dequantized to fp32, which is what a weight-only kernel computes: PyTorch has no int4
convolution kernel, and its int4 linear kernels (torchao's) need CUDA or a bf16 CPU layout, so int4 here saves bytes,
not time (latency is not measured, with that reason). The explained model is the deployed one: no activation is
rounded, so gradients flow through it unchanged.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from xbench.components.quantizers._base import QuantizedModel, Quantizer, copied, layers, register, stored_bytes

LEVELS = (-8, 7)
SCALE_BYTES = 4


def grouped_round(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    """The weight rounded to int4 in groups (torch's per-channel fake quantization over the groups as channels) and
    the number of groups (the last group of a row is padded with zeros)."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)
    width = rows.shape[1]
    padded_width = math.ceil(width / group_size) * group_size
    padded = torch.nn.functional.pad(rows, (0, padded_width - width)).reshape(-1, group_size)
    scale = (padded.abs().amax(dim=1) / LEVELS[1]).clamp(min=torch.finfo(torch.float32).tiny)
    zero = torch.zeros(len(scale), dtype=torch.int32, device=padded.device)
    rounded = torch.fake_quantize_per_channel_affine(padded, scale, zero, 0, *LEVELS)
    return rounded.reshape(rows.shape[0], padded_width)[:, :width].reshape(weight.shape), len(scale)


@register("int4_weight")
class Int4Weight(Quantizer):
    bits = 4
    description = "int4 weights in groups with an fp32 scale each, fp32 activations (weight-only; bytes, not speed)"
    defaults: ClassVar[dict[str, Any]] = {"group_size": 32}
    logit_tolerance = 0.0

    def check(self, params: dict[str, Any]) -> str | None:
        size = params.get("group_size")
        if not isinstance(size, int) or isinstance(size, bool) or not 2 <= size <= 4096:
            return f"group_size must be an integer from 2 to 4096, not {size!r}"
        return None

    def quantize(
        self, model: nn.Module, calibration: torch.Tensor, params: dict[str, Any], device: torch.device
    ) -> QuantizedModel:
        deployed = copied(model)
        scales = 0
        with torch.no_grad():
            for _, layer in layers(deployed):
                rounded, groups = grouped_round(layer.weight, int(params["group_size"]))
                layer.weight.copy_(rounded)
                scales += groups * SCALE_BYTES
        # two weights a byte (zeros rounded from pruned weights stay zero, so the bitmask still applies)
        parts = {**stored_bytes(deployed, bits=32, layer_bits=4), "group scales": scales}
        reason = "no int4 kernel runs these layers in PyTorch here: int4 weights save bytes, not time"
        return QuantizedModel(deployed, deployed, sum(parts.values()), parts, reason)
