"""The engine's robustness family (Quantus 0.6's definitions, on the model's device): max- and avg-sensitivity of
the explanation under uniform input noise. Registered with `engine.engine_metric`; `xbench verify` checks each
against Quantus."""

from __future__ import annotations

import math

import numpy as np
import torch
from quantus.functions.perturb_func import batch_uniform_noise
from torch import Tensor

from xbench.measure.engine import EngineContext, Replay, engine_metric
from xbench.measure.operators import preprocess

# ------------------------------------------------------------------------------------------------------ robustness


# the uniform noise Quantus added to the inputs, recorded as (perturbed - input)
_UNIFORM_NOISE = Replay("noise", batch_uniform_noise, lambda arr, indices, result: (result - arr).copy())


def _sensitivities(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    nr_samples: int,
    lower_bound: float,
    upper_bound: float | None,
    abs: bool,
    normalise: bool,
    return_nan_when_prediction_changes: bool,
) -> Tensor:
    """(N, nr_samples) ||a - a(x + noise)|| / ||a||, explanations re-computed in batches of perturbed inputs."""
    a = preprocess(a, normalise, abs)
    count = len(x)
    a_flat = a.reshape(count, -1)
    low, high = (-lower_bound, lower_bound) if upper_bound is None else (lower_bound, upper_bound)
    recorded = context.draws.get("noise")
    ratios = torch.full((count, nr_samples), math.nan, dtype=torch.float64, device=x.device)
    per_group = max(1, context.batch_size // count)
    labels = context.logits(iter([(x, y)])).argmax(-1) if return_nan_when_prediction_changes else None
    for first in range(0, nr_samples, per_group):
        samples = range(first, min(first + per_group, nr_samples))
        if recorded is not None:
            noise = torch.as_tensor(np.asarray(recorded[first : samples.stop]), device=x.device, dtype=x.dtype)
            noise = noise.view(len(samples), *x.shape)
        else:
            noise = context.uniform(len(samples), *x.shape, low=low, high=high)
        perturbed = (x.unsqueeze(0) + noise).reshape(-1, *x.shape[1:])
        explained = context.explain_batches(perturbed, y.repeat(len(samples)))
        explained = explained.view(len(samples), count, -1)
        for offset, sample in enumerate(samples):
            again = preprocess(explained[offset], normalise, abs)
            ratios[:, sample] = (a_flat - again).double().norm(dim=1) / a_flat.double().norm(dim=1)
        if labels is not None:
            changed = context.logits(iter([(perturbed, y)])).argmax(-1).view(len(samples), count) != labels
            ratios[:, samples.start : samples.stop][changed.T] = math.nan
    return ratios


@engine_metric("max_sensitivity", replay=_UNIFORM_NOISE, verify_params=lambda image_size: {"nr_samples": 8})
def max_sensitivity(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    abs: bool = False,
    normalise: bool = False,
    return_nan_when_prediction_changes: bool = False,
) -> Tensor:
    """Largest relative change of the explanation under uniform input noise (Yeh et al. 2019)."""
    ratios = _sensitivities(
        context, x, y, a, nr_samples, lower_bound, upper_bound, abs, normalise, return_nan_when_prediction_changes
    )
    if return_nan_when_prediction_changes:
        return ratios.max(1).values
    return torch.where(ratios.isnan(), -math.inf, ratios).max(1).values.nan_to_num(nan=math.nan, neginf=math.nan)


@engine_metric("avg_sensitivity", replay=_UNIFORM_NOISE, verify_params=lambda image_size: {"nr_samples": 8})
def avg_sensitivity(
    context: EngineContext,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    abs: bool = False,
    normalise: bool = False,
    return_nan_when_prediction_changes: bool = False,
) -> Tensor:
    """Mean relative change of the explanation under uniform input noise (Yeh et al. 2019)."""
    ratios = _sensitivities(
        context, x, y, a, nr_samples, lower_bound, upper_bound, abs, normalise, return_nan_when_prediction_changes
    )
    return ratios.mean(1) if return_nan_when_prediction_changes else ratios.nanmean(1)
