"""`shapes`, the embedded procedural data set (coloured shapes and textures with exact object masks), in memory and
written as image files (`shapes_files`, the real-image path, offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xbench.components.data import (
    _SHAPES_MEAN,
    _SHAPES_STD,
    SHAPE_CLASSES,
    SHAPES_VERSION,
    ImageData,
    _from_folders,
    fingerprint,
    render_shapes,
)
from xbench.components.datasets._base import dataset
from xbench.core.suite import DatasetConfig


@dataset("shapes", has_masks=True)
def shapes(config: DatasetConfig, seed: int, cache_root: Path) -> ImageData:
    """Coloured shapes and textures on cluttered gradients, 8 classes, with exact object masks."""
    train_images, train_labels, _ = render_shapes(
        config.train_size, config.image_size, np.random.default_rng([seed, 0])
    )
    eval_images, eval_labels, eval_masks = render_shapes(
        config.eval_size, config.image_size, np.random.default_rng([seed, 1])
    )
    return ImageData.from_arrays(
        (train_images, train_labels),
        (eval_images, eval_labels),
        eval_masks,
        SHAPE_CLASSES,
        _SHAPES_MEAN,
        _SHAPES_STD,
        fingerprint(config, seed, SHAPES_VERSION),
    )


@dataset("shapes_files", has_masks=True, real_images=True)
def shapes_files(config: DatasetConfig, seed: int, cache_root: Path) -> ImageData:
    """`shapes` written as JPEG files with PNG masks and read back like any image folder (streamed, timm transforms):
    the real-image path, offline. Written once under `path` (default: the cache), at 1.25 × image_size."""
    from filelock import FileLock
    from torchvision.datasets import ImageFolder

    from xbench.core.cache import content_key

    size = round(config.image_size * 1.25)
    identity = content_key([config.train_size, config.eval_size, size, seed, SHAPES_VERSION])
    root = Path(config.path).expanduser() if config.path else cache_root / "datasets" / f"shapes-{identity}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / ".lock"):  # workers of one run may all load it first: one writes, the rest wait
        if not (root / ".complete").exists():
            write_image_folder(root, config.train_size, config.eval_size, size, seed)
            (root / ".complete").touch()
    masks = config.masks or str(root / "masks")
    folder_config = config.model_copy(update={"masks": masks})
    train, evaluation = ImageFolder(str(root / "train")), ImageFolder(str(root / "val"))
    return _from_folders(train, evaluation, train.classes, folder_config, seed)


def write_image_folder(root: Path, train_count: int, eval_count: int, image_size: int, seed: int = 0) -> Path:
    """Write `shapes` images as an ImageFolder tree of JPEGs (`root/train/<class>/`, `root/val/<class>/`) with
    ground-truth masks as PNGs mirroring the eval split (`root/masks/<class>/<stem>.png`): real files for the real
    image path, offline (tests, `paper-tiny`, the memory benchmark). Rendered in chunks, so memory stays flat."""
    from PIL import Image

    for split, count, stream in (("train", train_count, 0), ("val", eval_count, 1)):
        rng = np.random.default_rng([seed, stream])
        for start in range(0, count, 256):
            images, labels, masks = render_shapes(min(256, count - start), image_size, rng)
            for offset, (image, label, mask) in enumerate(zip(images, labels, masks, strict=True)):
                name = f"{split}-{start + offset:06d}"
                folder = root / split / SHAPE_CLASSES[label]
                folder.mkdir(parents=True, exist_ok=True)
                pixels = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}.jpg", quality=90)
                if split == "val":
                    (root / "masks" / SHAPE_CLASSES[label]).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask[0].astype(np.uint8) * 255).save(
                        root / "masks" / SHAPE_CLASSES[label] / f"{name}.png"
                    )
    return root
