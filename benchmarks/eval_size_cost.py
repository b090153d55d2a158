"""What accuracy on 2,048 eval images costs `quick` against 64, measured side by side in one process.

    python benchmarks/eval_size_cost.py

Times `predict` (what a variant's accuracy and per-image `correct` come from) on resnet10t at 64 px, 10 classes,
for 64 and 2,048 images, alternating, 5 rounds each, and scales the difference by `quick`'s 15 variants (5 CRs × 3
seeds; each variant's accuracy is measured once and shared by its 3 explainers' cells).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from xbench.components.models import predict, timm_model

VARIANTS = 15


def main() -> None:
    torch.manual_seed(0)
    model = timm_model("resnet10t", 10, 64)
    images = {n: torch.randn(n, 3, 64, 64) for n in (64, 2048)}
    device = torch.device("cpu")
    predict(model, images[64], device)  # warm-up
    seconds: dict[int, list[float]] = {64: [], 2048: []}
    for _ in range(5):
        for n, x in images.items():
            started = time.perf_counter()
            predict(model, x, device)
            seconds[n].append(time.perf_counter() - started)
    small, large = (statistics.median(seconds[n]) for n in (64, 2048))
    print(f"predict, median of 5: 64 images {small:.3f} s, 2,048 images {large:.3f} s ({large / small:.1f}x)")
    print(
        f"added to quick ({VARIANTS} variants): {VARIANTS * (large - small):.0f} s on {torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    main()
