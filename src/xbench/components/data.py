"""Datasets: the embedded procedural `shapes` set (with ground-truth object masks), ImageFolder and Imagenette.

Over 450 lines: the three dataset plug-ins and their shared loading wait for #43's one-plug-in-per-file layout
(`components/datasets/`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ValidationError

from xbench.core.errors import XbenchInputError
from xbench.core.registry import Registry
from xbench.core.suite import Augmentation, DatasetConfig, Preprocessing


@dataclass(frozen=True)
class ImageData:
    """Normalised image tensors in memory, (N, 3, H, W); masks are (N, 1, H, W) bool, or None when unknown."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    eval_masks: np.ndarray | None
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fingerprint: str
    # Real image folders stream their training images (train_x is then empty; train_y holds the labels).
    train_stream: StreamedImages | None = None
    train_plain: StreamedImages | None = None  # the same files without augmentation (pruning criteria, validation)
    # Early stopping's images when they come from the eval split (`validation_size`), not from the training images.
    validation: StreamedImages | None = None
    loader_workers: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def eval_subset(self, indices: np.ndarray) -> ImageData:
        """The same data with only the eval images at `indices` (a selection); training data untouched."""
        chosen = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        digest = hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:8]
        return dataclasses.replace(
            self,
            eval_x=self.eval_x[chosen],
            eval_y=self.eval_y[chosen],
            eval_masks=None if self.eval_masks is None else self.eval_masks[np.asarray(indices, dtype=np.int64)],
            fingerprint=f"{self.fingerprint}-{digest}",
        )

    @property
    def train_count(self) -> int:
        return len(self.train_y)

    def train_examples(self, indices: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images and labels at `indices`, without augmentation when streamed (for pruning criteria and
        validation): a few at a time, never the whole set."""
        if self.train_stream is None:
            return self.train_x[indices], self.train_y[indices]
        positions = range(self.train_count)[indices] if isinstance(indices, slice) else indices.tolist()
        assert self.train_plain is not None
        items = [self.train_plain[int(i)] for i in positions]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)

    @classmethod
    def from_arrays(
        cls,
        train: tuple[np.ndarray, np.ndarray],
        evaluation: tuple[np.ndarray, np.ndarray],
        eval_masks: np.ndarray | None,
        class_names: tuple[str, ...],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        fingerprint: str,
    ) -> ImageData:
        """From (images in [0, 1] as (N, 3, H, W), labels) pairs, normalised with mean and std."""
        return cls(
            train_x=_normalise(train[0], mean, std),
            train_y=torch.from_numpy(train[1]),
            eval_x=_normalise(evaluation[0], mean, std),
            eval_y=torch.from_numpy(evaluation[1]),
            eval_masks=eval_masks,
            class_names=class_names,
            mean=mean,
            std=std,
            fingerprint=fingerprint,
        )

    @classmethod
    def random(cls, count: int, image_size: int, num_classes: int, seed: int = 0) -> ImageData:
        """Gaussian inputs and random labels: enough to trace a graph or take a gradient when only cost matters."""
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(count, 3, image_size, image_size, generator=generator)
        y = torch.randint(0, num_classes, (count,), generator=generator)
        classes = tuple(map(str, range(num_classes)))
        return cls(x, y, x, y, None, classes, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), f"random-{count}-{image_size}-{seed}")

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x.cpu() * std + mean).clamp(0, 1)


# load(config, seed, cache_root): cache_root is where a loader may keep files it makes (the run's --cache-dir).
DatasetLoader = Callable[[DatasetConfig, int, Path], ImageData]


@dataclass(frozen=True)
class Dataset:
    name: str
    load: DatasetLoader
    has_masks: bool | Callable[[DatasetConfig], bool]  # or, when it depends on the options, a function of them
    description: str
    real_images: bool = False  # transformed by the model's timm data config (`dataset.preprocessing` when unset)
    options: type[BaseModel] | None = None  # the model `dataset.options` is validated against; None: takes none

    def provides_masks(self, config: DatasetConfig) -> bool:
        """Whether the eval images of `config` come with ground-truth masks (localisation metrics need them)."""
        if config.masks is not None:
            return True
        return self.has_masks(config) if callable(self.has_masks) else self.has_masks

    def parse_options(self, config: DatasetConfig) -> BaseModel | None:
        """`dataset.options` checked against this dataset's options model (XbenchInputError names the field)."""
        if self.options is None:
            if config.options:
                raise XbenchInputError(
                    f"{self.name} takes no options, got {sorted(config.options)}", field="dataset.options"
                )
            return None
        try:
            return self.options.model_validate(config.options or {})
        except ValidationError as exc:
            allowed = ", ".join(self.options.model_fields)
            lines = []
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"])
                lines.append(f"dataset.options.{where}: {error['msg']} (options of {self.name}: {allowed})")
            raise XbenchInputError("\n  ".join(lines)) from None


datasets: Registry[Dataset] = Registry("dataset")


def dataset(
    name: str,
    has_masks: bool | Callable[[DatasetConfig], bool],
    real_images: bool = False,
    options: type[BaseModel] | None = None,
) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register `load(config, seed, cache_root) -> ImageData`. `options`: a pydantic model of the dataset's own
    settings (`dataset: {name: ..., options: {...}}` in a suite), checked at plan time; the loader reads them with
    `datasets.get(name).parse_options(config)`."""

    def decorator(load: DatasetLoader) -> DatasetLoader:
        doc = (load.__doc__ or "").strip().splitlines()
        datasets.register(name)(Dataset(name, load, has_masks, doc[0] if doc else "", real_images, options))
        return load

    return decorator


def load_dataset(config: DatasetConfig, seed: int, cache_root: Path | None = None) -> ImageData:
    """The data set a suite names; `cache_root` (default: the default cache) is where its loader may keep files."""
    from xbench.core.cache import default_cache_dir

    data = datasets.get(config.name).load(config, seed, cache_root if cache_root is not None else default_cache_dir())
    if config.validation_size is not None and data.validation is None:
        raise XbenchInputError(
            f"dataset {config.name!r} has no held-out eval images for validation_size (image folders have: "
            f"{', '.join(n for n in datasets.names() if datasets.get(n).real_images)})",
            field="dataset.validation_size",
        )
    return data


def fingerprint(config: DatasetConfig, seed: int, version: str) -> str:
    payload = json.dumps({"config": config.model_dump(), "seed": seed, "version": version}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _normalise(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8/float HWC-in-[0,1] batch (N, 3, H, W) -> normalised float32 tensor."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# --------------------------------------------------------------------------------------------------------------------
# shapes: procedural, deterministic from the seed, nothing downloaded.

SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring", "star", "striped", "checkered")
SHAPES_VERSION = "1"
_SHAPES_MEAN = (0.28, 0.28, 0.28)
_SHAPES_STD = (0.18, 0.18, 0.18)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Object mask in rotated, centred coordinates (u, v), and a texture mask for the textured classes."""
    dist = np.hypot(u, v)
    half = 0.8 * radius
    if kind == "circle":
        return dist <= radius, None
    if kind == "square":
        return (np.abs(u) <= half) & (np.abs(v) <= half), None
    if kind == "triangle":
        # Equilateral triangle: three half-planes at 120 degrees.
        inside = np.ones_like(u, dtype=bool)
        for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(angle) + v * np.sin(angle) <= 0.5 * radius
        return inside, None
    if kind == "cross":
        arm = 0.3 * radius
        return ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | ((np.abs(v) <= arm) & (np.abs(u) <= radius)), None
    if kind == "ring":
        return (dist <= radius) & (dist >= 0.55 * radius), None
    if kind == "star":
        theta = np.arctan2(v, u)
        return dist <= radius * (0.55 + 0.45 * np.cos(5 * theta)), None
    square = (np.abs(u) <= half) & (np.abs(v) <= half)
    period = max(radius / 2.5, 2.0)
    if kind == "striped":
        return square, np.sin(np.pi * u / (period / 2)) > 0
    if kind == "checkered":
        return square, (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    raise ValueError(kind)


def render_shapes(count: int, image_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render `count` images (N, 3, S, S) in [0, 1], labels (N,) and object masks (N, 1, S, S)."""
    size = image_size
    labels = rng.permutation(np.arange(count) % len(SHAPE_CLASSES))
    images = np.empty((count, 3, size, size), dtype=np.float32)
    masks = np.empty((count, 1, size, size), dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for index, label in enumerate(labels):
        # Muted background: a random linear gradient between two dim colours, plus noise.
        c0, c1 = rng.uniform(0.05, 0.45, size=(2, 3)).astype(np.float32)
        direction = rng.uniform(0, 2 * np.pi)
        ramp = ((xx * np.cos(direction) + yy * np.sin(direction)) / size + 1) / 2
        image = c0[:, None, None] * (1 - ramp) + c1[:, None, None] * ramp
        image += rng.normal(0, 0.04, size=image.shape).astype(np.float32)
        # Distractors: thin line segments and dots in bright colours, too small to look like a class.
        for _ in range(rng.integers(3, 7)):
            colour = _hsv_to_rgb(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.6, 1.0))
            x0, y0 = rng.uniform(0, size, size=2)
            if rng.uniform() < 0.5:
                angle, length = rng.uniform(0, np.pi), rng.uniform(0.1, 0.3) * size
                along = (xx - x0) * np.cos(angle) + (yy - y0) * np.sin(angle)
                across = -(xx - x0) * np.sin(angle) + (yy - y0) * np.cos(angle)
                blob = (np.abs(across) <= 0.6) & (along >= 0) & (along <= length)
            else:
                blob = np.hypot(xx - x0, yy - y0) <= rng.uniform(1.0, max(1.5, size / 32))
            image[:, blob] = colour[:, None]
        # The class-defining object: random position, scale, rotation and colour.
        radius = rng.uniform(0.18, 0.32) * size
        cx, cy = rng.uniform(radius, size - radius, size=2)
        rotation = rng.uniform(0, 2 * np.pi)
        u = (xx - cx) * np.cos(rotation) + (yy - cy) * np.sin(rotation)
        v = -(xx - cx) * np.sin(rotation) + (yy - cy) * np.cos(rotation)
        mask, texture = _shape_mask(SHAPE_CLASSES[label], u, v, radius)
        colour = _hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
        image[:, mask] = colour[:, None]
        if texture is not None:
            image[:, mask & ~texture] = colour[:, None] * 0.35
        images[index] = np.clip(image, 0, 1)
        masks[index, 0] = mask
    return images, labels.astype(np.int64), masks


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


# --------------------------------------------------------------------------------------------------------------------
# Real images: any ImageFolder tree, and Imagenette (downloaded with torchvision's checksums). Training images stream
# from their files through a DataLoader (only the eval images are held in memory), transformed by timm's data config
# (resize, interpolation, centre crop, mean/std) with the suite's augmentation.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FOLDER_VERSION = "2"
DEFAULT_LOADER_WORKERS = 2


class StreamedImages(torch.utils.data.Dataset):
    """(path, label) samples read from disk when asked for, through `transform`: memory does not grow with them."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable[[Any], torch.Tensor]) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label

    def with_transform(self, transform: Callable[[Any], torch.Tensor]) -> StreamedImages:
        return StreamedImages(self.samples, transform)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)


def folder_transforms(config: DatasetConfig) -> tuple[Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor]]:
    """(training, eval) transforms from timm's data config: the eval one resizes to image_size / crop_pct with the
    configured interpolation, centre-crops and normalises; training adds the suite's flips and rotation first."""
    from timm.data import create_transform, resolve_data_config
    from torchvision import transforms

    preprocessing = config.preprocessing or Preprocessing()
    data_config = resolve_data_config(
        {
            "input_size": (3, config.image_size, config.image_size),
            "interpolation": preprocessing.interpolation,
            "mean": preprocessing.mean,
            "std": preprocessing.std,
            "crop_pct": preprocessing.crop_pct,
        }
    )
    evaluation = create_transform(**data_config, is_training=False)
    augment = config.augment or Augmentation()
    steps: list[Any] = []
    if augment.hflip:
        steps.append(transforms.RandomHorizontalFlip(augment.hflip))
    if augment.vflip:
        steps.append(transforms.RandomVerticalFlip(augment.vflip))
    if augment.rotation:
        steps.append(transforms.RandomRotation(augment.rotation))
    return transforms.Compose([*steps, evaluation]), evaluation


def mask_transform(config: DatasetConfig) -> Callable[[Any], torch.Tensor]:
    """The eval transform's geometry (resize, centre crop) with nearest-neighbour sampling, for masks."""
    from torchvision import transforms

    preprocessing = config.preprocessing or Preprocessing()
    resized = int(config.image_size / preprocessing.crop_pct)
    nearest = transforms.InterpolationMode.NEAREST
    return transforms.Compose(
        [
            transforms.Resize(resized, interpolation=nearest),
            transforms.CenterCrop(config.image_size),
            transforms.PILToTensor(),
        ]
    )


def _eval_masks(samples: list[tuple[str, int]], config: DatasetConfig) -> np.ndarray:
    """(N, 1, H, W) bool masks for the eval images from `config.masks`, which mirrors the eval split's tree. Per image,
    the first that exists of: `<class>/<stem>.png` (nonzero = object), `<class>/<stem>.xml` or `<stem>.xml` (Pascal VOC
    / ImageNet bounding boxes, the union of every object's box)."""
    from PIL import Image

    folder = Path(config.masks or "").expanduser()
    if not folder.is_dir():
        raise XbenchInputError(f"{folder} is not a folder", field="dataset.masks")
    transform = mask_transform(config)
    masks = np.empty((len(samples), 1, config.image_size, config.image_size), dtype=bool)
    for row, (path, _) in enumerate(samples):
        image_path = Path(path)
        candidates = [folder / image_path.parent.name / f"{image_path.stem}{suffix}" for suffix in (".png", ".xml")]
        candidates.append(folder / f"{image_path.stem}.xml")
        mask_path = next((candidate for candidate in candidates if candidate.exists()), None)
        if mask_path is None:
            raise XbenchInputError(
                f"no mask for eval image {path}: looked for {', '.join(str(c) for c in candidates)} (masks mirror the "
                "eval split: <class>/<image stem>.png, or bounding-box XML as <class>/<stem>.xml or <stem>.xml)",
                field="dataset.masks",
            )
        if mask_path.suffix == ".xml":
            with Image.open(image_path) as picture:
                mask = box_mask(mask_path, picture.size)
        else:
            with Image.open(mask_path) as picture:
                mask = picture.convert("L")
        masks[row] = transform(mask).numpy() > 0
    return masks


def box_mask(xml_path: Path, image_size: tuple[int, int]) -> Any:
    """A PIL mask (mode "L", 255 inside any object's box) of the image's size from a Pascal VOC / ImageNet annotation:
    `<object><bndbox><xmin/><ymin/><xmax/><ymax/></bndbox></object>`, pixel coordinates, inclusive (VOC counts from 1;
    a one-pixel shift is below what a 224 px localisation score resolves)."""
    import xml.etree.ElementTree as ElementTree

    from PIL import Image, ImageDraw

    try:
        root = ElementTree.parse(xml_path).getroot()
        boxes = [
            tuple(float(box.findtext(name) or "nan") for name in ("xmin", "ymin", "xmax", "ymax"))
            for box in root.iter("bndbox")
        ]
    except (ElementTree.ParseError, ValueError) as exc:
        raise XbenchInputError(f"cannot read bounding boxes from {xml_path}: {exc}", field="dataset.masks") from exc
    if not boxes or any(np.isnan(value) for box in boxes for value in box):
        raise XbenchInputError(f"{xml_path} has no complete <bndbox> (xmin, ymin, xmax, ymax)", field="dataset.masks")
    # the annotation's <size> can differ from the file (a resized copy such as Imagenette 320): scale to the file
    width, height = image_size
    size = root.find("size")
    scale_x = scale_y = 1.0
    if size is not None and size.findtext("width") and size.findtext("height"):
        scale_x = width / float(size.findtext("width") or width)
        scale_y = height / float(size.findtext("height") or height)
    mask = Image.new("L", image_size, 0)
    draw = ImageDraw.Draw(mask)
    for xmin, ymin, xmax, ymax in boxes:
        draw.rectangle([xmin * scale_x, ymin * scale_y, xmax * scale_x, ymax * scale_y], fill=255)
    return mask


def sample_split(
    train_count: int, eval_count: int, config: DatasetConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The seed's draw from a data set's splits: `train_size` training indices, `eval_size` eval indices and, when
    `validation_size` is set, that many further eval-split indices for early stopping (disjoint from the eval ones)."""
    rng = np.random.default_rng(seed)
    train_indices = rng.permutation(train_count)[: config.train_size]
    eval_order = np.random.default_rng([seed, 1]).permutation(eval_count)
    held_out = None
    if config.validation_size is not None:
        # the seed's split of the official validation set: test images and early-stopping images, disjoint
        if config.eval_size + config.validation_size > eval_count:
            raise XbenchInputError(
                f"eval_size {config.eval_size} + validation_size {config.validation_size} is more than the eval"
                f" split's {eval_count} images",
                field="dataset.validation_size",
            )
        held_out = eval_order[config.eval_size : config.eval_size + config.validation_size]
    return train_indices, eval_order[: config.eval_size], held_out


def _from_folders(train: Any, evaluation: Any, classes: list[str], config: DatasetConfig, seed: int) -> ImageData:
    """Training images streamed, eval images in memory, both through timm's transforms of `config`."""
    train_transform, eval_transform = folder_transforms(config)
    train_all, eval_all = _samples(train), _samples(evaluation)
    train_indices, eval_indices, held_out = sample_split(len(train_all), len(eval_all), config, seed)
    train_samples = [(str(train_all[i][0]), int(train_all[i][1])) for i in train_indices]
    eval_samples = [(str(eval_all[i][0]), int(eval_all[i][1])) for i in eval_indices]
    validation = None
    if held_out is not None:
        validation = StreamedImages([(str(eval_all[i][0]), int(eval_all[i][1])) for i in held_out], eval_transform)
    streamed = StreamedImages(train_samples, train_transform)
    eval_images = StreamedImages(eval_samples, eval_transform)
    eval_x = torch.stack([eval_images[i][0] for i in range(len(eval_images))])
    masks = _eval_masks(eval_samples, config) if config.masks else None
    preprocessing = config.preprocessing or Preprocessing()
    return ImageData(
        train_x=torch.empty(0, 3, config.image_size, config.image_size),
        train_y=streamed.labels,
        eval_x=eval_x,
        eval_y=eval_images.labels,
        eval_masks=masks,
        class_names=tuple(classes),
        mean=preprocessing.mean,
        std=preprocessing.std,
        fingerprint=fingerprint(config, seed, FOLDER_VERSION),
        train_stream=streamed,
        train_plain=streamed.with_transform(eval_transform),
        validation=validation,
        loader_workers=DEFAULT_LOADER_WORKERS if config.loader_workers is None else config.loader_workers,
    )


def _samples(folder: Any) -> list[tuple[str, int]]:
    """(path, label) of a torchvision folder dataset (ImageFolder's `samples`, Imagenette's `_samples`)."""
    return list(folder.samples if hasattr(folder, "samples") else folder._samples)


def _require_path(config: DatasetConfig) -> Path:
    if config.path is None:
        raise XbenchInputError(f"dataset {config.name!r} needs a folder", field="dataset.path")
    return Path(config.path).expanduser()


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


IMAGENETTE_VARIANTS = {
    "full": ("full", "imagenette2"),
    "320": ("320px", "imagenette2-320"),
    "160": ("160px", "imagenette2-160"),
}


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
