"""Peak memory of training on real image files at 224 px: 1,000 against 8,000 generated JPEGs (`make bench`, or
`pytest benchmarks/test_memory.py --benchmark-only --benchmark-json=benchmarks/memory.json -s`).

Each size trains test_resnet for one epoch in a fresh process (load the ImageFolder, stream its JPEGs through a
DataLoader with 2 worker processes, timm's transforms, flips and rotation). Reported in `extra_info`: the peak
resident set of the training process and of its largest DataLoader worker, in MiB. Held in memory as float32, the
8,000 images alone would take 8000 x 3 x 224 x 224 x 4 B = 4.5 GiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from xbench.components.datasets.synthetic import write_image_folder

TRAIN = """
import json, resource, sys, timm, torch
from xbench.components.datasets import load_dataset
from xbench.components.models import FitOptions, fit
from xbench.core.suite import Augmentation, DatasetConfig

root, count = sys.argv[1], int(sys.argv[2])
config = DatasetConfig(name="imagefolder", path=root, image_size=224, train_size=count, eval_size=16, loader_workers=2,
                       augment=Augmentation(hflip=0.5, vflip=0.5, rotation=10))
data = load_dataset(config, seed=0)
torch.manual_seed(0)
model = timm.create_model("test_resnet", num_classes=data.num_classes)
fit(model, data, FitOptions(epochs=1, lr=0.01, batch_size=64), seed=0, device=torch.device("cpu"), description="epoch")
print(json.dumps({"self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "largest_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

SIZES = (1000, 8000)


def test_peak_memory_does_not_grow_with_the_training_set(benchmark: pytest.FixtureRequest) -> None:
    peaks: dict[int, dict[str, float]] = {}

    def measure() -> None:
        with tempfile.TemporaryDirectory(prefix="xbench-memory-") as workdir:
            root = write_image_folder(Path(workdir), train_count=max(SIZES), eval_count=16, image_size=256)
            for count in SIZES:
                result = subprocess.run(
                    [sys.executable, "-c", TRAIN, str(root), str(count)], check=True, capture_output=True, text=True
                )
                peaks[count] = json.loads(result.stdout.strip().splitlines()[-1])

    benchmark.pedantic(measure, rounds=1, iterations=1)
    small, large = peaks[SIZES[0]]["self_mib"], peaks[SIZES[1]]["self_mib"]
    benchmark.extra_info.update({f"train_{count}_peak_mib": figures for count, figures in peaks.items()})
    benchmark.extra_info["growth_8000_over_1000"] = round(large / small - 1, 4)
    print(f"\n{peaks} -> 8000 images over 1000: {large / small - 1:+.1%}")
    # The claim: images are streamed from disk, so 8× the training images costs little more memory (0.101 measured;
    # holding them in memory would cost 8000 × 3 × 256² × 4 B = 6.3 GB, 8× the 1000 images' 0.8 GB).
    assert large / small - 1 < 0.25, f"peak memory grew {large / small - 1:+.1%} with 8× the training images"
