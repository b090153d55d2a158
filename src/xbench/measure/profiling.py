"""`xbench profile`: the cost figures of one timm model, optionally pruned, measured beside its unpruned self."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from xbench.components.data import ImageData
from xbench.components.models import check_model_name, timm_model
from xbench.components.pruners import PruneRequest, pruners
from xbench.components.pruning import achieved_rate_error, make_permanent, prunability_error, sparsity_report
from xbench.core.errors import XbenchInputError
from xbench.core.registry import UnknownNameError
from xbench.core.suite import PerfConfig, PruningConfig
from xbench.measure.perf import Figures, device_name, measure, speedups


def parse_prune(spec: str) -> tuple[str, float]:
    """'METHOD:CR' (e.g. channel_magnitude:4) -> (method, rate), checked."""
    method, _, rate = spec.partition(":")
    try:
        pruners.get(method)
        value = float(rate)
    except UnknownNameError as exc:
        raise XbenchInputError(str(exc), field="--prune") from None
    except ValueError:
        raise XbenchInputError(f"expected METHOD:CR (e.g. magnitude:4), got {spec!r}", field="--prune") from None
    if value < 1:
        raise XbenchInputError(f"the compression rate must be >= 1, got {value:g}", field="--prune")
    return method, value


def prune_for_profile(
    model: nn.Module,
    model_name: str,
    method: str,
    rate: float,
    scope: str,
    granularity: str,
    image_size: int,
    num_classes: int,
    device: torch.device,
) -> nn.Module:
    """The pruned variant, checked as a suite checks it: a request the method cannot carry out on this architecture
    (e.g. channel pruning of a ViT with scope conv, which removes nothing) and a variant that misses the requested
    compression rate are input errors, never a row of figures."""
    message = prunability_error(model_name, method, scope, granularity, image_size)
    if message:
        raise XbenchInputError(message, field="--prune")
    pruner = pruners.get(method)
    config = PruningConfig(method=method, scope=scope, granularity=granularity, compression_rates=[rate])
    params = sum(p.numel() for p in model.parameters())
    data = ImageData.random(64, image_size, num_classes)
    request = PruneRequest(config, rate, data, seed=0, device=device, base_params=params)
    pruned, masked = pruner.prune_step(copy.deepcopy(model), request)
    make_permanent(masked)
    achieved, counted = pruner.achieved_rate(pruned, model, config)
    message = achieved_rate_error(rate, achieved, pruner.rate_tolerance, counted)
    if message:
        raise XbenchInputError(f"{method} on {model_name}: {message}", field="--prune")
    return pruned


def profile(
    model_name: str,
    image_size: int,
    batch_sizes: list[int],
    device: torch.device,
    prune: str | None = None,
    scope: str = "conv",
    granularity: str = "layerwise",
    settings: PerfConfig | None = None,
    num_classes: int = 1000,
) -> dict[str, Any]:
    """Cost figures of the model (and of its pruned variant, with speed-ups against the unpruned one).

    `settings` gives the timing protocol (warm-up, repeats, precision, channels_last, compile); `batch_sizes` wins
    over its batch sizes.
    """
    settings = (settings or PerfConfig(warmup=10, repeats=50)).model_copy(update={"batch_sizes": batch_sizes})
    check_model_name(model_name, "MODEL")
    torch.manual_seed(0)
    original = timm_model(model_name, num_classes, image_size).eval()
    variants = {"unpruned": original}
    if prune is not None:
        method, rate = parse_prune(prune)
        variants[f"{method}:{rate:g}"] = prune_for_profile(
            original, model_name, method, rate, scope, granularity, image_size, num_classes, device
        )
    result: dict[str, Any] = {
        "model": model_name,
        "image_size": image_size,
        "device": device_name(device),
        "scope": scope,
        **settings.model_dump(),
        "variants": {},
    }
    for label, model in variants.items():
        figures = Figures(sparsity_report(model, scope, original=original))
        figures.update(measure(model, image_size, device, settings))
        result["variants"][label] = {"figures": figures.values, "missing": figures.missing}
    if prune is not None:
        base, pruned = (result["variants"][label]["figures"] for label in variants)
        pruned.update(speedups(base, pruned, batch_sizes))
    return result
