"""The data sets: the registry, `shapes`, `shapes_files`, `imagefolder` and `imagenette` (`data.py`) and torchvision's
by class name (`torchvision_data.py`). Import `datasets` from here to see them all."""

from __future__ import annotations

from xbench.components import torchvision_data  # noqa: F401  (its data set registers on import)
from xbench.components.data import Dataset, ImageData, dataset, datasets, load_dataset

__all__ = ["Dataset", "ImageData", "dataset", "datasets", "load_dataset"]
