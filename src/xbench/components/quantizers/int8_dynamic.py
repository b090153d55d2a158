"""int8 dynamic quantization: every linear layer runs on PyTorch's dynamic int8 CPU kernel
(`torch.ao.nn.quantized.dynamic.Linear`, what `torch.ao.quantization.quantize_dynamic` puts in), convolutions stay
fp32.

Per linear layer: the weights per output channel (int8, symmetric), fixed once; the input quantized per tensor at the
range of the batch it is given (uint8, 7-bit as the x86 kernel does: `torch._choose_qparams_per_tensor` with
`reduce_range`), so no calibration images are needed; the int32 accumulator comes back in fp32, with no output
rounding. This is the method for transformers, whose compute is mostly linear layers; a CNN keeps only its classifier
head in int8, and its figures (stored bytes, speed) say so.

The explained twin rounds exactly as the kernel does (the same per-batch range, the same int8 weights), so its logits
differ from the deployed model's only where the order of the sums moves an input across a rounding step, which later
layers carry: 1e-7 of the logits' range on resnet10t (only its head is quantized), 0.9-1.4 % on a 4-block ViT, whose
7-bit activation steps are coarse (tests/test_quantization.py; tolerance 5 %, as int8_static's).
Because the range is the batch's, a score depends on the batch an image comes in, on the deployed model and the twin
alike; the metrics perturb whole batches, as the deployed model would see them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xbench.components.quantizers._base import (
    QuantizedModel,
    Quantizer,
    copied,
    layer_weights_part,
    register,
    replace,
    stored_bytes,
    weight_bytes,
)
from xbench.components.quantizers.int8_static import SCALE_BYTES, ZERO_POINT_BYTES, _weight_scales, with_weights_of


def _batch_rounded(x: torch.Tensor) -> torch.Tensor:
    """x rounded to the uint8 grid of its own range, as the dynamic kernel quantizes its input, with the gradient of
    the identity (straight through)."""
    values = x.detach().float()
    scale, zero_point = torch._choose_qparams_per_tensor(values, True)  # reduce_range: the x86 kernel's 7 bits
    rounded = torch.quantize_per_tensor(values, scale, zero_point, torch.quint8).dequantize()
    return x + (rounded.to(x.dtype) - x).detach()


class FakeDynamicLinear(nn.Module):
    """A linear layer with the dynamic kernel's rounding in fp32: input rounded at its batch's range, weights already
    on their int8 grid."""

    def __init__(self, layer: nn.Linear, qweight: torch.Tensor) -> None:
        super().__init__()
        self.layer = with_weights_of(layer, qweight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(_batch_rounded(x))


def _deployed(layer: nn.Linear, qweight: torch.Tensor) -> nn.Module:
    import torch.ao.nn.quantized.dynamic as nnqd

    bias = None if layer.bias is None else layer.bias.detach().float().cpu()
    deployed = nnqd.Linear(layer.in_features, layer.out_features, bias_=bias is not None)
    deployed.set_weight_bias(qweight, bias)
    return deployed


@register("int8_dynamic")
class Int8Dynamic(Quantizer):
    bits = 8
    description = "int8 linear layers (weights per channel, inputs at each batch's range); convolutions stay fp32"
    logit_tolerance = 0.05  # see the module's docstring

    def quantize(
        self, model: nn.Module, calibration: torch.Tensor, params: dict[str, Any], device: torch.device
    ) -> QuantizedModel:
        source = copied(model).cpu()
        chosen = [(name, m) for name, m in source.named_modules() if type(m) is nn.Linear]
        deployed, explained = copied(source), copied(source)
        parts = stored_bytes(source, bits=32)  # every layer fp32, then the linear layers' weights at 8 bits
        parts[layer_weights_part(8)] = 0
        parts["per-channel scales and zero points"] = 0
        for name, layer in chosen:
            scale, zero = _weight_scales(layer.weight)
            qweight = torch.quantize_per_channel(layer.weight.detach().float(), scale, zero, 0, torch.qint8)
            replace(deployed, name, _deployed(layer, qweight))
            replace(explained, name, FakeDynamicLinear(layer, qweight))
            parts[layer_weights_part(32)] -= weight_bytes(layer.weight, 32)
            parts[layer_weights_part(8)] += weight_bytes(layer.weight, 8)
            parts["per-channel scales and zero points"] += layer.weight.shape[0] * (SCALE_BYTES + ZERO_POINT_BYTES)
        latency_missing = None if device.type == "cpu" else "PyTorch's dynamic int8 kernels run on the CPU only"
        explained = explained.to(device).eval()
        return QuantizedModel(deployed.eval(), explained, sum(parts.values()), parts, latency_missing, ("cpu",))
