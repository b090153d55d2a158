"""What the data sets share: `ImageData`, the procedural `shapes` images (with object masks) and the image-folder
machinery (streamed files, timm transforms, masks, splits). The data sets themselves are in `components/datasets/`."""

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

from xbench.core.errors import XbenchInputError
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


def fingerprint(config: DatasetConfig, seed: int, version: str) -> str:
    """What the images depend on; not `explain_size` (the explained subset has its own digest), so suites that explain
    more or fewer images share trained and pruned models."""
    settings = {k: v for k, v in config.model_dump().items() if k != "explain_size"}
    return hashlib.sha256(
        json.dumps({"config": settings, "seed": seed, "version": version}, sort_keys=True).encode()
    ).hexdigest()[:16]


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


IMAGENETTE_VARIANTS = {
    "full": ("full", "imagenette2"),
    "320": ("320px", "imagenette2-320"),
    "160": ("160px", "imagenette2-160"),
}
