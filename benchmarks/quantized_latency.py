"""Latency of the quantized models that `int8_static`, `int8_dynamic` and `fp16` deploy against the fp32 model, on this
machine's CPU, side by side: each round times every variant once, in turn, so a busy or throttled moment costs all of
them alike.
The table gives medians over rounds, each variant's speed-up over fp32 (above 1 = faster) and the int8 model's logit
drift (max |int8 - fp32| over the fp32 logits' range).

    python benchmarks/quantized_latency.py               # resnet10t 64 px, resnet18 224 px, ViT-Ti/16 224 px
    python benchmarks/quantized_latency.py --rounds 5

The int8 model runs PyTorch's int8 kernels layer by layer (quantize the input, int8 convolution or linear, dequantize);
`int4_weight` is not timed (no int4 kernel: it saves bytes, not time). Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from xbench.components.models import timm_model
from xbench.components.quantizers import quantizers
from xbench.measure.perf import device_name

CASES = [("resnet10t", 64, 32), ("resnet18", 224, 8), ("vit_tiny_patch16_224", 224, 8)]


def timed(model: torch.nn.Module, images: torch.Tensor, repeats: int) -> float:
    """Median ms of `repeats` forward passes (after one warm-up pass)."""
    with torch.no_grad():
        model(images)
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(images)
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="passes per variant per round")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{device_name(torch.device('cpu'))}, torch {torch.__version__}, {args.rounds} rounds x {args.repeats}\n")
    print(
        "| model | px | batch | fp32 ms | int8_static ms (speed-up) | int8_dynamic ms (speed-up) | fp16 ms (speed-up) "
        "| int8 logit drift |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, size, batch in CASES:
        model = timm_model(name, 10, size).eval()
        images = torch.randn(batch, 3, size, size)
        calibration = torch.randn(32, 3, size, size)
        variants = {"fp32": model}
        for method in ("int8_static", "int8_dynamic", "fp16"):
            quantizer = quantizers.get(method)
            quantized = quantizer.quantize(model, calibration, dict(quantizer.defaults), torch.device("cpu"))
            variants[method] = quantized.deployed
        times: dict[str, list[float]] = {label: [] for label in variants}
        for _ in range(args.rounds):
            for label, variant in variants.items():
                times[label].append(timed(variant, images, args.repeats))
        median = {label: statistics.median(values) for label, values in times.items()}
        with torch.no_grad():
            reference, int8 = model(images), variants["int8_static"](images)
        drift = float((reference - int8).abs().max() / (reference.max() - reference.min()))
        print(
            f"| {name} | {size} | {batch} | {median['fp32']:.1f} | {median['int8_static']:.1f} "
            f"({median['fp32'] / median['int8_static']:.2f}×) | {median['int8_dynamic']:.1f} "
            f"({median['fp32'] / median['int8_dynamic']:.2f}×) | {median['fp16']:.1f} "
            f"({median['fp32'] / median['fp16']:.2f}×) | {drift:.3f} |"
        )


if __name__ == "__main__":
    main()
