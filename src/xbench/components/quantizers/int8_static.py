"""int8 static quantization: every convolution and linear layer runs on PyTorch's int8 CPU kernels (`x86` engine,
fbgemm/oneDNN), with activation ranges fixed before deployment from calibration images.

Per layer: the input is quantized per tensor (uint8, affine; range from a min/max observer over the calibration
images), the weights per output channel (int8, symmetric), the int32 accumulator requantized to uint8 at the output's
observed range, then dequantized. BatchNorm, activations, pooling, attention's softmax and LayerNorm stay in fp32
(BatchNorm is not folded into the convolutions: the explained model keeps its modules where timm put them).

Why PyTorch's eager quantized modules (`torch.ao.nn.quantized`) and not PT2E (`torchao.quantization.pt2e` with the
x86 inductor quantizer): PT2E quantizes an exported graph, which has no module tree left for Grad-CAM's target layers
or timm's feature stages, and its int8 kernels appear only after `torch.compile` (a C++ build per variant). The eager
modules run int8 kernels as they are and can be placed layer by layer, so the explained twin is the same model.
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
    layers,
    register,
    replace,
    stored_bytes,
    weight_bytes,
)

SCALE_BYTES, ZERO_POINT_BYTES = 4, 4  # fp32 scale and int32 zero point, per output channel and per activation


def _activation_observer() -> Any:
    from torch.ao.quantization.observer import MinMaxObserver

    # 7-bit activation ranges (0..127), so x86 kernels without VNNI cannot saturate their 16-bit intermediate sums
    return MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=127)


def _weight_scales(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    observer(weight.detach().float().cpu())
    scale, zero_point = observer.calculate_qparams()
    return scale.float(), zero_point.long()


def _straight_through(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """x rounded to the uint8 grid exactly as `torch.quantize_per_tensor` rounds it (the deployed layer's own call:
    inputs that sit on the previous layer's grid often fall on ties, which another rounding formula breaks the other
    way), with the gradient of the identity (straight through)."""
    rounded = torch.quantize_per_tensor(x.detach().float(), scale, zero_point, torch.quint8).dequantize()
    return x + (rounded.to(x.dtype) - x).detach()


def with_weights_of(layer: nn.Module, qweight: torch.Tensor) -> nn.Module:
    """A copy of `layer` whose weights are `qweight` dequantized (the int8 grid in fp32), frozen: the twin's layer."""
    twin = copied(layer)
    weight = twin.weight
    assert isinstance(weight, torch.Tensor)
    with torch.no_grad():
        weight.copy_(qweight.dequantize().to(weight.device))
    weight.requires_grad_(False)
    return twin


class FakeQuantLayer(nn.Module):
    """A convolution or linear layer with the deployed layer's rounding, in fp32 with straight-through gradients:
    input and output rounded to the calibrated uint8 grids, the weights already rounded to their int8 grid."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, qweight: torch.Tensor, ranges: dict[str, tuple[float, int]]):
        super().__init__()
        self.layer = with_weights_of(layer, qweight)
        self.input_scale, self.input_zero = ranges["input"]
        self.output_scale, self.output_zero = ranges["output"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _straight_through(x, self.input_scale, self.input_zero)
        return _straight_through(self.layer(x), self.output_scale, self.output_zero)


class Int8Layer(nn.Module):
    """The deployed layer: quantize the input, the int8 kernel, dequantize (torch.ao.nn.quantized)."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, qweight: torch.Tensor, ranges: dict[str, tuple[float, int]]):
        super().__init__()
        import torch.ao.nn.quantized as nnq

        bias = None if layer.bias is None else layer.bias.detach().float().cpu()
        inner: nn.Module
        if isinstance(layer, nn.Conv2d):
            inner = nnq.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
                bias=bias is not None,
            )
        else:
            inner = nnq.Linear(layer.in_features, layer.out_features, bias_=bias is not None)
        inner.set_weight_bias(qweight, bias)
        inner.scale, inner.zero_point = ranges["output"]
        self.inner = inner
        self.input_scale, self.input_zero = ranges["input"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quantized = torch.quantize_per_tensor(x.float(), self.input_scale, self.input_zero, torch.quint8)
        if isinstance(self.inner, torch.ao.nn.quantized.Linear) and quantized.dim() > 2:
            # the int8 linear kernel takes 2-D input: fold the token dimensions and restore them
            shape = quantized.shape
            return self.inner(quantized.reshape(-1, shape[-1])).dequantize().reshape(*shape[:-1], -1)
        return self.inner(quantized).dequantize()


def _supported(layer: nn.Module) -> bool:
    return not isinstance(layer, nn.Conv2d) or layer.padding_mode == "zeros"


@register("int8_static")
class Int8Static(Quantizer):
    bits = 8
    description = "int8 weights per channel and int8 activations at calibrated ranges (PyTorch x86 int8 CPU kernels)"
    # where the fp32 sum and the kernel's int32 sum round an output near a half-step apart, the two models take
    # different steps (2 of 131,072 outputs of one resnet10t layer), which later layers carry: 0.3-1.7 % of the
    # logits' range measured on resnet10t and a 4-block ViT (tests/test_quantization.py)
    logit_tolerance = 0.05

    def quantize(
        self, model: nn.Module, calibration: torch.Tensor, params: dict[str, Any], device: torch.device
    ) -> QuantizedModel:
        source = copied(model).cpu()
        chosen = [(name, layer) for name, layer in layers(source) if _supported(layer)]
        observers = {name: {"input": _activation_observer(), "output": _activation_observer()} for name, _ in chosen}
        hooks = []
        for name, layer in chosen:

            def observe(module: nn.Module, inputs: Any, output: torch.Tensor, name: str = name) -> None:
                observers[name]["input"](inputs[0].detach())
                observers[name]["output"](output.detach())

            hooks.append(layer.register_forward_hook(observe))
        with torch.no_grad():
            for batch in calibration.cpu().split(32):
                source(batch)
        for hook in hooks:
            hook.remove()
        deployed, explained = copied(source), copied(source)
        parts = stored_bytes(source, bits=32, layer_bits=8)  # then less what stays fp32, plus the scales
        parts["per-channel scales and zero points"] = 0
        parts["activation ranges"] = 0
        unquantized = [layer for name, layer in layers(source) if name not in dict(chosen)]
        for name, layer in chosen:
            ranges = {}
            for side, observer in observers[name].items():
                scale, zero = observer.calculate_qparams()
                ranges[side] = (float(scale), int(zero))
            scale, zero = _weight_scales(layer.weight)
            qweight = torch.quantize_per_channel(layer.weight.detach().float(), scale, zero, 0, torch.qint8)
            replace(deployed, name, Int8Layer(layer, qweight, ranges))
            replace(explained, name, FakeQuantLayer(layer, qweight, ranges))
            parts["per-channel scales and zero points"] += layer.weight.shape[0] * (SCALE_BYTES + ZERO_POINT_BYTES)
            parts["activation ranges"] += 2 * (SCALE_BYTES + ZERO_POINT_BYTES)
        # biases and every layer left in fp32 (BatchNorm, LayerNorm, embeddings): 4 bytes an element
        if unquantized:  # layers the int8 kernels cannot run stay fp32
            parts[layer_weights_part(8)] -= sum(weight_bytes(layer.weight, 8) for layer in unquantized)
            parts["fp32 layer weights"] = sum(weight_bytes(layer.weight, 32) for layer in unquantized)
        latency_missing = None if device.type == "cpu" else "PyTorch's int8 kernels run on the CPU only"
        explained = explained.to(device).eval()
        return QuantizedModel(deployed.eval(), explained, sum(parts.values()), parts, latency_missing, ("cpu",))
