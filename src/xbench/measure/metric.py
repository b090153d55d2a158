"""The metric plug-in: what xbench knows of a metric (direction, category, defaults, whether it ranks features, its
torch engine implementation) and the one registry of them, with the two ways to add one: a Quantus class
(`quantus_metric`, which the torch engine may implement too: `engine.engine_metric` adds that to the entry) or a
function only the torch engine computes (`torch_metric`). The catalogue itself is `xbench.measure.metrics`; the
registry reads it, the metrics Quantus lacks (`confidence`, `rise`) and the engine's families in, the first time it is
read."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from quantus.helpers.enums import ScoreDirection

from xbench.core.registry import Registry

if TYPE_CHECKING:
    from xbench.measure.engine import EngineMetric, ReferenceFn

Defaults = Callable[[int], dict[str, Any]]


# A Quantus metric class (Quantus ships no types, so its classes are Any to mypy).
QuantusClass = Any


@dataclass(frozen=True)
class Metric:
    """A metric with the metadata xbench logs beside its scores: a Quantus class (which then says its direction and
    category), or a metric only the torch engine computes (`quantus_class` None), which declares them itself."""

    name: str
    quantus_class: QuantusClass | None
    defaults: Defaults
    needs_masks: bool
    version: str
    needs_explain_func: bool = False
    needs_num_classes: bool = False
    batch_level: bool = False
    declared_higher_is_better: bool | None = None
    declared_category: str | None = None
    declared_ranks_features: bool | None = None
    engine: EngineMetric | None = None  # the torch engine's implementation, when it has one

    @property
    def orders_features(self) -> bool:
        """Whether the metric ranks features by attribution (for Quantus: its module argsorts them), so ties in the
        attributions decide part of the score and the metric takes a `ties` policy."""
        if self.declared_ranks_features is not None:
            return self.declared_ranks_features
        return _argsorts(self.quantus_class)

    @property
    def per_image(self) -> bool:
        """False for metrics that give one value per batch (it is logged, but has no per-image spread)."""
        return not self.batch_level

    @property
    def higher_is_better(self) -> bool:
        if self.declared_higher_is_better is not None:
            return self.declared_higher_is_better
        assert self.quantus_class is not None, f"{self.name} declares no direction"
        return bool(self.quantus_class.score_direction == ScoreDirection.HIGHER)

    @property
    def category(self) -> str:
        if self.declared_category is not None:
            return self.declared_category
        assert self.quantus_class is not None, f"{self.name} declares no category"
        return str(self.quantus_class.evaluation_category.value).lower()

    def resolve(self, params: dict[str, Any], image_size: int) -> dict[str, Any]:
        return {**self.defaults(image_size), **params}


# Read in when first read, in this order: the catalogue of Quantus metrics, the metrics Quantus lacks, then the torch
# engine's families, whose implementations join the catalogue's entries.
metrics: Registry[Metric] = Registry(
    "metric",
    modules=(
        "xbench.measure.metrics",
        "xbench.measure.confidence",
        "xbench.measure.rise",
        "xbench.measure.faithfulness",
        "xbench.measure.robustness",
    ),
)


@functools.cache
def _argsorts(quantus_class: QuantusClass) -> bool:
    import inspect

    module: Any = sys.modules[quantus_class.evaluate_batch.__module__]
    return "np.argsort(" in inspect.getsource(module)


def snake_case(name: str) -> str:
    """FaithfulnessCorrelation -> faithfulness_correlation, EfficientMPRT -> efficient_mprt, AUC -> auc."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def quantus_metric(
    quantus_class: QuantusClass,
    needs_masks: bool = False,
    needs_explain_func: bool = False,
    needs_num_classes: bool = False,
    batch_level: bool = False,
    version: str = "1",
) -> Callable[[Defaults], Defaults]:
    """Register a Quantus class under the snake_case of its name; the function gives defaults for an image size.

    `needs_explain_func`: the metric explains again (perturbed inputs, randomised models) with the cell's explainer.
    """

    def decorator(defaults: Defaults) -> Defaults:
        name = snake_case(quantus_class.__name__)
        metric = Metric(
            name, quantus_class, defaults, needs_masks, version, needs_explain_func, needs_num_classes, batch_level
        )
        metrics.register(name)(metric)
        return defaults

    return decorator


def torch_metric(
    name: str,
    higher_is_better: bool,
    category: str,
    defaults: Defaults | None = None,
    ranks_features: bool = False,
    needs_masks: bool = False,
    version: str = "1",
    reference: ReferenceFn | None = None,
    reference_name: str = "",
    verify_params: Defaults | None = None,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register a metric only the torch engine computes, in one place: `fn(context, x, y, a, **params)` returns one
    score per image (a tensor); its keyword-only arguments are its parameters, `defaults(image_size)` their defaults
    for a suite, and the metric declares its direction, category and whether it ranks features (then it takes the
    `ties` policy) here. No Quantus twin is needed; the suite's `engine:` does not matter for it. `reference` is an
    independent implementation (`reference_name` says which) that `xbench verify-metrics` compares it with, on
    `verify_params` over the defaults.

        @torch_metric("mean_absolute_attribution", higher_is_better=False, category="complexity")
        def mean_absolute_attribution(context, x, y, a):
            return a.abs().flatten(1).mean(dim=1)
    """
    from xbench.measure.engine import EngineMetric  # the engine imports this module's registry

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        implementation = EngineMetric(
            name, fn, version, reference=reference, reference_name=reference_name, verify_params=verify_params
        )
        metric = Metric(
            name,
            None,
            defaults or (lambda image_size: {}),
            needs_masks,
            version,
            declared_higher_is_better=higher_is_better,
            declared_category=category,
            declared_ranks_features=ranks_features,
            engine=implementation,
        )
        metrics.register(name)(metric)
        return fn

    return decorator
