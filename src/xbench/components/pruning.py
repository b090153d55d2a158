"""Pruning: unstructured masks (torch.nn.utils.prune) and channel pruning (torch-pruning's DepGraph), oneshot or
iterative with fine-tuning; pruned models cached as safetensors plus a JSON record of their layer shapes (no pickle).

Iterative schedule after Merkle et al., "Less is More: The Influence of Pruning on the Explainability of CNNs"
(IEEE Access 2025): each step halves what remains (CR 2 -> 4 -> 8 ...) and fine-tunes.

The pruning methods themselves live in `components/pruners/` (`_base`: the kinds, their registry and decorators; one
module per family); this module is the machinery they share: scopes and accounting, masks, channel removal, the
schedule with fine-tuning, and the pruned-model cache.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from torch.nn.utils import prune

from xbench.components.data import ImageData
from xbench.components.models import FitOptions, fit, timm_model
from xbench.components.pruners._base import (
    PruneRequest,
    StructuredPruner,
    UnstructuredPruner,
    pruners,
)
from xbench.core.cache import Cache, content_key, library_versions
from xbench.core.suite import ModelConfig, PruningConfig, TrainConfig, schedule_steps

# --------------------------------------------------------------------------------------------------------------------
# Scope and accounting.

_SCOPE_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "conv_linear": (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear),
}


def scope_modules(model: nn.Module, scope: str) -> list[tuple[str, nn.Module]]:
    """Modules whose `weight` is in the pruning scope; `all` is every module with a weight (norms included)."""
    selected = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, (nn.Parameter, torch.Tensor)) or weight is None:
            continue
        if scope == "all" or isinstance(module, _SCOPE_TYPES[scope]):
            selected.append((name, module))
    return selected


def weight_of(module: nn.Module) -> torch.Tensor:
    """A layer's `weight` (torch types attribute access as Tensor | Module)."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor), f"{type(module).__name__} has no weight tensor"
    return weight


def _counts(model: nn.Module, scope: str) -> tuple[int, int, int, int]:
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    weights = [weight_of(module) for _, module in scope_modules(model, scope)]
    return total, nonzero, sum(w.numel() for w in weights), sum(int(torch.count_nonzero(w)) for w in weights)


def sparsity_report(model: nn.Module, scope: str, original: nn.Module | None = None) -> dict[str, float]:
    """What the model holds: params total/nonzero over the whole model and over the pruned scope.

    sparsity_* = zero / total of this model. compression_rate_* = params of the original (this model itself if not
    given) / nonzero params of this one, so unstructured zeros and removed channels count alike.
    """
    total, nonzero, scope_total, scope_nonzero = _counts(model, scope)
    original_total, _, original_scope, _ = (
        _counts(original, scope) if original is not None else (total, 0, scope_total, 0)
    )
    return {
        "params": float(total),
        "params_nonzero": float(nonzero),
        "scope_params": float(scope_total),
        "scope_params_nonzero": float(scope_nonzero),
        "sparsity": 1 - nonzero / total,
        "sparsity_scope": 1 - scope_nonzero / scope_total if scope_total else 0.0,
        "compression_rate_model": original_total / max(nonzero, 1),
        "compression_rate_scope": original_scope / max(scope_nonzero, 1),
    }


# --------------------------------------------------------------------------------------------------------------------
# Masks (pure functions).


def unstructured_masks(
    scores: list[torch.Tensor], amount: float, granularity: str, keep: list[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """Boolean keep-masks that remove `amount` of the weights, per tensor (layerwise) or over all (global).

    `keep` are the masks of an earlier step: weights pruned then stay pruned (their score is -inf).
    The count removed rounds like torch.nn.utils.prune: round(amount * size).
    """
    if keep is not None:
        scores = [torch.where(k, s.float(), torch.tensor(-math.inf)) for s, k in zip(scores, keep, strict=True)]
    if granularity == "layerwise":
        return [_lowest_removed(score.flatten(), round(amount * score.numel())).view_as(score) for score in scores]
    flat = _lowest_removed(torch.cat([s.flatten() for s in scores]), round(amount * sum(s.numel() for s in scores)))
    return [mask.view_as(score) for mask, score in zip(flat.split([s.numel() for s in scores]), scores, strict=True)]


def _lowest_removed(score: torch.Tensor, count: int) -> torch.Tensor:
    mask = torch.ones_like(score, dtype=torch.bool)
    if count > 0:
        mask[torch.topk(score.float(), count, largest=False).indices] = False
    return mask


def prune_step(
    model: nn.Module, pruner: UnstructuredPruner, config: PruningConfig, compression_rate: float, seed: int
) -> list[tuple[nn.Module, str]]:
    """Attach masks reaching `compression_rate` over the scope; returns the masked (module, 'weight') pairs."""
    modules = [module for _, module in scope_modules(model, config.scope)]
    generator = torch.Generator().manual_seed(seed)
    weights = [weight_of(module).detach().cpu() for module in modules]
    scores = [pruner.importance(w, generator) for w in weights]
    masks = unstructured_masks(scores, 1 - 1 / compression_rate, config.granularity, keep=[w != 0 for w in weights])
    for module, mask in zip(modules, masks, strict=True):
        prune.custom_from_mask(module, "weight", mask.to(weight_of(module).device))
    return [(module, "weight") for module in modules]


def make_permanent(masked: list[tuple[nn.Module, str]]) -> None:
    for module, name in masked:
        prune.remove(module, name)


def finetune_options(config: PruningConfig, train: TrainConfig) -> FitOptions:
    """Fine-tuning after each pruning step: constant learning rate, the training batch size unless set."""
    tune = config.finetune
    return FitOptions(
        epochs=tune.epochs,
        lr=tune.lr,
        batch_size=tune.batch_size or train.batch_size,
        optimizer=tune.optimizer,
        max_steps=tune.steps,
        validation_fraction=tune.validation_fraction,
        patience=tune.early_stop_patience,
    )


def pruned_model_key(base_key: str, config: PruningConfig, compression_rate: float, train: TrainConfig) -> str:
    pruner = pruners.get(config.method)
    return content_key(
        {
            "base": base_key,
            "pruning": config.model_dump(exclude={"compression_rates"}),
            "steps": schedule_steps(compression_rate, config.schedule),
            "batch_size": finetune_options(config, train).batch_size,
            "version": pruner.version,
            "format": PRUNED_CACHE_FORMAT,
            "libraries": library_versions(),
        }
    )


# --------------------------------------------------------------------------------------------------------------------
# Structured (channel) pruning through torch-pruning, and the record of a pruned model's structure.

# Layer attributes that change when channels are removed; with the tensor shapes they let a timm model be rebuilt.
_STRUCTURE_ATTRIBUTES = (
    "in_channels",
    "out_channels",
    "groups",
    "num_features",
    "in_features",
    "out_features",
    "normalized_shape",
    "num_channels",
    "head_hidden_size",
    "embed_dim",
    "num_heads",
    "head_dim",
    "attn_dim",
    "scale",
)
PRUNED_CACHE_FORMAT = 2  # safetensors weights + JSON structure


def _remove_channels(
    model: nn.Module,
    pruner: StructuredPruner,
    config: PruningConfig,
    ratio: float,
    data: ImageData,
    seed: int,
    device: torch.device,
) -> None:
    import torch_pruning as tp

    torch.manual_seed(seed)
    model.to(device).eval()
    timm_net: Any = model  # a timm model: get_classifier, and attention blocks' qkv and num_heads
    ignored = [timm_net.get_classifier()]  # the classifier head is never pruned
    if config.scope == "conv":
        ignored += [m for m in model.modules() if isinstance(m, nn.Linear)]
    # timm attention (ViT, DeiT): prune within each head's dimensions, keeping the number of heads.
    attentions: list[Any] = [
        m
        for m in model.modules()
        if isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "num_heads", None), int)
    ]
    example_inputs = data.train_examples(slice(0, 2))[0].to(device)
    with warnings.catch_warnings():
        # ViT's cls_token and pos_embed are bare parameters; torch-pruning's default (prune their last dimension, the
        # embedding) is right, so its warning about them is only noise.
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        channel_pruner = tp.pruner.BasePruner(
            model,
            example_inputs,
            importance=pruner.importance_for(model, data, device),
            pruning_ratio=ratio,
            global_pruning=config.granularity == "global",
            max_pruning_ratio=0.95,
            ignored_layers=ignored,
            num_heads={m.qkv: m.num_heads for m in attentions},
            prune_head_dims=True,
            prune_num_heads=False,
        )
    if pruner.needs_gradients:
        model.zero_grad()
        x, y = data.train_examples(slice(0, 64))
        loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        loss.backward()
    channel_pruner.step()
    model.zero_grad(set_to_none=True)
    for attention in attentions:  # timm reshapes q, k, v with these attributes
        attention.head_dim = attention.qkv.out_features // (3 * attention.num_heads)
        attention.scale = attention.head_dim**-0.5
        if hasattr(attention, "attn_dim"):
            attention.attn_dim = attention.num_heads * attention.head_dim


@functools.cache
def unprunable_reason(
    model_name: str,
    method: str,
    scope: str,
    granularity: str,
    image_size: int,
    options: tuple[tuple[str, Any], ...] = (),
) -> str | None:
    """Why `method` cannot prune this architecture, found by pruning a randomly initialised copy once; None if it can.

    Run at plan time, so a suite fails before any training instead of mid-way.
    """
    config = PruningConfig(method=method, scope=scope, granularity=granularity, compression_rates=[2])
    return pruners.get(config.method).unprunable_reason(model_name, config, image_size, dict(options))


SCOPES = ("conv", "conv_linear", "all")


def prunability_error(
    model_name: str,
    method: str,
    scope: str,
    granularity: str,
    image_size: int,
    options: tuple[tuple[str, Any], ...] = (),
) -> str | None:
    """The message for a request `method` cannot carry out on this architecture (naming a scope that works), or None.

    Suites (at plan time) and `xbench profile` both use it, so a no-op prune is refused the same way everywhere.
    """
    reason = unprunable_reason(model_name, method, scope, granularity, image_size, options)
    if reason is None:
        return None
    working = [
        other
        for other in SCOPES
        if other != scope and unprunable_reason(model_name, method, other, granularity, image_size, options) is None
    ]
    hint = f"; use scope {working[0]!r}, which can" if working else ""
    return f"{method} cannot prune {model_name}: {reason}{hint}"


def achieved_rate_error(requested: float, achieved: float, tolerance: float, counted: str) -> str | None:
    """Why a pruned variant is not the one asked for: its compression rate misses the request by more than the
    method's `tolerance` (its kind's `rate_tolerance`)."""
    if abs(achieved / requested - 1) <= tolerance:
        return None
    return (
        f"pruning reached CR {achieved:.3g} ({counted}) where {requested:g} was asked for, more than the "
        f"{tolerance:.1%} tolerance off"
    )


def channel_pruned(
    model: nn.Module,
    pruner: StructuredPruner,
    config: PruningConfig,
    target_params: float,
    data: ImageData,
    seed: int,
    device: torch.device,
) -> tuple[nn.Module, float]:
    """A copy of `model` with channels removed until it has about `target_params` parameters, and the channel ratio.

    Users ask for a compression rate; torch-pruning takes a channel ratio, so the ratio is found by bisection
    (a channel ratio p removes about 1-(1-p)^2 of the parameters, but skip connections and the head make it uneven).
    """
    low, high = 0.0, 0.95
    best: tuple[float, nn.Module, float] | None = None
    pruner = pruner.prepared(model, data, device)
    for _ in range(30):
        ratio = (low + high) / 2
        candidate = copy.deepcopy(model)
        _remove_channels(candidate, pruner, config, ratio, data, seed, device)
        params = sum(p.numel() for p in candidate.parameters())
        error = abs(params / target_params - 1)
        if best is None or error < best[0]:
            best = (error, candidate, ratio)
        if error < StructuredPruner.rate_tolerance:
            break
        low, high = (ratio, high) if params > target_params else (low, ratio)
    assert best is not None
    return best[1], best[2]


def structure_of(model: nn.Module) -> dict[str, Any]:
    """Every module's tensor shapes and channel attributes: enough to rebuild the pruned timm model without pickle."""
    record = {}
    for name, module in model.named_modules():
        tensors = {**module._parameters, **module._buffers}
        shapes = {key: list(value.shape) for key, value in tensors.items() if value is not None}
        attributes = {
            key: getattr(module, key)
            for key in _STRUCTURE_ATTRIBUTES
            if isinstance(getattr(module, key, None), (int, float, tuple, list))
        }
        if shapes or attributes:
            record[name] = {"shapes": shapes, "attributes": attributes}
    return record


def rebuild(
    model_name: str, num_classes: int, structure: dict[str, Any], image_size: int | None = None, **options: Any
) -> nn.Module:
    """A timm model (created with the suite's `options`) reshaped to a recorded structure (its weights are then
    loaded from safetensors)."""
    model = timm_model(model_name, num_classes, image_size, **options)
    for name, record in structure.items():
        module = model.get_submodule(name)
        for key, shape in record["shapes"].items():
            old = module._parameters.get(key)
            buffer = module._buffers.get(key)
            if old is not None:
                module._parameters[key] = nn.Parameter(torch.empty(shape, dtype=old.dtype), old.requires_grad)
            elif buffer is not None:
                module._buffers[key] = torch.empty(shape, dtype=buffer.dtype)
        for key, value in record["attributes"].items():
            setattr(module, key, tuple(value) if isinstance(value, list) else value)
    return model


def _load_variant(
    model_name: str, data: ImageData, weights: Path, options: dict[str, Any], cache: Cache
) -> nn.Module | None:
    """A cached pruned variant, or None when it is absent or damaged (then removed, to be computed again)."""

    def read(path: Path) -> nn.Module:
        structure = json.loads(path.with_suffix(".json").read_text())
        model = rebuild(model_name, data.num_classes, structure, data.image_size, **options)
        load_model(model, str(path), device="cpu")
        return model

    return cache.read(weights, read, weights.with_suffix(".json"))


def pruned_model(base: nn.Module, base_key: str, model: ModelConfig, request: PruneRequest, cache: Cache) -> nn.Module:
    """`base` (the trained `model`, cached under `base_key`) pruned as `request` asks, each step fine-tuned and cached
    (unstructured masks permanent).

    Unstructured rates count the pruned scope; structured rates count the whole model against the base model.
    An iterative schedule resumes from the furthest step already in the cache.
    """
    config, data, device = request.config, request.data, request.device
    pruner = pruners.get(config.method)
    steps = schedule_steps(request.compression_rate, config.schedule)
    paths = [
        cache.path("pruned", pruned_model_key(base_key, config, step, model.train), ".safetensors") for step in steps
    ]
    # Resume from the furthest step in the cache that loads; a damaged one is removed and computed again.
    done, current = -1, None
    for index in reversed(range(len(paths))):
        current = _load_variant(model.name, data, paths[index], model.options or {}, cache)
        if current is not None:
            done = index
            break
    if current is None:
        current = copy.deepcopy(base).cpu()
    base_params = sum(p.numel() for p in base.parameters())
    for step, path in zip(steps[done + 1 :], paths[done + 1 :], strict=True):
        current.to(device)
        step_request = dataclasses.replace(request, compression_rate=step, base_params=base_params)
        current, masked = pruner.prune_step(current, step_request)
        if config.finetune.epochs or config.finetune.steps:
            options = finetune_options(config, model.train)
            fit(current, data, options, request.seed, device, f"finetune {model.name} CR {step:g}")
        make_permanent(masked)
        current.cpu()
        # The structure first: a weights file present means the variant is complete.
        cache.write_json(path.with_suffix(".json"), structure_of(current))
        cache.write(path, functools.partial(_save_model, current))
    return current.to(device).eval()


def _save_model(model: nn.Module, target: Path) -> None:
    save_model(model, str(target))
