"""Quantization methods, one module each (`int8_static`, `int8_dynamic`, `int4_weight`, `fp16`); the base class,
registry and the helpers they share are in `_base`. The registry imports the built-in modules the first time it is
read."""

from xbench.components.quantizers._base import (
    QuantizedModel,
    Quantizer,
    fp32_bytes,
    quantizers,
    register,
    stored_bytes,
)

__all__ = ["QuantizedModel", "Quantizer", "fp32_bytes", "quantizers", "register", "stored_bytes"]
