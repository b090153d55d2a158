"""Explainability metrics: Quantus 0.6 classes under their snake_case names, one score per image."""

from __future__ import annotations

import functools
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import quantus
import torch
from quantus.helpers.enums import ScoreDirection
from torch import nn

from xbench.core.errors import XbenchInputError
from xbench.core.registry import Registry
from xbench.measure.quantus_numpy import QuantusNumpy, quantus_numpy

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


metrics: Registry[Metric] = Registry("metric")


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
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register a metric only the torch engine computes, in one place: `fn(context, x, y, a, **params)` returns one
    score per image (a tensor); its keyword-only arguments are its parameters, `defaults(image_size)` their defaults
    for a suite, and the metric declares its direction, category and whether it ranks features (then it takes the
    `ties` policy) here. No Quantus twin is needed; the suite's `engine:` does not matter for it.

        @torch_metric("mean_absolute_attribution", higher_is_better=False, category="complexity")
        def mean_absolute_attribution(context, x, y, a):
            return a.abs().flatten(1).mean(dim=1)
    """
    from xbench.measure.engine import engine_metric

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        engine_metric(name, version)(fn)
        metric = Metric(
            name,
            None,
            defaults or (lambda image_size: {}),
            needs_masks,
            version,
            declared_higher_is_better=higher_is_better,
            declared_category=category,
            declared_ranks_features=ranks_features,
        )
        metrics.register(name)(metric)
        return fn

    return decorator


def _steps_dividing(image_size: int, steps: int) -> int:
    """Features per step so that about `steps` steps cover the image (Quantus needs it to divide H*W)."""
    pixels = image_size * image_size
    per_step = max(1, pixels // steps)
    while pixels % per_step:
        per_step -= 1
    return per_step


@quantus_metric(quantus.FaithfulnessCorrelation)
def _faithfulness_correlation(image_size: int) -> dict[str, Any]:
    # Quantus's subset_size of 224 pixels must stay below H*W; cap it at a quarter of small images.
    return {"nr_runs": 100, "subset_size": min(224, image_size * image_size // 4)}


@quantus_metric(quantus.PixelFlipping)
def _pixel_flipping(image_size: int) -> dict[str, Any]:
    # Quantus's features_in_step=1 means H*W forward passes per image; 32 steps keep the curve's shape for a fraction.
    return {"features_in_step": _steps_dividing(image_size, 32), "return_auc_per_sample": True}


# Quantus's features_in_step=1 (one forward pass per pixel) and its 8-pixel patches were set for 224 px images;
# xbench scales them to the image: 32 steps over the image, patches of 1/8 of its side.


@quantus_metric(quantus.FaithfulnessEstimate)
def _faithfulness_estimate(image_size: int) -> dict[str, Any]:
    return {"features_in_step": _steps_dividing(image_size, 32)}


@quantus_metric(quantus.RegionPerturbation)
def _region_perturbation(image_size: int) -> dict[str, Any]:
    patch = max(2, image_size // 8)
    return {"patch_size": patch, "regions_evaluation": min(100, (image_size // patch) ** 2)}


@quantus_metric(quantus.MonotonicityCorrelation)
def _monotonicity_correlation(image_size: int) -> dict[str, Any]:
    return {"features_in_step": _steps_dividing(image_size, 32)}


@quantus_metric(quantus.Selectivity)
def _selectivity(image_size: int) -> dict[str, Any]:
    return {"patch_size": max(2, image_size // 8)}


@quantus_metric(quantus.SensitivityN, batch_level=True)
def _sensitivity_n(image_size: int) -> dict[str, Any]:
    # One correlation per perturbation size, across the images of the batch: a batch-level curve, averaged.
    return {"features_in_step": _steps_dividing(image_size, 32)}


@quantus_metric(quantus.ROAD)
def _road(image_size: int) -> dict[str, Any]:
    # Quantus's 50 percentages (1, 3, ..., 99) cost 50 imputations and passes per image; 10 keep the curve's shape.
    return {"percentages": list(range(5, 100, 10))}


@quantus_metric(quantus.TopKIntersection, needs_masks=True)
def _top_k_intersection(image_size: int) -> dict[str, Any]:
    # Quantus's k=1000 pixels is 2 % of a 224 px image but all of a 32 px one: keep it under a quarter.
    return {"k": min(1000, image_size * image_size // 4)}


@quantus_metric(quantus.MPRT, needs_explain_func=True)
def _mprt(image_size: int) -> dict[str, Any]:
    # One score per image: the correlation averaged over the randomised layers.
    return {"return_average_correlation": True}


def _quantus_defaults(image_size: int) -> dict[str, Any]:
    """Quantus's own defaults, which fit any image size."""
    return {}


# Metrics whose Quantus defaults need no change; the flags say what each needs. The robustness metrics re-explain
# each image nr_samples times (Quantus's default: 200), the randomisation ones once per randomised layer or label.
_OTHER_QUANTUS: list[tuple[QuantusClass, dict[str, Any]]] = [
    (quantus.Sparseness, {}),
    (quantus.Complexity, {}),
    (quantus.AttributionLocalisation, {"needs_masks": True}),
    (quantus.Sufficiency, {}),
    (quantus.IROF, {}),
    (quantus.Infidelity, {}),
    (quantus.EffectiveComplexity, {}),
    (quantus.MaxSensitivity, {"needs_explain_func": True}),
    (quantus.AvgSensitivity, {"needs_explain_func": True}),
    (quantus.LocalLipschitzEstimate, {"needs_explain_func": True}),
    (quantus.PointingGame, {"needs_masks": True}),
    (quantus.RelevanceRankAccuracy, {"needs_masks": True}),
    (quantus.RelevanceMassAccuracy, {"needs_masks": True}),
    (quantus.AUC, {"needs_masks": True}),
    (quantus.EfficientMPRT, {"needs_explain_func": True}),
    (quantus.RandomLogit, {"needs_explain_func": True, "needs_num_classes": True}),
]
for _quantus_class, _needs in _OTHER_QUANTUS:
    quantus_metric(_quantus_class, **_needs)(_quantus_defaults)


ENGINES = ("torch", "quantus")


@dataclass
class Scored:
    """Per-image scores, the engine that computed them and the model passes they took (all images together)."""

    scores: np.ndarray
    engine: str
    forward_passes: int = 0
    backward_passes: int = 0


class ROADPerImage(quantus.ROAD):
    """ROAD whose result stays per image (Quantus's post-processing averages over the images)."""

    def custom_postprocess(self, **kwargs: Any) -> None:
        self.evaluation_scores: Any = np.asarray(self.evaluation_scores[0])


def quantus_class_for(metric: Metric) -> QuantusClass:
    """The Quantus class that gives `metric` one result per image."""
    if metric.quantus_class is None:
        raise ValueError(f"{metric.name} has no Quantus implementation (the torch engine computes it)")
    return ROADPerImage if metric.quantus_class is quantus.ROAD else metric.quantus_class


def random_ties(metric: Metric, params: dict[str, Any], engine: str) -> bool:
    """Whether the metric orders features and breaks their ties at random here (so tie draws can differ)."""
    from xbench.measure.engine import engine_metrics

    if engine_for(metric, engine) == "torch":
        ordering = "ties" in engine_metrics.get(metric.name).parameters()
    else:
        ordering = metric.orders_features
    return ordering and params.get("ties", "random") == "random"


def engine_for(metric: Metric, requested: str) -> str:
    """The engine that scores `metric`: the torch engine where it implements the metric, else Quantus."""
    from xbench.measure.engine import engine_metrics

    if metric.quantus_class is None:  # a torch-only metric: the engine is the only implementation
        return "torch"
    return "torch" if requested == "torch" and metric.name in engine_metrics else "quantus"


def score(
    metric: Metric,
    params: dict[str, Any],
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    attributions: np.ndarray,
    masks: np.ndarray | None,
    device: torch.device,
    seed: int,
    explain_func: Callable[..., np.ndarray] | None = None,
    engine: str = "torch",
    explain_tensor_func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    tie_draw: int = 0,
) -> Scored:
    """One score per image; NaN for an image whose attribution is constant (no feature order to test).

    `engine`: "torch" runs the metrics the torch engine implements on `device` (`explain_tensor_func` re-explains);
    the others, and every metric with "quantus", go through Quantus (`explain_func`). A batch-level metric gives
    its one value to every image. `tie_draw` picks the random tie order of the torch engine's ordering metrics.
    """
    if engine not in ENGINES:
        raise XbenchInputError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}", field="engine")
    if metric.needs_masks and masks is None:
        raise XbenchInputError(f"metric {metric.name!r} needs ground-truth masks; this dataset has none")
    if metric.needs_explain_func and explain_func is None:
        raise ValueError(f"metric {metric.name!r} explains again and needs an explain_func")
    if metric.needs_num_classes and "num_classes" not in params:
        with torch.no_grad():
            params = {**params, "num_classes": int(model.to(device)(torch.as_tensor(x[:1], device=device)).shape[1])}
    chosen = engine_for(metric, engine)
    flat = attributions.reshape(len(attributions), -1)
    scorable = flat.max(axis=1) > flat.min(axis=1)
    result = Scored(np.full(len(x), np.nan), chosen)
    if not scorable.any():
        return result
    model.to(device).eval()
    from xbench.measure.engine import EngineContext, PassCounter, run_metric

    if chosen == "torch":
        context = EngineContext(model, device, batch_size, seed, explain=explain_tensor_func, tie_draw=tie_draw)
        raw = run_metric(metric.name, params, context, x[scorable], y[scorable], attributions[scorable])
        counter = context.counter
    else:
        with PassCounter(model) as counter:
            raw = _quantus_scores(
                metric,
                params,
                model,
                x[scorable],
                y[scorable],
                attributions[scorable],
                None if masks is None else masks[scorable],
                device,
                seed,
                explain_func,
                tie_draw,
            )
    result.forward_passes, result.backward_passes = counter.forward, counter.backward
    raw = np.asarray(raw, dtype=np.float64)
    if metric.batch_level:
        result.scores[scorable] = float(np.nanmean(raw)) if np.isfinite(raw).any() else np.nan
    else:
        result.scores[scorable] = raw.reshape(int(scorable.sum()), -1).mean(axis=1)
    return result


def _quantus_scores(
    metric: Metric,
    params: dict[str, Any],
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    attributions: np.ndarray,
    masks: np.ndarray | None,
    device: torch.device,
    seed: int,
    explain_func: Callable[..., np.ndarray] | None,
    tie_draw: int = 0,
) -> np.ndarray:
    """Quantus's per-image result; for a metric that ranks features, its argsorts break ties by the `ties` policy."""
    quantus_class = quantus_class_for(metric)
    params = dict(params)
    from xbench.measure.engine import TIE_POLICIES  # one list of policies for both engines

    ties = params.pop("ties", "random") if metric.orders_features else None
    if ties is not None and ties not in TIE_POLICIES:
        raise XbenchInputError(f"ties must be one of {', '.join(TIE_POLICIES)}, got {ties!r}", field="metrics")
    try:
        instance = quantus_class(**params, return_aggregate=False, disable_warnings=True, display_progressbar=False)
    except TypeError as exc:
        raise XbenchInputError(f"bad parameters for metric {metric.name!r}: {exc}") from None
    # Quantus's perturbations draw from a generator seeded for this call; its argsorts break ties by the policy.
    view = QuantusNumpy(seed, ties=ties, tie_draw=tie_draw)
    with warnings.catch_warnings(), quantus_numpy(view, quantus_class.evaluate_batch.__module__):
        warnings.simplefilter("ignore")
        result = instance(
            model=model,
            x_batch=x,
            y_batch=y,
            a_batch=attributions,
            s_batch=masks,
            device=str(device),
            batch_size=max(256, len(x)),
            explain_func=explain_func,
        )
    return np.asarray(result, dtype=np.float64)
