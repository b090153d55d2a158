"""Plan: `validate` a suite against the libraries (every name, parameter and model checked, defaults and versions
resolved), then `expand` it into cells (model x pruning x CR x explainer x seed), a pure function of the two."""

from __future__ import annotations

import inspect
from typing import Any

from xbench.components.datasets import datasets
from xbench.components.explainers import explainers
from xbench.components.models import check_model_name, check_model_options, timm_model
from xbench.components.pruners import pruners
from xbench.components.pruning import prunability_error
from xbench.components.quantizers import quantizers
from xbench.core.cells import Cell
from xbench.core.errors import XbenchInputError
from xbench.core.plugins import load_plugins
from xbench.core.references import load_reference
from xbench.core.registry import UnknownNameError
from xbench.core.suite import ComponentSpec, QuantizationConfig, Suite
from xbench.measure.engine import engine_metrics
from xbench.measure.metrics import engine_for, metrics
from xbench.plan.expand import Resolution, SkippedPair, expand


def _check_name(registry: Any, name: str, field: str) -> Any:
    try:
        return registry.get(name)
    except UnknownNameError as exc:
        raise XbenchInputError(str(exc), field=field) from None


def _check_unique(specs: list[ComponentSpec], field: str) -> None:
    seen: set[str] = set()
    for index, spec in enumerate(specs):
        if spec.name in seen:
            raise XbenchInputError(f"{spec.name!r} is listed twice", field=f"{field}[{index}]")
        seen.add(spec.name)


def _resolve_metric(spec: ComponentSpec, index: int, image_size: int, has_masks: bool, engine: str) -> ComponentSpec:
    field = f"metrics[{index}]"
    metric = _check_name(metrics, spec.name, f"{field}.name")
    torch_engine = engine_for(metric, engine) == "torch"
    if torch_engine:
        accepted = engine_metrics.get(spec.name).parameters()
    else:
        accepted = set(inspect.signature(metric.quantus_class.__init__).parameters) - {"self", "kwargs"}
        if metric.orders_features:
            accepted.add("ties")
    unknown = sorted(set(spec.params) - accepted)
    if unknown:
        raise XbenchInputError(
            f"unknown parameter(s) {', '.join(unknown)} for {spec.name} with engine {engine}; "
            f"allowed: {', '.join(sorted(accepted))}"
            + (" (engine: quantus takes every Quantus parameter)" if torch_engine else ""),
            field=field,
        )
    if metric.needs_masks and not has_masks:
        raise XbenchInputError(f"{spec.name} needs ground-truth masks, which this dataset does not have", field=field)
    return ComponentSpec(name=spec.name, params=metric.resolve(spec.params, image_size))


def unsupported_pairs(suite: Suite) -> dict[tuple[str, str], str]:
    """(model, explainer) pairs an explainer cannot explain, with the reason; raises unless `skip_unsupported`.

    Explainers with architecture limits (CNN-only, LRP canonizers) are checked on a randomly initialised copy.
    """
    limited = [(i, explainers.get(spec.name)) for i, spec in enumerate(suite.explainers)]
    limited = [(i, plugin) for i, plugin in limited if plugin.limited]
    skipped: dict[tuple[str, str], str] = {}
    for model_config in suite.models if limited else []:
        model = timm_model(model_config.name, 2, suite.dataset.image_size, **model_config.options)
        for index, plugin in limited:
            reason = plugin.unsupported_reason(model)
            if reason and suite.skip_unsupported:
                skipped[(model_config.name, plugin.name)] = reason
            elif reason:
                raise XbenchInputError(
                    f"{plugin.name} cannot explain {model_config.name}: {reason} "
                    "(set skip_unsupported: true to leave such pairs out)",
                    field=f"explainers[{index}]",
                )
    return skipped


def _resolve_quantization(config: QuantizationConfig, index: int) -> QuantizationConfig:
    """The method's parameters over its defaults; an unknown method or parameter names the field and what is allowed."""
    field = f"quantization[{index}]"
    quantizer = _check_name(quantizers, config.method, f"{field}.method")
    unknown = sorted(set(config.params) - set(quantizer.defaults))
    if unknown:
        allowed = ", ".join(sorted(quantizer.defaults)) or "none"
        raise XbenchInputError(
            f"unknown parameter(s) {', '.join(unknown)} for {config.method}; allowed: {allowed}", field=field
        )
    params = {**quantizer.defaults, **config.params}
    message = quantizer.check(params)
    if message:
        raise XbenchInputError(message, field=field)
    return config.model_copy(update={"params": params})


def validate(suite: Suite) -> Resolution:
    """Check every name, parameter and model of `suite` against the libraries (XbenchInputError names the field) and
    resolve what they decide: full parameters, versions, and the (model, explainer) pairs left out."""
    load_plugins(suite.plugins)
    dataset = _check_name(datasets, suite.dataset.name, "dataset.name")
    dataset.parse_options(suite.dataset)
    for index, model in enumerate(suite.models):
        check_model_name(model.name, f"models[{index}].name")
        check_model_options(model.name, model.options, suite.dataset.image_size, f"models[{index}].options")
    for index, config in enumerate(suite.pruning):
        pruner = _check_name(pruners, config.method, f"pruning[{index}].method")
        for rate in config.compression_rates:
            rate_message = pruner.compression_rate_error(rate)
            if rate_message:
                raise XbenchInputError(rate_message, field=f"pruning[{index}].compression_rates")
        for model in suite.models:
            message = prunability_error(
                model.name,
                config.method,
                config.scope,
                config.granularity,
                suite.dataset.image_size,
                tuple(sorted(model.options.items())),
            )
            if message:
                raise XbenchInputError(message, field=f"pruning[{index}].method")
    resolved_quantizations = tuple(
        _resolve_quantization(config, index)
        for index, config in enumerate(suite.quantization)
        if config.method != "none"
    )
    if suite.reference is not None:
        load_reference(suite.reference)
    _check_unique(suite.explainers, "explainers")
    _check_unique(suite.metrics, "metrics")
    resolved_explainers = [
        ComponentSpec(
            name=spec.name,
            params=_check_name(explainers, spec.name, f"explainers[{i}].name").resolve(spec.params, f"explainers[{i}]"),
        )
        for i, spec in enumerate(suite.explainers)
    ]
    skipped = unsupported_pairs(suite)
    has_masks = dataset.provides_masks(suite.dataset)
    resolved_metrics = tuple(
        _resolve_metric(spec, i, suite.dataset.image_size, has_masks, suite.engine)
        for i, spec in enumerate(suite.metrics)
    )
    torch_metrics = [m.name for m in resolved_metrics if engine_for(metrics.get(m.name), suite.engine) == "torch"]
    return Resolution(
        explainers=tuple(resolved_explainers),
        metrics=resolved_metrics,
        explainer_versions={e.name: explainers.get(e.name).version for e in resolved_explainers},
        metric_versions={m.name: metrics.get(m.name).version for m in resolved_metrics},
        engine_versions={name: engine_metrics.get(name).version for name in torch_metrics},
        pruner_versions={c.method: pruners.get(c.method).version for c in suite.pruning},
        quantizations=resolved_quantizations,
        quantizer_versions={c.method: quantizers.get(c.method).version for c in resolved_quantizations},
        skipped=tuple(
            SkippedPair(model=model, explainer=explainer, reason=reason)
            for (model, explainer), reason in skipped.items()
        ),
    )


def plan(suite: Suite, device: str) -> list[Cell]:
    """`validate` then `expand`: every cell of `suite` for `device`."""
    return expand(suite, validate(suite), device)
