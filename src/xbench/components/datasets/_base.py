"""The data sets' plug-in: the `Dataset` record, its registry and decorator, and `load_dataset`. A new data set is one
module (here, or a plug-in named in a suite's `plugins:`) with a loader registered by `@dataset(name, ...)`; the
registry imports the built-in modules (`BUILT_IN`) the first time it is read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from xbench.components.data import ImageData
from xbench.core.errors import XbenchInputError
from xbench.core.registry import Registry
from xbench.core.suite import DatasetConfig

BUILT_IN = (
    "xbench.components.datasets.synthetic",
    "xbench.components.datasets.folders",
    "xbench.components.datasets.torchvision_sets",
)

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


datasets: Registry[Dataset] = Registry("dataset", modules=BUILT_IN)


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
