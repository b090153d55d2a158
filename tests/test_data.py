from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xbench.components.data import SHAPE_CLASSES, render_shapes
from xbench.components.datasets import load_dataset
from xbench.core.errors import XbenchInputError
from xbench.core.suite import DatasetConfig


def test_shapes_is_deterministic_from_the_seed() -> None:
    a = render_shapes(16, 32, np.random.default_rng([3, 0]))
    b = render_shapes(16, 32, np.random.default_rng([3, 0]))
    c = render_shapes(16, 32, np.random.default_rng([4, 0]))
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)
    assert not np.array_equal(a[0], c[0])


def test_shapes_has_balanced_classes_and_a_mask_under_each_object() -> None:
    images, labels, masks = render_shapes(80, 48, np.random.default_rng(0))
    assert images.shape == (80, 3, 48, 48) and masks.shape == (80, 1, 48, 48)
    assert images.min() >= 0 and images.max() <= 1
    assert np.bincount(labels, minlength=len(SHAPE_CLASSES)).tolist() == [10] * len(SHAPE_CLASSES)
    coverage = masks.reshape(80, -1).mean(axis=1)
    assert (coverage > 0.02).all() and (coverage < 0.6).all()
    # The object is brighter than the muted background it sits on.
    inside = (images * masks).sum(axis=(1, 2, 3)) / (3 * masks.sum(axis=(1, 2, 3)))
    outside = (images * ~masks).sum(axis=(1, 2, 3)) / (3 * (~masks).sum(axis=(1, 2, 3)))
    assert (inside > outside).mean() > 0.9


def test_shapes_dataset_splits_differ_and_carry_masks() -> None:
    data = load_dataset(DatasetConfig(image_size=32, train_size=32, eval_size=8), seed=0)
    assert data.train_x.shape == (32, 3, 32, 32) and data.eval_x.shape == (8, 3, 32, 32)
    assert data.eval_masks is not None and data.eval_masks.shape == (8, 1, 32, 32)
    assert data.num_classes == len(SHAPE_CLASSES)
    assert not torch.equal(data.train_x[:8], data.eval_x)


def _write_images(folder: Path, classes: list[str], per_class: int, suffix: str = ".png") -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 255, size=(40, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{index}{suffix}")


def test_imagefolder_loads_a_local_tree(tmp_path: Path) -> None:
    for split in ("train", "val"):
        _write_images(tmp_path / split, ["cat", "dog"], 3)
    data = load_dataset(
        DatasetConfig(name="imagefolder", path=str(tmp_path), image_size=24, train_size=4, eval_size=10), seed=0
    )
    assert data.class_names == ("cat", "dog")
    # training images stream from their files; the eval images are in memory
    assert data.train_count == 4 and data.train_examples(slice(0, 4))[0].shape == (4, 3, 24, 24)
    assert data.eval_x.shape == (6, 3, 24, 24)
    assert data.eval_masks is None


def test_imagefolder_without_split_folders_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(XbenchInputError, match=r"dataset\.path"):
        load_dataset(DatasetConfig(name="imagefolder", path=str(tmp_path)), seed=0)


@pytest.mark.parametrize(
    ("variant", "folder"), [(None, "imagenette2-160"), ("320", "imagenette2-320"), ("full", "imagenette2")]
)
def test_imagenette_reads_an_already_downloaded_tree_without_network(
    tmp_path: Path, variant: str | None, folder: str
) -> None:
    root = tmp_path / folder
    for split in ("train", "val"):
        _write_images(root / split, ["n01440764", "n03888257"], 2, suffix=".JPEG")
    data = load_dataset(
        DatasetConfig(name="imagenette", path=str(tmp_path), image_size=32, train_size=4, eval_size=4, variant=variant),
        seed=0,
    )
    assert data.class_names == ("tench", "parachute")
    assert data.train_count == 4 and data.train_examples(slice(0, 2))[0].shape == (2, 3, 32, 32)
