"""The pure half of planning: a validated suite and its resolution in, the list of cells out.

`validate(suite)` (in `planner`) imports the plug-ins, checks every name, parameter and model, and resolves what the
libraries decide: each explainer's and metric's full parameters, the plug-ins' versions, the (model, explainer) pairs
left out. That `Resolution` is plain data. `expand(suite, resolution, device)` is then combinatorics only: no torch,
no files, no registries; the same inputs give the same cells, in the same order.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from xbench.core.cells import Cell, PruningVariant, SelectionSpec, VariantRef
from xbench.core.suite import ComponentSpec, QuantizationConfig, Suite

PLAN_VERSION = "2"  # 2: cells carry data_seed and tie_draws; each seed of a suite is its own cell


class SkippedPair(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    explainer: str
    reason: str


class Resolution(BaseModel):
    """What validation resolved from the libraries, as plain data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    explainers: tuple[ComponentSpec, ...]  # every parameter resolved (suite values over the plug-in's defaults)
    metrics: tuple[ComponentSpec, ...]  # likewise, for the suite's image size
    explainer_versions: dict[str, str]
    metric_versions: dict[str, str]
    engine_versions: dict[str, str]  # only the metrics the torch engine computes
    pruner_versions: dict[str, str]
    skipped: tuple[SkippedPair, ...] = ()  # pairs an explainer cannot explain (skip_unsupported: true)
    quantizations: tuple[QuantizationConfig, ...] = ()  # every method but `none`, its parameters resolved
    quantizer_versions: dict[str, str] = {}


def expand(suite: Suite, resolution: Resolution, device: str) -> list[Cell]:
    """Every cell of `suite`: CR 1 (the unpruned model, shared by every pruning configuration) and each pruning
    configuration's CRs, each also quantized by every quantization method (fp32 first), × explainers × seeds;
    seed-major, then model and variant, so an executor keeps one trained model and one variant in memory at a
    time."""
    variants: list[tuple[PruningVariant | None, float]] = [(None, 1.0)]
    for config in suite.pruning:
        pruned = PruningVariant(**config.model_dump(exclude={"compression_rates"}))
        variants += [(pruned, float(rate)) for rate in dict.fromkeys(config.compression_rates) if rate != 1]

    selections: dict[str, SelectionSpec] = {}
    if suite.eval_selection.method == "correct_under_all":
        group = tuple(
            VariantRef(seed=seed, pruning=variant, compression_rate=rate)
            for seed in suite.replicate_seeds
            for variant, rate in variants
        )
        selection = SelectionSpec(method="correct_under_all", per_class=suite.eval_selection.per_class, group=group)
        selections = {model.name: selection for model in suite.models}

    skipped = {(pair.model, pair.explainer) for pair in resolution.skipped}
    metric_versions = {f"metric.{m.name}": resolution.metric_versions[m.name] for m in resolution.metrics}
    engine_versions = {
        f"engine.{m.name}": resolution.engine_versions[m.name]
        for m in resolution.metrics
        if m.name in resolution.engine_versions
    }
    cells = []
    quantizations: list[QuantizationConfig | None] = [None, *resolution.quantizations]
    for seed, model in ((seed, model) for seed in suite.replicate_seeds for model in suite.models):
        for (variant, rate), quantization in ((v, q) for v in variants for q in quantizations):
            for explainer in resolution.explainers:
                if (model.name, explainer.name) in skipped:
                    continue
                versions = {
                    "plan": PLAN_VERSION,
                    "explainer": resolution.explainer_versions[explainer.name],
                    **metric_versions,
                    **engine_versions,
                    **({"pruner": resolution.pruner_versions[variant.method]} if variant else {}),
                    **({"quantizer": resolution.quantizer_versions[quantization.method]} if quantization else {}),
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
                        explainer=explainer,
                        metrics=resolution.metrics,
                        engine=suite.engine,
                        perf=suite.perf,
                        versions=versions,
                        eval_selection=selections.get(model.name),
                        gallery_images=suite.gallery_images,
                        meta_evaluation=suite.meta_evaluation,
                        quantization=quantization,
                    )
                )
    return cells
