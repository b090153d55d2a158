"""Quantizers: the base class, the registry and what a quantization gives back.

A quantizer turns a trained (maybe pruned) fp32 model into two models that compute the same thing:

- `deployed`: the real quantized model (PyTorch's static and dynamic int8 CPU kernels, fp16 weights, int4 weights),
  whose accuracy, latency and stored bytes are the variant's figures;
- `explained`: the same rounding written as fake quantization with straight-through gradients (torch's
  `fake_quantize_*` ops), because gradients do not flow through integer kernels. Every explainer and metric runs on it;
  `logit_gap` measures, per variant, how far its logits are from the deployed model's.

Both keep the fp32 model's module tree (each convolution and linear layer is replaced where it sits), so timm's
`feature_info`, Grad-CAM's target layers and every hook still find their modules.

A new method is one module under `xbench/components/quantizers/` (or a plug-in file) with a `Quantizer` subclass
registered by `@quantizers.register(name)`; `xbench list quantizers` shows it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from xbench.core.registry import Registry

BUILT_IN = (
    "xbench.components.quantizers.int8_static",
    "xbench.components.quantizers.int8_dynamic",
    "xbench.components.quantizers.int4_weight",
    "xbench.components.quantizers.fp16",
)


@dataclass
class QuantizedModel:
    """A quantized variant: the model that runs (`deployed`), its fake-quantized twin that explainers differentiate
    (`explained`), and what its stored form takes (`stored_bytes`, itemised in `stored_parts`). `latency_missing`
    says why the deployed model's speed is not measured (None: it is); `fast_on` the device types where its kernels
    are faster than fp32 (where a gradient-free explainer explains the deployed model itself)."""

    deployed: nn.Module
    explained: nn.Module
    stored_bytes: int
    stored_parts: dict[str, int]
    latency_missing: str | None = None
    fast_on: tuple[str, ...] = ()


class Quantizer:
    """One quantization method. `defaults` are its parameters (the suite may set them), `bits` the weights' width.

    Subclasses implement `quantize(model, calibration, params, device)`; `calibration` is a batch of training images
    (the suite's `calibration_images`); methods that fix no activation ranges ignore it."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    bits: ClassVar[int] = 32
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    # the largest difference between the explained and deployed models' logits, relative to the deployed logits'
    # range over the eval images, that a variant may show (checked per variant, logged as `quant_logit_gap`)
    logit_tolerance: ClassVar[float] = 0.02

    def check(self, params: dict[str, Any]) -> str | None:
        """A reason the parameters cannot work (said at plan time, exit 2), or None."""
        return None

    def quantize(
        self, model: nn.Module, calibration: torch.Tensor, params: dict[str, Any], device: torch.device
    ) -> QuantizedModel:
        raise NotImplementedError


quantizers: Registry[Quantizer] = Registry("quantizer", modules=BUILT_IN)


def register(name: str) -> Callable[[type[Quantizer]], type[Quantizer]]:
    """Class decorator: `@register("int8_static") class Int8Static(Quantizer): ...` registers one instance."""

    def decorator(cls: type[Quantizer]) -> type[Quantizer]:
        cls.name = name
        quantizers.register(name)(cls())
        return cls

    return decorator


QUANTIZED_LAYERS = (nn.Conv2d, nn.Linear)


def layers(model: nn.Module) -> Iterator[tuple[str, nn.Conv2d | nn.Linear]]:
    """Every convolution and linear layer, by qualified name (the layers every built-in method quantizes)."""
    for name, module in model.named_modules():
        if type(module) in QUANTIZED_LAYERS:
            yield name, module


def replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where the submodule `name` is, keeping every other module (and so every path) as it was."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def fp32_bytes(model: nn.Module) -> int:
    """What the model takes stored densely in fp32: 4 bytes for every floating-point parameter and buffer element
    (BatchNorm's running statistics included, its integer batch counter not: inference does not read it), pruned
    zeros included. The reference every variant's `compression_rate_bits` divides."""
    tensors = [*model.parameters(), *model.buffers()]
    return 4 * sum(t.numel() for t in tensors if t.is_floating_point())


def weight_bytes(weight: torch.Tensor, bits: int) -> int:
    """A layer's weights at `bits` each, stored dense or, when it is smaller, as a bitmask of the nonzero positions
    (one bit a weight) followed by the nonzero values: pruned zeros cost a bit each, not a value."""
    count = weight.numel()
    nonzero = int(torch.count_nonzero(weight.detach()))
    return min(math.ceil(count * bits / 8), math.ceil(count / 8) + math.ceil(nonzero * bits / 8))


def stored_bytes(model: nn.Module, bits: int = 32, layer_bits: int | None = None) -> dict[str, int]:
    """The model's stored bytes by part: every convolution's and linear layer's weights at `layer_bits` (default
    `bits`) by `weight_bytes`, every other floating-point parameter and buffer dense at `bits`."""
    layer_bits = bits if layer_bits is None else layer_bits
    weights = [layer.weight for _, layer in layers(model)]
    weight_ids = {id(w) for w in weights}
    others = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point() and id(t) not in weight_ids]
    return {
        layer_weights_part(layer_bits): sum(weight_bytes(w, layer_bits) for w in weights),
        f"{bits}-bit other tensors (biases, norms, embeddings)": math.ceil(sum(t.numel() for t in others) * bits / 8),
    }


def layer_weights_part(bits: int) -> str:
    """The name `stored_bytes` gives the layers' weights at `bits`."""
    return f"{bits}-bit layer weights (bitmask-sparse where smaller)"


def copied(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode: quantizers never change the model they are given."""
    return copy.deepcopy(model).eval()
