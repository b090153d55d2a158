"""The metric catalogue and scoring: Quantus 0.6 classes under their snake_case names (the metrics Quantus lacks
register from their own modules, `confidence` and `rise`, which the registry reads in), and `score`, one score per
image on either engine."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import quantus
import torch
from torch import nn

from xbench.core.errors import XbenchInputError
from xbench.measure.metric import Defaults, Metric, QuantusClass, metrics, quantus_metric, snake_case, torch_metric
from xbench.measure.quantus_numpy import QuantusNumpy, quantus_numpy

__all__ = ["Defaults", "Metric", "QuantusClass", "metrics", "quantus_metric", "snake_case", "torch_metric"]


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
    if engine_for(metric, engine) == "torch" and metric.engine is not None:
        ordering = "ties" in metric.engine.parameters()
    else:
        ordering = metric.orders_features
    return ordering and params.get("ties", "random") == "random"


def engine_for(metric: Metric, requested: str) -> str:
    """The engine that scores `metric`: the torch engine where it implements the metric, else Quantus."""
    if metric.quantus_class is None:  # a torch-only metric: the engine is the only implementation
        return "torch"
    return "torch" if requested == "torch" and metric.engine is not None else "quantus"


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
    from xbench.measure.operators import TIE_POLICIES  # one list of policies for both engines

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
