"""fp16: every weight and activation in half precision (`model.half()`), the input cast on the way in and the logits
cast back to fp32 on the way out.

The explained model rounds each convolution's and linear layer's weights, input and output to fp16 and computes in
fp32 with straight-through gradients (half-precision gradients underflow where fp32 ones do not); norms, activations
and softmax stay fp32 there, so its logits differ from the deployed model's by fp16 rounding of those, measured per
variant. fp16 is fast on GPUs; on most CPUs it is slower than fp32, and the figures say so as measured.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xbench.components.quantizers._base import (
    QuantizedModel,
    Quantizer,
    copied,
    layers,
    register,
    replace,
    stored_bytes,
)


def _rounded(x: torch.Tensor) -> torch.Tensor:
    """x rounded to fp16 (saturating at its largest value), with the gradient of the identity."""
    limit = torch.finfo(torch.float16).max
    return x + (x.clamp(-limit, limit).half().float() - x).detach()


class Fp16Layer(nn.Module):
    """A layer whose weights, input and output are rounded to fp16, computed in fp32."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = copied(layer)
        weight = self.layer.weight
        assert isinstance(weight, torch.Tensor)
        with torch.no_grad():
            weight.copy_(_rounded(weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rounded(self.layer(_rounded(x)))


def _to_half(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(i.half() if torch.is_tensor(i) and i.is_floating_point() else i for i in inputs)


def _to_float(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    return output.float()


@register("fp16")
class Fp16(Quantizer):
    bits = 16
    description = "every weight and activation in half precision (fast on GPUs, not on most CPUs)"
    logit_tolerance = 0.02

    def quantize(
        self, model: nn.Module, calibration: torch.Tensor, params: dict[str, Any], device: torch.device
    ) -> QuantizedModel:
        deployed = copied(model).half()
        deployed.register_forward_pre_hook(_to_half)
        deployed.register_forward_hook(_to_float)
        explained = copied(model)
        for name, _ in list(layers(explained)):
            replace(explained, name, Fp16Layer(explained.get_submodule(name)))
        parts = stored_bytes(model, bits=16)
        return QuantizedModel(deployed, explained, sum(parts.values()), parts, fast_on=("cuda",))
