"""`dataset: {name: torchvision, options: {class: ...}}` on real files: Debian's Fashion-MNIST package, and files
written here in torchvision's layouts for CIFAR-10, Oxford-IIIT Pet and VOC 2012 (no network anywhere)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.services import fashion_mnist_dir
from xbench.components.datasets import datasets, load_dataset
from xbench.components.datasets.torchvision_sets import VOC_CLASSES
from xbench.core.errors import XbenchInputError
from xbench.core.suite import DatasetConfig, Preprocessing, Suite
from xbench.plan.planner import validate

# identity preprocessing: no crop, no normalisation, so pixels can be compared with what was written
PLAIN = Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=1.0, interpolation="bilinear")


def _config(root: Path, class_name: str, image_size: int = 32, **fields: object) -> DatasetConfig:
    return DatasetConfig(
        name="torchvision",
        path=str(root),
        image_size=image_size,
        preprocessing=PLAIN,
        options={"class": class_name},
        **fields,  # type: ignore[arg-type]
    )


def _idx_labels(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as file:
        return np.frombuffer(file.read()[8:], dtype=np.uint8)  # idx1: magic, count, then one byte per label


def test_fashion_mnist_from_debians_package(tmp_path: Path) -> None:
    folder = fashion_mnist_dir()
    if folder is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed and this user cannot apt-get it")
    # the real set (Debian recompressed the archives, so their MD5s are not torchvision's): 60,000 + 10,000 labels
    train_labels, eval_labels = (
        _idx_labels(folder / f) for f in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    )
    assert (len(train_labels), len(eval_labels)) == (60_000, 10_000)
    assert np.bincount(eval_labels).tolist() == [1000] * 10

    config = _config(folder, "FashionMNIST", train_size=200, eval_size=50)
    data = load_dataset(config, seed=3, cache_root=tmp_path)
    assert data.class_names[:2] == ("T-shirt/top", "Trouser") and data.num_classes == 10
    assert data.train_x.shape == (200, 3, 32, 32) and data.eval_x.shape == (50, 3, 32, 32)
    # grey lifted to three equal channels
    assert np.array_equal(data.eval_x[:, 0].numpy(), data.eval_x[:, 2].numpy())
    assert data.eval_masks is None
    # labels are those of the files: the seed's draw reproduces them from an independent read of the idx file
    from xbench.components.data import sample_split

    train_labels, eval_labels = (
        _idx_labels(folder / f) for f in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    )
    train_idx, eval_idx, _ = sample_split(len(train_labels), len(eval_labels), config, seed=3)
    assert data.train_y.tolist() == train_labels[train_idx].tolist()
    assert data.eval_y.tolist() == eval_labels[eval_idx].tolist()
    # unpacked once under the cache, then reused
    assert len(list((tmp_path / "datasets").glob("fashion-mnist-*/FashionMNIST/raw/*-ubyte"))) == 4
    again = load_dataset(config, seed=3, cache_root=tmp_path)
    assert np.array_equal(again.eval_x.numpy(), data.eval_x.numpy())


def _write_cifar(root: Path, per_batch: int = 10) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for batch, name in enumerate(names):
        labels = [(batch + i) % 10 for i in range(per_batch)]
        # each image one colour: red = 20 x label, green = its batch, blue = its position
        pixels = np.zeros((per_batch, 3, 32, 32), dtype=np.uint8)
        for i, label in enumerate(labels):
            pixels[i, 0], pixels[i, 1], pixels[i, 2] = 20 * label, batch, i
        with open(folder / name, "wb") as file:
            pickle.dump({"data": pixels.reshape(per_batch, -1), "labels": labels}, file)
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, file)


def test_cifar10_in_torchvisions_layout(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    data = load_dataset(_config(tmp_path, "CIFAR10", train_size=50, eval_size=10), seed=0, cache_root=tmp_path)
    assert data.class_names == tuple(f"class{i}" for i in range(10))
    assert data.train_x.shape == (50, 3, 32, 32) and data.eval_x.shape == (10, 3, 32, 32)
    # every image's red channel still says its label; the eval images all come from test_batch (green = 5)
    for x, y in ((data.train_x, data.train_y), (data.eval_x, data.eval_y)):
        assert np.allclose(x[:, 0, 16, 16].numpy() * 255, 20 * y.numpy(), atol=0.5)
    assert np.allclose(data.eval_x[:, 1].numpy() * 255, 5, atol=0.5)
    assert sorted(data.eval_y.tolist()) == sorted((5 + i) % 10 for i in range(10))


def _write_pet(root: Path, size: int = 32) -> dict[str, np.ndarray]:
    """Two breeds, three images each per split; trimaps with a pet square, its border ring and background."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    expected = {}
    for split, offset in (("trainval", 0), ("test", 3)):
        lines = []
        for label, breed in enumerate(("Abyssinian", "basset_hound")):
            for n in range(3):
                image_id = f"{breed}_{offset + n + 1}"
                lines.append(f"{image_id} {label + 1} {label + 1} 1")
                Image.fromarray(np.full((size, size, 3), 60 + 100 * label, np.uint8)).save(
                    base / "images" / f"{image_id}.jpg"
                )
                trimap = np.full((size, size), 2, np.uint8)
                start = 4 + 2 * n
                trimap[start - 1 : start + 13, start - 1 : start + 13] = 3
                trimap[start : start + 12, start : start + 12] = 1
                Image.fromarray(trimap).save(base / "annotations" / "trimaps" / f"{image_id}.png")
                expected[image_id] = trimap != 2
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return expected


def test_oxford_pet_trimaps_become_masks(tmp_path: Path) -> None:
    expected = _write_pet(tmp_path)
    data = load_dataset(_config(tmp_path, "OxfordIIITPet", train_size=6, eval_size=6), seed=0, cache_root=tmp_path)
    assert data.class_names == ("Abyssinian", "Basset Hound")
    assert data.train_count == 6 and data.train_stream is not None
    assert data.eval_masks is not None and data.eval_masks.shape == (6, 1, 32, 32)
    test_masks = [expected[f"{breed}_{4 + n}"] for breed in ("Abyssinian", "basset_hound") for n in range(3)]
    for mask in data.eval_masks[:, 0]:  # each eval mask is one of the test images' pet + border, in the seed's order
        assert any(np.array_equal(mask, candidate) for candidate in test_masks)
    assert len({mask.tobytes() for mask in data.eval_masks}) == 3  # three trimap layouts per breed
    # the image's grey level says its breed
    assert np.allclose(data.eval_x[:, 0, 0, 0].numpy() * 255, 60 + 100 * data.eval_y.numpy(), atol=3)


def _write_voc(root: Path, size: int = 32) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    palette = [value for index in range(256) for value in (index, index, index)]
    for split, ids in (("train", ["2007_000001", "2007_000002"]), ("val", ["2007_000003", "2007_000004"])):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for n, image_id in enumerate(ids):
            Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
            labels = np.zeros((size, size), np.uint8)
            labels[2:20, 2:20] = 15 if n == 0 else 8  # the larger object: person (15), else cat (8)
            labels[22:28, 22:28] = 8 if n == 0 else 15
            labels[1, :] = 255  # void pixels are not the object
            mask = Image.fromarray(labels, mode="P")
            mask.putpalette(palette)
            mask.save(voc / "SegmentationClass" / f"{image_id}.png")


def test_voc_segmentations_are_masks_and_the_largest_object_is_the_label(tmp_path: Path) -> None:
    _write_voc(tmp_path)
    data = load_dataset(_config(tmp_path, "VOCSegmentation", train_size=2, eval_size=2), seed=0, cache_root=tmp_path)
    assert data.class_names == VOC_CLASSES and data.num_classes == 20
    assert (
        sorted(data.train_y.tolist())
        == sorted(data.eval_y.tolist())
        == [VOC_CLASSES.index("cat"), VOC_CLASSES.index("person")]
    )
    assert data.eval_masks is not None
    expected = np.zeros((32, 32), bool)
    expected[2:20, 2:20] = expected[22:28, 22:28] = True
    for mask in data.eval_masks[:, 0]:
        assert np.array_equal(mask, expected)


def test_masks_depend_on_the_class_at_plan_time(tmp_path: Path) -> None:
    base = {
        "name": "t",
        "models": [{"name": "test_resnet"}],
        "pruning": [{"method": "magnitude", "compression_rates": [2]}],
        "explainers": ["saliency"],
        "metrics": ["attribution_localisation"],
    }
    dataset = {"name": "torchvision", "path": str(tmp_path), "image_size": 32}
    validate(Suite.model_validate({**base, "dataset": {**dataset, "options": {"class": "OxfordIIITPet"}}}))
    with pytest.raises(XbenchInputError, match="needs ground-truth masks"):
        validate(Suite.model_validate({**base, "dataset": {**dataset, "options": {"class": "CIFAR10"}}}))
    with pytest.raises(XbenchInputError, match=r"dataset\.options\.class.*FashionMNIST.*VOCSegmentation"):
        validate(Suite.model_validate({**base, "dataset": {**dataset, "options": {"class": "MNIST"}}}))
    assert datasets.get("torchvision").options is not None


def test_missing_files_name_the_folder_and_the_download_option(tmp_path: Path) -> None:
    for class_name in ("FashionMNIST", "CIFAR10", "OxfordIIITPet", "VOCSegmentation"):
        with pytest.raises(XbenchInputError, match=r"dataset\.options\.download: true") as error:
            load_dataset(_config(tmp_path, class_name), seed=0, cache_root=tmp_path)
        assert error.value.field == "dataset.path" and str(tmp_path) in str(error.value)
    with pytest.raises(XbenchInputError, match="needs the folder"):
        load_dataset(DatasetConfig(name="torchvision", options={"class": "CIFAR10"}), seed=0, cache_root=tmp_path)


def test_imagenette_by_class_reads_the_imagenette_tree(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for wnid in ("n01440764", "n03888257"):
            folder = tmp_path / "imagenette2-160" / split / wnid
            folder.mkdir(parents=True)
            for n in range(2):
                Image.fromarray(np.full((40, 40, 3), 30 * n, np.uint8)).save(folder / f"{wnid}_{n}.JPEG")
    data = load_dataset(_config(tmp_path, "Imagenette", train_size=4, eval_size=4), seed=0, cache_root=tmp_path)
    assert data.class_names == ("tench", "parachute") and data.eval_x.shape == (4, 3, 32, 32)
