"""`torchvision`: the data sets torchvision reads, by class name, from files already on disk (downloaded only when
`download: true`).

    dataset: {name: torchvision, path: ~/data, image_size: 64, options: {class: OxfordIIITPet}}

| class           | train / eval split        | images                | masks (localisation metrics)              |
|-----------------|---------------------------|-----------------------|-------------------------------------------|
| FashionMNIST    | train / t10k              | 28 px grey, in memory | none                                      |
| CIFAR10         | data_batch_* / test_batch | 32 px, in memory      | none                                      |
| OxfordIIITPet   | trainval / test           | files, streamed       | trimaps: the pet and its border (1 and 3) |
| VOCSegmentation | 2012 train / val          | files, streamed       | object pixels (classes 1-20, not 255)     |
| Imagenette      | train / val               | files, streamed       | `dataset.masks` if given                  |

Every image goes through the model's timm data config (resize to `image_size`, centre crop, mean/std) like any real
image; grey images are repeated into the model's three channels. A VOC image's label is the object class that covers
most of its pixels. FashionMNIST also reads the four `*-idx?-ubyte[.gz]` files from one flat folder (Debian's
`dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist), unpacked once into the cache.
Files already present are read as they are: torchvision checks the official archives' MD5 when it downloads them
(CIFAR's per-file MD5 check is skipped, so a re-packed subset reads too).
"""

from __future__ import annotations

import gzip
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from xbench.components.data import (
    FOLDER_VERSION,
    DatasetConfig,
    ImageData,
    StreamedImages,
    fingerprint,
    folder_transforms,
    mask_transform,
    sample_split,
)
from xbench.components.datasets._base import dataset, datasets
from xbench.components.datasets.folders import imagenette
from xbench.core.errors import XbenchInputError
from xbench.core.suite import Preprocessing

TorchvisionClass = Literal["FashionMNIST", "CIFAR10", "OxfordIIITPet", "VOCSegmentation", "Imagenette"]
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_IGNORE = 255  # VOC's "void" label: object borders and hard pixels
PET_TRIMAP_BACKGROUND = 2  # Oxford-IIIT Pet trimaps: 1 pet, 2 background, 3 the pet's border
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TORCHVISION_VERSION = "1"


class TorchvisionOptions(BaseModel):
    """`dataset.options` of `torchvision` (the root folder is `dataset.path`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_name: TorchvisionClass = Field(alias="class", description="The torchvision data set class.")
    download: bool = Field(
        False, description="Fetch the files into `dataset.path` when they are not there (needs the internet)."
    )


def _masked(config: DatasetConfig) -> bool:
    """Pet and VOC have segmentations; the others have masks only from `dataset.masks`."""
    return TorchvisionOptions.model_validate(config.options or {}).class_name in ("OxfordIIITPet", "VOCSegmentation")


@dataset("torchvision", has_masks=_masked, real_images=True, options=TorchvisionOptions)
def torchvision_dataset(config: DatasetConfig, seed: int, cache_root: Path) -> ImageData:
    """torchvision's FashionMNIST, CIFAR10, OxfordIIITPet, VOCSegmentation or Imagenette from `path`
    (`options: {class: ..., download: false}`); Pet and VOC segmentations as masks."""
    options = datasets.get("torchvision").parse_options(config)
    assert isinstance(options, TorchvisionOptions)
    if config.path is None:
        raise XbenchInputError(
            f"torchvision {options.class_name} needs the folder its files are in (or go to)", field="dataset.path"
        )
    root = Path(config.path).expanduser()
    if options.class_name == "Imagenette":
        return imagenette(config, seed, cache_root)
    try:
        if options.class_name == "FashionMNIST":
            return _in_memory(_fashion_mnist(root, cache_root, options.download), config, seed)
        if options.class_name == "CIFAR10":
            return _in_memory(_cifar10(root, options.download), config, seed)
        if options.class_name == "OxfordIIITPet":
            return _streamed(_pet(root, options.download), config, seed)
        return _streamed(_voc(root, options.download), config, seed)
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        raise XbenchInputError(
            f"torchvision {options.class_name} is not in {root} ({exc}); put its files there in torchvision's layout "
            "or set dataset.options.download: true",
            field="dataset.path",
        ) from exc


# --------------------------------------------------------------------------------------------------------------------
# The splits as plain lists: arrays of images for the small sets, (file, label, mask file) for the segmented ones.


class _Arrays:
    def __init__(self, train: tuple[Any, list[int]], evaluation: tuple[Any, list[int]], classes: list[str]) -> None:
        self.train, self.evaluation, self.classes = train, evaluation, classes


def _fashion_mnist(root: Path, cache_root: Path, download: bool) -> _Arrays:
    from torchvision.datasets import FashionMNIST

    flat = [_idx_file(root, name) for name in FASHION_MNIST_FILES]
    if all(path is not None for path in flat):  # a flat folder of the four files (Debian, the zalando repository)
        root = _unpacked_idx(flat, cache_root)  # type: ignore[arg-type]
    splits = [FashionMNIST(str(root), train=train, download=download) for train in (True, False)]
    train, evaluation = ((split.data.numpy(), split.targets.tolist()) for split in splits)
    return _Arrays(train, evaluation, list(splits[0].classes))


def _idx_file(root: Path, name: str) -> Path | None:
    return next((root / f"{name}{ext}" for ext in ("", ".gz") if (root / f"{name}{ext}").is_file()), None)


def _unpacked_idx(files: list[Path], cache_root: Path) -> Path:
    """The idx files in torchvision's layout (`<root>/FashionMNIST/raw/`), unpacked once under the cache, keyed by
    where they came from and their sizes."""
    from filelock import FileLock

    from xbench.core.cache import content_key

    key = content_key([[str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns] for path in files])
    root = cache_root / "datasets" / f"fashion-mnist-{key}"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with FileLock(root / ".lock"):
        if not (root / ".complete").exists():
            for path in files:
                target = raw / path.name.removesuffix(".gz")
                opener = gzip.open if path.suffix == ".gz" else open
                with opener(path, "rb") as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
            (root / ".complete").touch()
    return root


def _cifar10(root: Path, download: bool) -> _Arrays:
    from torchvision.datasets import CIFAR10

    class PresentCIFAR10(CIFAR10):
        # Files present are read as they are (no MD5 for torchvision to check them against); the archive's MD5 is
        # still checked when torchvision downloads it.
        train_list: ClassVar[list[list[str | None]]] = [[name, None] for name, _ in CIFAR10.train_list]
        test_list: ClassVar[list[list[str | None]]] = [[name, None] for name, _ in CIFAR10.test_list]
        meta: ClassVar[dict[str, str | None]] = {**CIFAR10.meta, "md5": None}

    splits = [PresentCIFAR10(str(root), train=train, download=download) for train in (True, False)]
    train, evaluation = ((split.data, list(split.targets)) for split in splits)
    return _Arrays(train, evaluation, list(splits[0].classes))


class _Files:
    def __init__(
        self,
        train: list[tuple[str, int, str]],
        evaluation: list[tuple[str, int, str]],
        classes: list[str],
        foreground: Any,
    ) -> None:
        self.train, self.evaluation, self.classes, self.foreground = train, evaluation, classes, foreground


def _pet(root: Path, download: bool) -> _Files:
    from torchvision.datasets import OxfordIIITPet

    splits = [OxfordIIITPet(str(root), split=split, download=download) for split in ("trainval", "test")]
    # torchvision keeps the files and labels it parsed in private lists; reading them avoids opening every image
    rows = [list(zip(map(str, s._images), s._labels, map(str, s._segs), strict=True)) for s in splits]
    return _Files(rows[0], rows[1], list(splits[0].classes), lambda trimap: trimap != PET_TRIMAP_BACKGROUND)


def _voc(root: Path, download: bool) -> _Files:
    from torchvision.datasets import VOCSegmentation

    splits = [VOCSegmentation(str(root), year="2012", image_set=s, download=download) for s in ("train", "val")]
    rows = [[(image, _voc_label(mask), mask) for image, mask in zip(s.images, s.masks, strict=True)] for s in splits]
    return _Files(rows[0], rows[1], list(VOC_CLASSES), lambda labels: (labels != 0) & (labels != VOC_IGNORE))


def _voc_label(mask_path: str) -> int:
    """The object class covering most pixels of a VOC segmentation (0 = background and 255 = void do not count)."""
    from PIL import Image

    with Image.open(mask_path) as mask:
        counts = Counter(np.asarray(mask).ravel().tolist())
    objects = {label: n for label, n in counts.items() if label not in (0, VOC_IGNORE)}
    if not objects:
        raise XbenchInputError(f"{mask_path} marks no object pixel", field="dataset.path")
    return max(objects, key=lambda label: (objects[label], -label)) - 1


# --------------------------------------------------------------------------------------------------------------------
# ImageData from them, through the model's timm transform.


def _in_memory(arrays: _Arrays, config: DatasetConfig, seed: int) -> ImageData:
    """The seed's subsets, transformed once and held as tensors (small images: train_size x 3 x image_size² floats)."""
    from PIL import Image

    _, transform = folder_transforms(config)
    train_indices, eval_indices, _ = sample_split(len(arrays.train[1]), len(arrays.evaluation[1]), config, seed)

    def tensors(split: tuple[Any, list[int]], indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = split
        x = torch.stack([transform(Image.fromarray(np.asarray(images[i])).convert("RGB")) for i in indices])
        return x, torch.tensor([labels[i] for i in indices], dtype=torch.int64)

    preprocessing = config.preprocessing or Preprocessing()
    train_x, train_y = tensors(arrays.train, train_indices)
    eval_x, eval_y = tensors(arrays.evaluation, eval_indices)
    return ImageData(
        train_x=train_x,
        train_y=train_y,
        eval_x=eval_x,
        eval_y=eval_y,
        eval_masks=None,
        class_names=tuple(arrays.classes),
        mean=preprocessing.mean,
        std=preprocessing.std,
        fingerprint=fingerprint(config, seed, f"{FOLDER_VERSION}-{TORCHVISION_VERSION}"),
    )


def _streamed(files: _Files, config: DatasetConfig, seed: int) -> ImageData:
    """Training images streamed from their files, eval images and their segmentation masks in memory."""
    from PIL import Image

    train_transform, eval_transform = folder_transforms(config)
    train_indices, eval_indices, held_out = sample_split(len(files.train), len(files.evaluation), config, seed)
    train_samples = [(files.train[i][0], files.train[i][1]) for i in train_indices]
    eval_rows = [files.evaluation[i] for i in eval_indices]
    eval_images = StreamedImages([(path, label) for path, label, _ in eval_rows], eval_transform)
    to_mask = mask_transform(config)
    masks = np.empty((len(eval_rows), 1, config.image_size, config.image_size), dtype=bool)
    for row, (_, _, mask_path) in enumerate(eval_rows):
        with Image.open(mask_path) as picture:
            labels = to_mask(picture).numpy()
        masks[row] = files.foreground(labels)
    streamed = StreamedImages(train_samples, train_transform)
    preprocessing = config.preprocessing or Preprocessing()
    validation = None
    if held_out is not None:
        validation = StreamedImages([files.evaluation[i][:2] for i in held_out], eval_transform)
    return ImageData(
        train_x=torch.empty(0, 3, config.image_size, config.image_size),
        train_y=streamed.labels,
        eval_x=torch.stack([eval_images[i][0] for i in range(len(eval_images))]),
        eval_y=eval_images.labels,
        eval_masks=masks,
        class_names=tuple(files.classes),
        mean=preprocessing.mean,
        std=preprocessing.std,
        fingerprint=fingerprint(config, seed, f"{FOLDER_VERSION}-{TORCHVISION_VERSION}"),
        train_stream=streamed,
        train_plain=streamed.with_transform(eval_transform),
        validation=validation,
        loader_workers=2 if config.loader_workers is None else config.loader_workers,
    )
