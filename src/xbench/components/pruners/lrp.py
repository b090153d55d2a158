"""Pruning by explaining: weights and channels ranked by their LRP relevance on a reference batch (Yeom et al. 2021,
"Pruning by explaining"; Hatefi et al. 2024, "Pruning by explaining revisited").

Relevance comes from Zennit's EpsilonPlusFlat composite with the canonizers the LRP explainers use (BatchNorm merged
into its conv, timm ResNet residual sums made explicit), on a copy of the model; the output relevance is the one-hot
true class, so every reference image carries relevance 1. For each conv and linear layer, with input a, output
z and output relevance R (what Zennit passes back to it):

- a channel's relevance is R summed over the reference images and positions (Yeom et al.'s filter criterion);
- a weight's relevance is its share of the outputs' relevance by the epsilon rule, w_ij * sum a_i R_j / z_j.

Relevance can be negative (evidence against the class); what is removed is what carries the least, |R| nearest 0.
The reference batch is the first 64 training images, unaugmented: the same for every seed's model, as magnitude
pruning's criterion is the model alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from xbench.components.data import ImageData
from xbench.components.explainers.lrp import lrp_canonizers, lrp_unsupported
from xbench.components.pruners._base import PruneRequest, StructuredPruner, UnstructuredPruner, pruners
from xbench.components.pruning import scope_modules, unstructured_masks, weight_of
from xbench.core.suite import PruningConfig

REFERENCE_IMAGES = 64
_STABILISER = 1e-9  # keeps R / z finite where an output is exactly 0 (its relevance is then 0 too)


@dataclass(frozen=True)
class Relevance:
    """Summed LRP relevance per layer (by module name): of each output channel, and of each weight."""

    channels: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor]


def lrp_relevance(model: nn.Module, data: ImageData, device: torch.device, images: int = REFERENCE_IMAGES) -> Relevance:
    """Channel and weight relevance of every conv and linear layer of `model` on the reference batch."""
    import copy

    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat

    copied = copy.deepcopy(model).to(device).eval()
    for module in copied.modules():  # backward hooks need out-of-place activations
        if getattr(module, "inplace", False):
            setattr(module, "inplace", False)  # noqa: B010
    layers = {name: m for name, m in copied.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}
    channels: dict[str, torch.Tensor] = {}
    weights: dict[str, torch.Tensor] = {}
    x, y = data.train_examples(slice(0, images))
    x, y = x.to(device), y.to(device)
    recorded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    relevance_out: dict[str, torch.Tensor] = {}

    def recorder(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            recorded[name] = (inputs[0].detach(), output.detach())
            if output.requires_grad:
                output.register_hook(lambda grad: relevance_out.__setitem__(name, grad.detach()))

        return hook

    composite = EpsilonPlusFlat(canonizers=lrp_canonizers(copied))
    with Gradient(model=copied, composite=composite) as attributor:
        # registered after Zennit's hooks, so the gradient reaching each output is the relevance its rule receives
        handles = [layer.register_forward_hook(recorder(name)) for name, layer in layers.items()]
        try:
            attributor(
                x.detach().requires_grad_(),
                lambda logits: nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype),
            )
        finally:
            for handle in handles:
                handle.remove()
        # read the (BatchNorm-merged) weights while the canonizers hold them
        for name, layer in layers.items():
            if name not in relevance_out:
                continue
            a, z = recorded[name]
            relevance = relevance_out[name]
            channels[name] = relevance.sum(dim=[d for d in range(relevance.ndim) if d != 1]).cpu()
            share = relevance / (z + _STABILISER * torch.where(z >= 0, 1.0, -1.0))
            weights[name] = (weight_of(layer).detach() * _input_gradient(layer, a, share)).cpu()
    return Relevance(channels, weights)


def _input_gradient(layer: nn.Module, a: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """sum over images (and positions) of a_i * share_j for each weight w_ij: the gradient of sum(z * share) with
    respect to the weight."""
    weight = weight_of(layer)
    if isinstance(layer, nn.Linear):
        return share.reshape(-1, share.shape[-1]).t() @ a.reshape(-1, a.shape[-1])
    from torch.nn.grad import conv2d_weight

    conv: Any = layer
    return conv2d_weight(
        a, weight.shape, share, stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups
    )


def _lrp_unprunable(model_name: str, image_size: int, options: dict[str, Any]) -> str | None:
    from xbench.components.models import timm_model

    return lrp_unsupported(timm_model(model_name, 2, image_size, **options))


@dataclass(frozen=True)
class LRPPruner(UnstructuredPruner):
    """Unstructured: the weights of least |LRP relevance| are masked (the compression rate counts the pruned scope)."""

    def prune_step(self, model: nn.Module, request: PruneRequest) -> tuple[nn.Module, list[tuple[nn.Module, str]]]:
        relevance = lrp_relevance(model, request.data, request.device)
        config, compression_rate = request.config, request.compression_rate
        named = scope_modules(model, config.scope)
        missing = [name for name, _ in named if name not in relevance.weights]
        if missing:
            raise RuntimeError(f"no LRP relevance reached {', '.join(missing)} (outside the model's forward pass?)")
        weights = [weight_of(module).detach().cpu() for _, module in named]
        scores = [relevance.weights[name].abs() for name, _ in named]
        masks = unstructured_masks(scores, 1 - 1 / compression_rate, config.granularity, keep=[w != 0 for w in weights])
        for (_, module), mask in zip(named, masks, strict=True):
            prune.custom_from_mask(module, "weight", mask.to(weight_of(module).device))
        return model, [(module, "weight") for _, module in named]

    def unprunable_reason(
        self, model_name: str, config: PruningConfig, image_size: int, options: dict[str, Any]
    ) -> str | None:
        return _lrp_unprunable(model_name, image_size, options)


@dataclass(frozen=True)
class ChannelLRPPruner(StructuredPruner):
    """Structured: DepGraph groups ranked by the LRP relevance of their channels (the compression rate counts the
    whole model)."""

    relevance: Relevance | None = None

    def prepared(self, model: nn.Module, data: ImageData, device: torch.device) -> ChannelLRPPruner:
        # relevance once, on the model before this step; each candidate of the channel-ratio search is a copy of it
        return dataclasses.replace(self, relevance=lrp_relevance(model, data, device))

    def importance_for(self, model: nn.Module, data: ImageData, device: torch.device) -> Any:
        relevance = self.relevance if self.relevance is not None else lrp_relevance(model, data, device)
        return channel_relevance_importance(relevance.channels, {id(m): n for n, m in model.named_modules()})

    def unprunable_reason(
        self, model_name: str, config: PruningConfig, image_size: int, options: dict[str, Any]
    ) -> str | None:
        return _lrp_unprunable(model_name, image_size, options) or super().unprunable_reason(
            model_name, config, image_size, options
        )


def channel_relevance_importance(channels: dict[str, torch.Tensor], names: dict[int, str]) -> Any:
    """A torch-pruning importance: a group's channels scored by the mean |relevance| of the conv and linear outputs
    they remove (torch-pruning's group mean, then its mean normaliser, as for magnitude)."""
    import torch_pruning as tp
    from torch_pruning.pruner import function

    class GroupRelevanceImportance(tp.importance.GroupMagnitudeImportance):
        @torch.no_grad()
        def __call__(self, group: Any) -> torch.Tensor | None:
            scores, indices = [], []
            for position, (dependency, idxs) in enumerate(group):
                name = names.get(id(dependency.layer))
                if name not in channels or dependency.pruning_fn not in (
                    function.prune_conv_out_channels,
                    function.prune_linear_out_channels,
                ):
                    continue
                scores.append(channels[name].abs()[idxs])
                indices.append(group[position].root_idxs)
            if not scores:
                return None
            return self._normalize(self._reduce(scores, indices), self.normalizer)

    return GroupRelevanceImportance()


def _relevance_importance() -> Any:
    raise RuntimeError("channel_lrp ranks channels of a model on data: its importance comes from importance_for")


pruners.register("lrp")(
    LRPPruner(
        "lrp",
        "1",
        "LRP unstructured: remove the weights of least |LRP relevance| on a reference batch (Hatefi et al. 2024).",
        importance=lambda weight, generator: weight.abs(),  # unused: prune_step ranks by relevance
    )
)
pruners.register("channel_lrp")(
    ChannelLRPPruner(
        "channel_lrp",
        "1",
        "Channel pruning by the LRP relevance of each DepGraph group on a reference batch (Yeom et al. 2021).",
        channel_importance=_relevance_importance,
    )
)
