"""The data sets, one module per family (`synthetic`: shapes; `folders`: image folders and Imagenette;
`torchvision_sets`: torchvision's by class name); the plug-in record, registry and `load_dataset` are in `_base`,
`ImageData` and the machinery the loaders share in `xbench.components.data`. The registry imports the built-in modules
the first time it is read."""

from xbench.components.data import ImageData
from xbench.components.datasets._base import Dataset, dataset, datasets, load_dataset

__all__ = ["Dataset", "ImageData", "dataset", "datasets", "load_dataset"]
