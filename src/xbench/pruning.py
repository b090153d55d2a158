"""Pruning: unstructured masks through torch.nn.utils.prune, oneshot or iterative with fine-tuning, cached models.

Iterative schedule after Merkle et al., "Less is More: The Influence of Pruning on the Explainability of CNNs"
(IEEE Access 2025): each step halves the weights that remain (CR 2 -> 4 -> 8 ...) and fine-tunes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
from safetensors.torch import load_model, save_model
from torch import nn
from torch.nn.utils import prune

from xbench.cache import Cache, content_key
from xbench.data import ImageData
from xbench.models import fit
from xbench.registry import Registry
from xbench.suite import PruningConfig, TrainConfig

Importance = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Pruner:
    """An unstructured pruner: a score per weight; the lowest-scoring weights are removed."""

    name: str
    importance: Importance
    version: str
    description: str


pruners: Registry[Pruner] = Registry("pruning method")


def unstructured_pruner(name: str, version: str = "1") -> Callable[[Importance], Importance]:
    def decorator(importance: Importance) -> Importance:
        doc = (importance.__doc__ or "").strip().splitlines()
        pruners.register(name)(Pruner(name, importance, version, doc[0] if doc else ""))
        return importance

    return decorator


@unstructured_pruner("magnitude")
def magnitude(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """L1 unstructured: remove the weights of smallest absolute value."""
    return weight.abs()


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


def sparsity_report(model: nn.Module, scope: str) -> dict[str, float]:
    """What the model holds: params total/nonzero over the whole model and over the pruned scope.

    cr_* = total / nonzero (1 = dense); sparsity_* = zero / total.
    """
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    weights = [module.weight for _, module in scope_modules(model, scope)]
    scope_total = sum(w.numel() for w in weights)
    scope_nonzero = sum(int(torch.count_nonzero(w)) for w in weights)
    return {
        "params": float(total),
        "params_nonzero": float(nonzero),
        "scope_params": float(scope_total),
        "scope_params_nonzero": float(scope_nonzero),
        "sparsity": 1 - nonzero / total,
        "sparsity_scope": 1 - scope_nonzero / scope_total if scope_total else 0.0,
        "compression_rate_model": total / max(nonzero, 1),
        "compression_rate_scope": scope_total / max(scope_nonzero, 1),
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


def schedule_steps(compression_rate: float, schedule: str) -> list[float]:
    """The CRs a model passes through: [CR] oneshot; 2, 4, 8, ... then CR when iterative."""
    if schedule == "oneshot" or compression_rate <= 2:
        return [compression_rate]
    steps = [2.0**k for k in range(1, math.ceil(math.log2(compression_rate)))]
    return [s for s in steps if s < compression_rate] + [compression_rate]


def prune_step(
    model: nn.Module, pruner: Pruner, config: PruningConfig, compression_rate: float, seed: int
) -> list[tuple[nn.Module, str]]:
    """Attach masks reaching `compression_rate` over the scope; returns the masked (module, 'weight') pairs."""
    modules = [module for _, module in scope_modules(model, config.scope)]
    generator = torch.Generator().manual_seed(seed)
    weights = [module.weight.detach().cpu() for module in modules]
    scores = [pruner.importance(w, generator) for w in weights]
    masks = unstructured_masks(scores, 1 - 1 / compression_rate, config.granularity, keep=[w != 0 for w in weights])
    for module, mask in zip(modules, masks, strict=True):
        prune.custom_from_mask(module, "weight", mask.to(module.weight.device))
    return [(module, "weight") for module in modules]


def make_permanent(masked: list[tuple[nn.Module, str]]) -> None:
    for module, name in masked:
        prune.remove(module, name)


def finetune_batch_size(config: PruningConfig, train: TrainConfig) -> int:
    return config.finetune.batch_size or train.batch_size


def pruned_model_key(base_key: str, config: PruningConfig, compression_rate: float, train: TrainConfig) -> str:
    pruner = pruners.get(config.method)
    return content_key(
        {
            "base": base_key,
            "pruning": config.model_dump(exclude={"compression_rates"}),
            "steps": schedule_steps(compression_rate, config.schedule),
            "batch_size": finetune_batch_size(config, train),
            "version": pruner.version,
        }
    )


def pruned_model(
    base: nn.Module,
    base_key: str,
    model_name: str,
    config: PruningConfig,
    compression_rate: float,
    data: ImageData,
    train: TrainConfig,
    seed: int,
    cache: Cache,
    device: torch.device,
) -> nn.Module:
    """The base model pruned to `compression_rate` over the scope (masks permanent), each step fine-tuned and cached.

    An iterative schedule resumes from the furthest step already in the cache.
    """
    pruner = pruners.get(config.method)
    steps = schedule_steps(compression_rate, config.schedule)
    paths = [cache.path("pruned", pruned_model_key(base_key, config, step, train), ".safetensors") for step in steps]
    done = max((index for index, path in enumerate(paths) if path.exists()), default=-1)
    current = timm.create_model(model_name, pretrained=False, num_classes=data.num_classes)
    if done >= 0:
        load_model(current, str(paths[done]), device="cpu")
    else:
        current.load_state_dict(base.state_dict())
    for step, path in zip(steps[done + 1 :], paths[done + 1 :], strict=True):
        current.to(device)
        masked = prune_step(current, pruner, config, step, seed)
        if config.finetune.epochs:
            finetune = config.finetune
            fit(
                current, data, epochs=finetune.epochs, lr=finetune.lr, batch_size=finetune_batch_size(config, train),
                seed=seed, device=device, description=f"finetune {model_name} CR {step:g}",
            )  # fmt: skip
        make_permanent(masked)
        current.cpu()
        cache.write(path, lambda target, m=current: save_model(m, str(target)))
    return current.to(device).eval()
