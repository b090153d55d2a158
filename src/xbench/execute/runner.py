"""Runner: computes cells where they run (in the driver's process on the local backend, on a worker on Ray): plans a
suite there (`prepare`), trains and prunes its model variants, explains and scores them (`CellExecutor`). The driver
side, which logs the results, is `xbench.execute.driver`.

Over 450 lines, and not of one purpose: building variants and scoring cells share `CellExecutor` until #43 splits
them.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import subprocess
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xbench import __version__
from xbench.components.attributions import tie_shares
from xbench.components.datasets import ImageData, datasets, load_dataset
from xbench.components.explainers import explain, explain_tensor, explainers, quantus_explain_func
from xbench.components.models import model_preprocessing, predict, trained_model, trained_model_key
from xbench.components.pruners import PruneRequest, pruners
from xbench.components.pruning import pruned_model, pruned_model_key, sparsity_report
from xbench.components.quantizers import QuantizedModel, fp32_bytes, quantizers, stored_bytes
from xbench.core.cache import Cache, content_key, library_versions
from xbench.core.cells import Cell, PlannedSuite
from xbench.core.errors import XbenchInputError
from xbench.core.plugins import load_plugins
from xbench.core.results import ArtifactStore, CellResult, MetricResult, PerturbedScores
from xbench.core.suite import DEFAULT_GALLERY_IMAGES, ComponentSpec, PruningConfig, Suite
from xbench.measure.engine import PassCounter, prepare_metric
from xbench.measure.meta_consistency import consistency_figures
from xbench.measure.metrics import Scored, engine_for, metrics, random_ties, score
from xbench.measure.perf import Figures, count_flops, device_name, latency, measure, speedups
from xbench.measure.perturbations import PERTURBATIONS, draw_seed, perturbed
from xbench.plan.expand import expand
from xbench.plan.graph import Node
from xbench.plan.planner import validate

VARIANTS_IN_MEMORY = 4  # measured model variants an executor keeps (a base and a pruned variant of two seeds)
# of what `_measure` computes (2: stored bytes, quantized variants; 3: the twin's gap on GAP_IMAGES): a change
# invalidates the figures in caches
FIGURES_VERSION = 3
# The explained twin's logits are compared with the deployed model's on the first this many eval images (all, when
# there are fewer): the check is of the twin's arithmetic, which 512 images' logits exercise in every layer; accuracy
# still comes from every eval image. A twin that is the deployed model (int4_weight) is not run a second time.
GAP_IMAGES = 512


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise XbenchInputError("CUDA was requested but torch sees no GPU; use --device cpu or auto", field="device")
    return torch.device(requested)


@dataclass
class _Variant:
    """A model variant (trained, maybe pruned) with the figures that do not depend on the explainer."""

    key: str
    model: nn.Module  # what explainers and metrics run: for a quantized variant, its fake-quantized twin
    figures: Figures
    correct: np.ndarray  # per eval image: whether the variant classifies it correctly (paired accuracy statistics)
    quantized: QuantizedModel | None = None


class CellExecutor:
    """Computes cells; keeps the last data set and model variants in memory, everything heavy in the cache."""

    def __init__(self, cache: Cache, device: torch.device) -> None:
        self.cache, self.device = cache, device
        self.artifacts = ArtifactStore(cache.root / "artifacts")
        self._data: tuple[str, ImageData] | None = None
        # The last few variants, measured: on Ray one worker gets the cells of several seeds interleaved, and
        # measuring a variant again would cost time and give it a second set of speed figures.
        self._variants: OrderedDict[str, _Variant] = OrderedDict()

    def data(self, cell: Cell) -> ImageData:
        """The cell's data set; real images are transformed by the model's timm data config unless the suite sets
        `dataset.preprocessing`."""
        config = cell.dataset
        if config.preprocessing is None and datasets.get(config.name).real_images:
            config = config.model_copy(update={"preprocessing": model_preprocessing(cell.model)})
        key = content_key([config.model_dump(), cell.data_seed])
        if self._data is None or self._data[0] != key:
            self._data = (key, load_dataset(config, cell.data_seed, self.cache.root))
        return self._data[1]

    def base(self, cell: Cell, data: ImageData) -> _Variant:
        """The trained, unpruned model and its figures, the reference for every variant's speed-up."""
        key = trained_model_key(cell.model, data, cell.seed)
        if key not in self._variants:
            model = trained_model(cell.model, data, cell.seed, self.cache, self.device)[0]
            self._keep(self._measured(key, model, cell, data, "conv", reference=None))
        self._variants.move_to_end(key)
        return self._variants[key]

    def _keep(self, variant: _Variant) -> None:
        self._variants[variant.key] = variant
        while len(self._variants) > VARIANTS_IN_MEMORY:
            self._variants.popitem(last=False)

    def variant(self, cell: Cell, data: ImageData) -> _Variant:
        """The cell's model variant: trained, pruned (when the cell prunes), then quantized (when it quantizes)."""
        base = self.base(cell, data)
        pruned = self._pruned(cell, data, base)
        return pruned if cell.quantization is None else self._quantized(cell, data, pruned, base)

    def _quantized(self, cell: Cell, data: ImageData, pruned: _Variant, base: _Variant) -> _Variant:
        """`pruned` quantized by the cell's method, calibrated on the first `calibration_images` training images in
        a `data_seed` order. Quantizing is cheap and deterministic, so it is redone rather than cached."""
        config = cell.quantization
        assert config is not None
        quantizer = quantizers.get(config.method)
        key = content_key([pruned.key, config.model_dump(mode="json"), quantizer.version, library_versions()])
        if key not in self._variants:
            calibration = _calibration_images(data, config.calibration_images, cell.data_seed)
            quantized = quantizer.quantize(pruned.model, calibration, dict(config.params), self.device)
            scope = cell.pruning.scope if cell.pruning else "conv"
            variant = self._measured(key, quantized.explained, cell, data, scope, reference=base, quantized=quantized)
            self._keep(variant)
        self._variants.move_to_end(key)
        return self._variants[key]

    def _pruned(self, cell: Cell, data: ImageData, base: _Variant) -> _Variant:
        if cell.pruning is None:
            return base
        config = PruningConfig(**cell.pruning.model_dump(), compression_rates=[cell.compression_rate])
        key = pruned_model_key(base.key, config, cell.compression_rate, cell.model.train)
        if key not in self._variants:
            request = PruneRequest(config, cell.compression_rate, data, cell.seed, self.device)
            model = pruned_model(base.model, base.key, cell.model, request, self.cache)
            self._keep(self._measured(key, model, cell, data, config.scope, reference=base))
        self._variants.move_to_end(key)
        return self._variants[key]

    def _measured(
        self,
        key: str,
        model: nn.Module,
        cell: Cell,
        data: ImageData,
        scope: str,
        reference: _Variant | None,
        quantized: QuantizedModel | None = None,
    ) -> _Variant:
        """Accuracy, size, FLOPs and speed of a variant; speed-ups are against `reference` (the unpruned model).

        Measured once per variant and device, then read from the cache: every cell of a variant reports the same
        figures, whichever worker (or rerun) computes it, and a second worker does not measure it again. The key
        holds what the figures depend on: the variant, its reference, the eval images, the perf settings, the
        device that timed them (a GPU's name; a CPU's model and torch's thread count), and the libraries' versions."""
        identity = {
            "variant": key,
            "scope": scope,
            "reference": reference.key if reference else None,
            "eval": data.fingerprint,
            "perf": cell.perf.model_dump(mode="json"),
            "device": device_name(self.device),
            "libraries": library_versions(),
            "version": FIGURES_VERSION,
        }
        path = self.cache.path("figures", content_key(identity), ".json")
        cached = self.cache.read(path, lambda p: json.loads(p.read_text()))
        if cached is not None:
            figures = Figures(cached["values"], cached["missing"])
            return _Variant(key, model, figures, np.asarray(cached["correct"], dtype=bool), quantized)
        variant = self._measure(key, model, cell, data, scope, reference, quantized)
        self.cache.write_json(
            path,
            {
                "values": variant.figures.values,
                "missing": variant.figures.missing,
                "correct": variant.correct.tolist(),
                "identity": identity,
            },
        )
        return variant

    def _measure(
        self,
        key: str,
        model: nn.Module,
        cell: Cell,
        data: ImageData,
        scope: str,
        reference: _Variant | None,
        quantized: QuantizedModel | None = None,
    ) -> _Variant:
        report = sparsity_report(model, scope, original=reference.model if reference else None)
        perf = cell.perf
        dense_bytes = fp32_bytes(reference.model if reference else model)
        if quantized is None:
            correct = (predict(model, data.eval_x, self.device) == data.eval_y).numpy()
            figures = Figures({"accuracy": float(correct.mean()), **report})
            figures.update(measure(model, cell.dataset.image_size, self.device, perf))
            stored = sum(stored_bytes(model).values())
        else:
            correct, figures = self._measure_quantized(quantized, model, cell, data)
            figures.values.update(report)
            stored = quantized.stored_bytes
        # what the variant takes stored (pruned zeros as a bitmask where that is smaller), and the unpruned fp32
        # model's dense bytes over it: pruning and quantization on one axis, counting the same thing
        figures.values["stored_bytes"] = float(stored)
        figures.values["compression_rate_bits"] = dense_bytes / stored
        if cell.pruning is not None:  # kernels made for the method's sparsity (2:4), where it has them
            values, missing = pruners.get(cell.pruning.method).sparse_figures(
                model, cell.dataset.image_size, self.device, perf, latency
            )
            figures.update(Figures(values, missing))
        base = (reference.figures if reference else figures).values
        figures.values.update(speedups(base, figures.values, perf.batch_sizes))
        return _Variant(key, model, figures, correct)

    def _measure_quantized(
        self, quantized: QuantizedModel, explained: nn.Module, cell: Cell, data: ImageData
    ) -> tuple[np.ndarray, Figures]:
        """Accuracy and speed of the deployed model (its int8 kernels run on the CPU), MACs of the explained twin (the
        same operations), and how far the twin's logits are from the deployed model's on the first `GAP_IMAGES` eval
        images."""
        assert cell.quantization is not None
        quantizer = quantizers.get(cell.quantization.method)
        cpu = torch.device("cpu")
        all_logits = _logits(quantized.deployed, data.eval_x, cpu)
        correct = (all_logits.argmax(1) == data.eval_y).numpy()
        deployed_logits = all_logits[:GAP_IMAGES]
        if explained is quantized.deployed and self.device == cpu:
            explained_logits = deployed_logits  # the twin is the deployed model, on the device it ran on
        else:
            explained_logits = _logits(explained, data.eval_x[:GAP_IMAGES], self.device)
        spread = float(deployed_logits.max() - deployed_logits.min()) or 1.0
        gap = float((deployed_logits - explained_logits).abs().max()) / spread
        figures = Figures(
            {
                "accuracy": float(correct.mean()),
                "quant_logit_gap": gap,
                "quant_logit_tolerance": quantizer.logit_tolerance,
                "quant_top1_agreement": float((deployed_logits.argmax(1) == explained_logits.argmax(1)).float().mean()),
            }
        )
        if gap > quantizer.logit_tolerance:
            from xbench.core.progress import log

            figures.missing["quant_logit_gap_within_tolerance"] = (
                f"the explained (fake-quantized) model's logits differ from the deployed model's by {gap:.3g} of "
                f"their range, over {cell.quantization.method}'s tolerance {quantizer.logit_tolerance:g}"
            )
            log(f"warning: {cell.label}: {figures.missing['quant_logit_gap_within_tolerance']}")
        figures.update(count_flops(explained, cell.dataset.image_size, self.device))
        figures.missing["file_size_mb"] = "a quantized variant's size is stored_bytes (its weights at their bit width)"
        reason = quantized.latency_missing
        if reason is None and self.device.type != "cpu":
            reason = f"{cell.quantization.method} is timed on the CPU, where its kernels run; this cell runs on CUDA"
        for batch_size in cell.perf.batch_sizes:
            if reason is None:
                figures.update(latency(quantized.deployed, cell.dataset.image_size, batch_size, cpu, cell.perf))
            else:
                figures.missing[f"latency_ms_p50_bs{batch_size}"] = reason
        return correct, figures

    def explanations(self, cell: Cell, variant: _Variant, data: ImageData) -> tuple[np.ndarray, dict[str, float]]:
        """Attributions for the eval images (cached .npy) and what they cost: seconds and model passes."""
        plugin = explainers.get(cell.explainer.name)
        key = content_key(
            [variant.key, data.fingerprint, cell.explainer.model_dump(), plugin.version, library_versions()]
        )
        path = self.cache.path("explanations", key, ".npy")
        meta = self.cache.path("explanations", key, ".json")
        cost = self.cache.read(meta, lambda p: json.loads(p.read_text()), path)
        if cost is not None and "forward_passes" in cost:
            attributions = self.cache.read(path, lambda p: np.load(p, allow_pickle=False), meta)
            if attributions is not None and attributions.shape[0] == len(data.eval_y):
                return attributions, cost
        torch.manual_seed(cell.seed)
        started = time.perf_counter()
        model, device = explained_model(plugin, variant.model, variant.quantized, self.device)
        with PassCounter(model) as counter:
            attributions = explain(plugin, cell.explainer.params, model, data.eval_x, data.eval_y, device)
        cost = {
            "seconds": time.perf_counter() - started,
            "forward_passes": counter.forward,
            "backward_passes": counter.backward,
            "on_deployed_model": float(model is not variant.model),
        }
        self.cache.write(path, lambda p: np.save(p, attributions, allow_pickle=False))
        self.cache.write_json(meta, {**cost, "cell": cell.model_dump(mode="json")})
        return attributions, cost

    def _score(
        self,
        cell: Cell,
        spec: ComponentSpec,
        variant: _Variant,
        data: ImageData,
        attributions: np.ndarray,
        explain_func: Any,
        explain_again: Any,
        tie_draw: int,
    ) -> Scored:
        return score(
            metrics.get(spec.name),
            spec.params,
            variant.model,
            data.eval_x.numpy(),
            data.eval_y.numpy(),
            attributions,
            data.eval_masks,
            self.device,
            cell.seed,
            explain_func,
            engine=cell.engine,
            explain_tensor_func=explain_again,
            tie_draw=tie_draw,
        )

    def execute(self, cell: Cell) -> CellResult:
        """The cell's typed result: figures, per-image scores of every metric and references to raw arrays (the
        gallery images and their attributions) in the content-addressed artifact store. Draws nothing."""
        load_plugins(cell.plugins)  # a no-op where the plan was made; on another process or machine, it registers them
        pool = self.data(cell)
        variant = self.variant(cell, pool)  # accuracy and cost on every eval image
        data, figures = pool, Figures(dict(variant.figures.values), dict(variant.figures.missing))
        selected: dict[str, Any] = {}
        explain_size = cell.dataset.explain_size
        explained: tuple[int, ...] | None = None
        if cell.eval_selection is None and explain_size is not None and explain_size < len(pool.eval_y):
            # accuracy above came from every eval image; explanations and metrics from the first `explain_size`
            explained = tuple(range(explain_size))
            data = pool.eval_subset(np.asarray(explained, dtype=np.int64))
        if cell.eval_selection is not None:  # explanations and metrics on the selected images only
            selected = self.selection(cell, pool)
            data = pool.eval_subset(np.asarray(selected["indices"], dtype=np.int64))
            figures.values.update(
                {
                    "eval_candidates": float(selected["candidates"]),
                    "eval_qualified": float(selected["qualified"]),
                    "eval_selected": float(len(selected["indices"])),
                }
            )
        attributions, cost = self.explanations(cell, variant, data)
        images = len(attributions)
        figures.values["explain_seconds"] = cost["seconds"]
        figures.values["explain_seconds_per_image"] = cost["seconds"] / images
        figures.values["explain_forward_passes_per_image"] = cost["forward_passes"] / images
        figures.values["explain_backward_passes_per_image"] = cost["backward_passes"] / images
        if cell.quantization is not None:
            figures.values["explained_on_deployed_model"] = cost.get("on_deployed_model", 0.0)
        shares = tie_shares(attributions)
        constant = bool(shares["constant"].all())
        figures.values["attribution_tie_share"] = float(shares["tie_share"].mean())
        figures.values["attribution_min_share"] = float(shares["min_share"].mean())
        figures.values["attribution_constant_count"] = float(shares["constant"].sum())
        nonfinite = ~np.isfinite(attributions.reshape(len(attributions), -1)).all(axis=1)
        figures.values["attribution_nonfinite_count"] = float(nonfinite.sum())
        if (nonfinite | shares["constant"]).all():
            from xbench.core.progress import log

            warning = (
                f"all {images} explanations are NaN or constant: no metric of this cell says anything about the "
                "explainer (a broken explainer, or a damaged file)"
            )
            figures.missing["explanations"] = warning
            log(f"warning: {cell.label}: {warning}")
        plugin = explainers.get(cell.explainer.name)
        explain_func = quantus_explain_func(plugin, cell.explainer.params, self.device)

        def explain_again(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return explain_tensor(
                plugin, cell.explainer.params, variant.model, inputs, targets, self.device, batch_size=len(inputs)
            )

        results: dict[str, MetricResult] = {}
        for spec in cell.metrics:
            metric = metrics.get(spec.name)
            engine = engine_for(metric, cell.engine)
            if engine == "torch":
                prepare_metric(spec.name, self.device)
            draws = cell.tie_draws if random_ties(metric, spec.params, cell.engine) else 1
            started = time.perf_counter()
            tie_std, passes, missing = None, (0, 0), None
            try:
                scored = [
                    self._score(cell, spec, variant, data, attributions, explain_func, explain_again, draw)
                    for draw in range(draws)
                ]
                # Over several tie orders, an image's score is its mean over them; the spread says how much ties
                # decide the cell's score.
                scores = np.mean([s.scores for s in scored], axis=0)
                if draws > 1:
                    tie_std = float(
                        np.std([np.nanmean(s.scores) if np.isfinite(s.scores).any() else math.nan for s in scored])
                    )
                passes = (sum(s.forward_passes for s in scored), sum(s.backward_passes for s in scored))
            except XbenchInputError:
                raise
            except Exception as exc:  # a metric that fails on this cell is a NaN with its reason, not a lost suite
                scores = np.full(images, np.nan)
                missing = f"{type(exc).__name__}: {exc}"[:500]
            if missing is None and not np.isfinite(scores).any():
                missing = (
                    "every attribution map is constant, so there is nothing to order or localise "
                    "(e.g. a CAM upsampled from a 1x1 feature map)"
                    if constant
                    else "the metric gave NaN for every image"
                )
            results[spec.name] = MetricResult(
                name=spec.name,
                higher_is_better=metric.higher_is_better,
                engine=engine,
                version=metric.version,
                per_image=tuple(float(v) if math.isfinite(v) else None for v in scores),
                tie_std=tie_std,
                seconds=time.perf_counter() - started,
                forward_passes_per_image=passes[0] / images,
                backward_passes_per_image=passes[1] / images,
                missing=missing,
                batch_level=metric.batch_level,
            )
        meta_evaluation = self.meta_evaluation(cell, variant, data) if cell.meta_evaluation is not None else ()
        consistency, inconsistent = consistency_figures(results, meta_evaluation)
        count = min(cell.gallery_images or DEFAULT_GALLERY_IMAGES, images)
        pictures = data.denormalise(data.eval_x[:count]).permute(0, 2, 3, 1).numpy().clip(0, 1)
        return CellResult(
            cell=cell,
            cell_key=cell.cell_key,
            model_key=variant.key,
            data_digest=data.fingerprint,
            figures={**figures.values, **consistency},
            missing={**figures.missing, **inconsistent},
            correct=tuple(bool(c) for c in variant.correct),
            labels=tuple(int(label) for label in pool.eval_y),
            eval_indices=tuple(selected["indices"]) if cell.eval_selection is not None else explained,
            class_names=tuple(data.class_names),
            metrics=results,
            artifacts=(
                self.artifacts.put("gallery_images", (pictures * 255).round().astype(np.uint8)),
                self.artifacts.put("gallery_attributions", attributions[:count].astype(np.float32)),
            ),
            environment=run_environment(self.device),
            meta_evaluation=meta_evaluation,
            rate_counts=None
            if cell.pruning is None or cell.pruning.method == "none"
            else "the whole model"
            if pruners.get(cell.pruning.method).structured
            else "the pruned scope",
        )

    def meta_evaluation(self, cell: Cell, variant: _Variant, data: ImageData) -> tuple[PerturbedScores, ...]:
        """The cell's metrics again under each perturbation's draws: the model and inputs perturbed, the images
        explained afresh by the perturbed model, every per-image metric scored on them (MetaQuantus's protocol)."""
        config = cell.meta_evaluation
        assert config is not None
        plugin = explainers.get(cell.explainer.name)
        x, y = data.eval_x, data.eval_y
        unperturbed = predict(variant.model, x, self.device)
        reference_accuracy = float((unperturbed == y).double().mean())
        chosen = [metrics.get(spec.name) for spec in cell.metrics]
        explain_func = quantus_explain_func(plugin, cell.explainer.params, self.device)  # takes the model per call
        results = []
        for perturbation in PERTURBATIONS:
            kept, accuracy = [], []
            scores: dict[str, list[tuple[float | None, ...]]] = {m.name: [] for m in chosen if not m.batch_level}
            for draw in range(config.draws):
                seed = draw_seed(cell.seed, perturbation.name, draw)
                model, inputs = perturbed(
                    perturbation.name,
                    variant.model,
                    x,
                    seed,
                    config.weight_noise,
                    config.input_noise,
                    config.randomised_layers,
                )
                model.to(self.device).eval()
                predictions = predict(model, inputs, self.device)
                kept.append(tuple(bool(v) for v in (predictions == unperturbed)))
                accuracy.append(float((predictions == y).double().mean()))
                with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
                    torch.manual_seed(seed)  # a stochastic explainer draws the same noise on every run, scoped here
                    attributions = explain(plugin, cell.explainer.params, model, inputs, y, self.device)

                def explain_again(batch: torch.Tensor, targets: torch.Tensor, model: nn.Module = model) -> torch.Tensor:
                    return explain_tensor(
                        plugin, cell.explainer.params, model, batch, targets, self.device, batch_size=len(batch)
                    )

                for spec, metric in zip(cell.metrics, chosen, strict=True):
                    if metric.batch_level:
                        continue
                    try:
                        scored = score(
                            metric,
                            spec.params,
                            model,
                            inputs.numpy(),
                            y.numpy(),
                            attributions,
                            data.eval_masks,
                            self.device,
                            seed,
                            explain_func,
                            engine=cell.engine,
                            explain_tensor_func=explain_again,
                        ).scores
                    except XbenchInputError:
                        raise
                    except Exception:  # as in the cell itself: a metric that fails here is unscored, not a lost run
                        scored = np.full(len(y), np.nan)
                    scores[metric.name].append(tuple(float(v) if math.isfinite(v) else None for v in scored))
            results.append(
                PerturbedScores(
                    perturbation=perturbation.name,
                    disruptive=perturbation.disruptive,
                    kept_prediction=tuple(kept),
                    accuracy=tuple(accuracy),
                    reference_accuracy=reference_accuracy,
                    scores={name: tuple(rows) for name, rows in scores.items()},
                )
            )
        return tuple(results)

    def run_node(self, node: Node) -> str:
        """Compute one node of the task graph. Train and prune nodes leave their weights in the cache and return their
        model key; a cell node returns its `CellResult` as JSON."""
        cell = node.cell
        load_plugins(cell.plugins)
        if node.kind == "cell":
            return self.execute(cell).model_dump_json()
        data = self.data(cell)
        if node.kind == "select":
            return json.dumps(self.selection(cell, data))
        if node.measures:
            return self.variant(cell, data).key
        return self.weights(cell, data)[1]

    def weights(self, cell: Cell, data: ImageData) -> tuple[nn.Module, str]:
        """The cell's model variant (trained, then pruned along its chain), from the cache when it is there, and its
        key; not measured."""
        base, base_key = trained_model(cell.model, data, cell.seed, self.cache, self.device)
        if cell.pruning is None:
            return base, base_key
        config = PruningConfig(**cell.pruning.model_dump(), compression_rates=[cell.compression_rate])
        request = PruneRequest(config, cell.compression_rate, data, cell.seed, self.device)
        model = pruned_model(base, base_key, cell.model, request, self.cache)
        return model, pruned_model_key(base_key, config, cell.compression_rate, cell.model.train)

    def selection(self, cell: Cell, data: ImageData) -> dict[str, Any]:
        """`correct_under_all`: the eval images every variant of the cell's model classifies correctly, balanced per
        class (the first `per_class` of each class in a `data_seed` order). Computed once, kept in the cache, the same
        for every cell of the model: {"indices", "qualified", "candidates", "per_class"}."""
        spec = cell.eval_selection
        assert spec is not None
        key = content_key(
            [
                spec.model_dump(mode="json"),
                cell.model.model_dump(mode="json"),
                data.fingerprint,
                cell.data_seed,
                library_versions(),
            ]
        )
        path = self.cache.path("selections", key, ".json")
        cached = self.cache.read(path, lambda p: json.loads(p.read_text()))
        if cached is not None:
            return cached
        correct = np.ones(len(data.eval_y), dtype=bool)
        for member in spec.group:
            variant = cell.model_copy(update=member.model_dump() | {"pruning": member.pruning})
            model = self.weights(variant, data)[0]
            correct &= (predict(model, data.eval_x, self.device) == data.eval_y).numpy()
        order = np.random.default_rng([cell.data_seed, 2]).permutation(len(correct))
        labels = data.eval_y.numpy()
        chosen: list[int] = []
        per_class: dict[str, int] = {}
        for label, name in enumerate(data.class_names):
            qualified = [int(i) for i in order if correct[i] and labels[i] == label]
            taken = qualified[: spec.per_class] if spec.per_class else qualified
            chosen += taken
            per_class[name] = len(taken)
        result = {
            "indices": sorted(chosen),
            "qualified": int(correct.sum()),
            "candidates": len(correct),
            "per_class": per_class,
        }
        if not chosen:
            raise XbenchInputError(
                f"no eval image of {cell.model.name} is classified correctly by all {len(spec.group)} variants",
                field="eval_selection",
            )
        self.cache.write_json(path, result)
        return result


def explained_model(
    plugin: Any, twin: nn.Module, quantized: QuantizedModel | None, device: torch.device
) -> tuple[nn.Module, torch.device]:
    """The model an explainer explains, and where: a gradient-free explainer (forward passes only) explains a quantized
    variant's deployed model itself on a device where its kernels are faster than fp32 (`fast_on`: int8 on the CPU,
    fp16 on CUDA); every other explainer explains the fake-quantized twin (it needs gradients)."""
    if quantized is not None and plugin.gradient_free and device.type in quantized.fast_on:
        return quantized.deployed, device
    return twin, device


def _logits(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 128) -> torch.Tensor:
    model.to(device).eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def _calibration_images(data: ImageData, count: int, data_seed: int) -> torch.Tensor:
    """`count` training images (all, when there are fewer) in a `data_seed` order, without augmentation."""
    generator = torch.Generator().manual_seed(data_seed)
    if len(data.train_x):
        order = torch.randperm(len(data.train_x), generator=generator)[:count]
        return data.train_x[order]
    stream = data.train_plain or data.train_stream
    assert stream is not None, "a data set with neither training tensors nor a training stream"
    order = torch.randperm(len(stream), generator=generator)[:count]
    return torch.stack([stream[int(i)][0] for i in order])


@functools.cache  # once per process: every cell result carries it
def _git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_environment(device: torch.device) -> dict[str, str]:
    """Where the cells run: versions, git sha and device (every cell run carries them)."""
    import quantus
    import timm

    return {
        "xbench.version": __version__,
        "xbench.git_sha": _git_sha(),
        "xbench.device": device_name(device),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "quantus_version": quantus.__version__,
        "python_version": platform.python_version(),
    }


def prepare(suite: Suite, device: str, decided_elsewhere: str | None = None) -> PlannedSuite:
    """Plan `suite` for cells on `device` (cpu | cuda, as decided where they run: `device_here` in this process, or
    a worker of the Ray cluster, which `decided_elsewhere` then describes); every name and parameter is checked here,
    with the libraries the cells need imported."""
    resolution = validate(suite)
    cells = expand(suite, resolution, device)
    if decided_elsewhere is None:
        environment = run_environment(torch.device(device))
    else:  # this process may have no such device: the parent run says where the decision was made
        environment = run_environment(torch.device("cpu")) | {"xbench.device": f"{device}, {decided_elsewhere}"}
    return PlannedSuite(
        cells=cells,
        left_out=[(pair.model, pair.explainer, pair.reason) for pair in resolution.skipped],
        device=device,
        environment=environment,
    )


def device_here(requested: str) -> str:
    """The device cells in this process compute on for `requested` (auto | cpu | cuda): what this torch sees."""
    return resolve_device(requested).type
