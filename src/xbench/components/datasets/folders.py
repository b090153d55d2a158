"""Real images from folders: any ImageFolder tree, and Imagenette (downloaded with torchvision's checksums unless
already there). Training images stream from their files (`components.data`)."""

from __future__ import annotations

from pathlib import Path

from xbench.components.data import IMAGENETTE_VARIANTS, ImageData, _from_folders, _require_path
from xbench.components.datasets._base import dataset
from xbench.core.errors import XbenchInputError
from xbench.core.suite import DatasetConfig


@dataset("imagefolder", has_masks=False, real_images=True)
def imagefolder(config: DatasetConfig, seed: int, cache_root: Path) -> ImageData:
    """`path/train/<class>/*.jpg` and `path/val/<class>/*.jpg` (torchvision ImageFolder layout); masks from
    `dataset.masks`."""
    from torchvision.datasets import ImageFolder

    root = _require_path(config)
    splits = {split: root / split for split in ("train", "val")}
    for split, folder in splits.items():
        if not folder.is_dir():
            raise XbenchInputError(f"{folder} does not exist (expected {root}/{split}/<class>/*)", field="dataset.path")
    train, evaluation = ImageFolder(str(splits["train"])), ImageFolder(str(splits["val"]))
    return _from_folders(train, evaluation, train.classes, config, seed)


@dataset("imagenette", has_masks=False, real_images=True)
def imagenette(config: DatasetConfig, seed: int, cache_root: Path) -> ImageData:
    """Imagenette (`variant`: full, 320 or 160 px), downloaded into `path` with torchvision's checksums unless there."""
    from torchvision.datasets import Imagenette

    root = _require_path(config)
    size, folder = IMAGENETTE_VARIANTS[config.variant or "160"]
    already_there = (root / folder).is_dir()
    train = Imagenette(str(root), split="train", size=size, download=not already_there)
    evaluation = Imagenette(str(root), split="val", size=size, download=False)
    classes = [names[0] for names in train.classes]
    return _from_folders(train, evaluation, classes, config, seed)
