"""Datasets: the embedded procedural `shapes` set (with ground-truth object masks), ImageFolder and Imagenette."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xbench.errors import XbenchInputError
from xbench.registry import Registry
from xbench.suite import DatasetConfig


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

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @classmethod
    def from_arrays(
        cls, train: tuple[np.ndarray, np.ndarray], evaluation: tuple[np.ndarray, np.ndarray],
        eval_masks: np.ndarray | None, class_names: tuple[str, ...], mean: tuple[float, float, float],
        std: tuple[float, float, float], fingerprint: str,
    ) -> ImageData:  # fmt: skip
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


DatasetLoader = Callable[[DatasetConfig, int], ImageData]


@dataclass(frozen=True)
class Dataset:
    name: str
    load: DatasetLoader
    has_masks: bool
    description: str


datasets: Registry[Dataset] = Registry("dataset")


def dataset(name: str, has_masks: bool) -> Callable[[DatasetLoader], DatasetLoader]:
    def decorator(load: DatasetLoader) -> DatasetLoader:
        doc = (load.__doc__ or "").strip().splitlines()
        datasets.register(name)(Dataset(name, load, has_masks, doc[0] if doc else ""))
        return load

    return decorator


def load_dataset(config: DatasetConfig, seed: int) -> ImageData:
    return datasets.get(config.name).load(config, seed)


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
def shapes(config: DatasetConfig, seed: int) -> ImageData:
    """Coloured shapes and textures on cluttered gradients, 8 classes, with exact object masks."""
    train_images, train_labels, _ = render_shapes(
        config.train_size, config.image_size, np.random.default_rng([seed, 0])
    )
    eval_images, eval_labels, eval_masks = render_shapes(
        config.eval_size, config.image_size, np.random.default_rng([seed, 1])
    )
    return ImageData.from_arrays(
        (train_images, train_labels), (eval_images, eval_labels), eval_masks, SHAPE_CLASSES, _SHAPES_MEAN,
        _SHAPES_STD, fingerprint(config, seed, SHAPES_VERSION),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Real images: any ImageFolder tree, and Imagenette (downloaded with torchvision's checksums).

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _folder_split(
    dataset: object, limit: int, image_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.transforms import functional as tf

    indices = rng.permutation(len(dataset))[:limit]  # type: ignore[arg-type]
    images = np.empty((len(indices), 3, image_size, image_size), dtype=np.float32)
    labels = np.empty(len(indices), dtype=np.int64)
    for row, index in enumerate(indices):
        image, label = dataset[int(index)]  # type: ignore[index]
        image = tf.center_crop(tf.resize(image.convert("RGB"), image_size), [image_size, image_size])
        images[row] = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        labels[row] = label
    return images, labels


def _from_folders(train: object, evaluation: object, classes: list[str], config: DatasetConfig, seed: int) -> ImageData:
    rng = np.random.default_rng(seed)
    train_split = _folder_split(train, config.train_size, config.image_size, rng)
    eval_split = _folder_split(evaluation, config.eval_size, config.image_size, np.random.default_rng([seed, 1]))
    return ImageData.from_arrays(
        train_split, eval_split, None, tuple(classes), IMAGENET_MEAN, IMAGENET_STD,
        fingerprint(config, seed, "folder-1"),
    )  # fmt: skip


def _require_path(config: DatasetConfig) -> Path:
    if config.path is None:
        raise XbenchInputError(f"dataset {config.name!r} needs a folder", field="dataset.path")
    return Path(config.path).expanduser()


@dataset("imagefolder", has_masks=False)
def imagefolder(config: DatasetConfig, seed: int) -> ImageData:
    """`path/train/<class>/*.jpg` and `path/val/<class>/*.jpg` (torchvision ImageFolder layout); no masks."""
    from torchvision.datasets import ImageFolder

    root = _require_path(config)
    splits = {split: root / split for split in ("train", "val")}
    for split, folder in splits.items():
        if not folder.is_dir():
            raise XbenchInputError(f"{folder} does not exist (expected {root}/{split}/<class>/*)", field="dataset.path")
    train, evaluation = ImageFolder(str(splits["train"])), ImageFolder(str(splits["val"]))
    return _from_folders(train, evaluation, train.classes, config, seed)


@dataset("imagenette", has_masks=False)
def imagenette(config: DatasetConfig, seed: int) -> ImageData:
    """Imagenette (160 px), downloaded into `path` with torchvision's checksums unless already there."""
    from torchvision.datasets import Imagenette

    root = _require_path(config)
    already_there = (root / "imagenette2-160").is_dir()
    train = Imagenette(str(root), split="train", size="160px", download=not already_there)
    evaluation = Imagenette(str(root), split="val", size="160px", download=False)
    classes = [names[0] for names in train.classes]
    return _from_folders(train, evaluation, classes, config, seed)
