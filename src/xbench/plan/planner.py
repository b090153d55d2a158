"""Plan: a pure function from a suite to the list of cells (model x pruning x CR x explainer), validated up front."""

from __future__ import annotations

import inspect
from typing import Any

from xbench.components.data import datasets
from xbench.components.explainers import explainers
from xbench.components.models import check_model_name, check_model_options, timm_model
from xbench.components.pruning import prunability_error, pruners
from xbench.core.cells import Cell, PruningVariant, SelectionSpec, VariantRef
from xbench.core.errors import XbenchInputError
from xbench.core.plugins import load_plugins
from xbench.core.references import load_reference
from xbench.core.registry import UnknownNameError
from xbench.core.suite import ComponentSpec, Suite
from xbench.measure.engine import engine_metrics
from xbench.measure.metrics import engine_for, metrics

PLAN_VERSION = "2"  # 2: cells carry data_seed and tie_draws; each seed of a suite is its own cell


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


def plan(suite: Suite, device: str) -> list[Cell]:
    """Expand a suite into cells, checking every name and parameter first (XbenchInputError names the field).

    CR 1 is the unpruned model: it is one cell per model and explainer, shared by every pruning configuration.
    """
    load_plugins(suite.plugins)
    dataset = _check_name(datasets, suite.dataset.name, "dataset.name")
    for index, model in enumerate(suite.models):
        check_model_name(model.name, f"models[{index}].name")
        check_model_options(model.name, model.options, suite.dataset.image_size, f"models[{index}].options")
    for index, config in enumerate(suite.pruning):
        _check_name(pruners, config.method, f"pruning[{index}].method")
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
    has_masks = dataset.has_masks or suite.dataset.masks is not None
    resolved_metrics = tuple(
        _resolve_metric(spec, i, suite.dataset.image_size, has_masks, suite.engine)
        for i, spec in enumerate(suite.metrics)
    )

    variants: list[tuple[PruningVariant | None, float]] = [(None, 1.0)]
    for config in suite.pruning:
        pruned = PruningVariant(**config.model_dump(exclude={"compression_rates"}))
        variants += [(pruned, float(rate)) for rate in dict.fromkeys(config.compression_rates) if rate != 1]

    selections = {}
    if suite.eval_selection.method == "correct_under_all":
        group = tuple(
            VariantRef(seed=seed, pruning=variant, compression_rate=rate)
            for seed in suite.replicate_seeds
            for variant, rate in variants
        )
        selection = SelectionSpec(method="correct_under_all", per_class=suite.eval_selection.per_class, group=group)
        selections = {model.name: selection for model in suite.models}
    cells = []
    # Seed-major, then model and variant: the executor keeps one trained model and one variant in memory at a time.
    for seed, model in ((seed, model) for seed in suite.replicate_seeds for model in suite.models):
        for variant, rate in variants:
            for explainer_spec in resolved_explainers:
                if (model.name, explainer_spec.name) in skipped:
                    continue
                versions = {
                    "plan": PLAN_VERSION,
                    "explainer": explainers.get(explainer_spec.name).version,
                    **{f"metric.{m.name}": metrics.get(m.name).version for m in resolved_metrics},
                    **{
                        f"engine.{m.name}": engine_metrics.get(m.name).version
                        for m in resolved_metrics
                        if engine_for(metrics.get(m.name), suite.engine) == "torch"
                    },
                    **({"pruner": pruners.get(variant.method).version} if variant else {}),
                }
                cells.append(
                    Cell(
                        suite=suite.name,
                        plugins=tuple(suite.plugins),
                        seed=seed,
                        data_seed=suite.data_seed,
                        tie_draws=suite.tie_draws,
                        device=device,
                        dataset=suite.dataset,
                        model=model,
                        pruning=variant,
                        compression_rate=rate,
                        explainer=explainer_spec,
                        metrics=resolved_metrics,
                        engine=suite.engine,
                        perf=suite.perf,
                        versions=versions,
                        eval_selection=selections.get(model.name),
                        gallery_images=suite.gallery_images,
                    )
                )
    return cells
