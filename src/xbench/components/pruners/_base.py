"""The pruning methods' kinds, their registry and the decorators that register them. A kind is a class: how one
step prunes a model, what its compression rate counts, how far the achieved rate may miss the request, which
architectures it cannot prune. A new method is one module (here, or a plug-in named in a suite's `plugins:`) that
registers an instance, by `@unstructured_pruner(name)` / `@structured_pruner(name)` or `pruners.register(name)(...)`;
the registry imports the built-in modules (`BUILT_IN`) the first time it is read.

The steps the kinds take (masks, channel removal, accounting) are `xbench.components.pruning`'s, imported when a
step runs: that module needs this registry, so this one cannot need it at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from xbench.components.data import ImageData
from xbench.components.models import timm_model
from xbench.core.registry import Registry
from xbench.core.suite import PerfConfig, PruningConfig

BUILT_IN = (
    "xbench.components.pruners.unstructured",
    "xbench.components.pruners.channel",
    "xbench.components.pruners.lrp",
    "xbench.components.pruners.nm_2_4",
)

Importance = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
ChannelImportance = Callable[[], Any]  # returns a torch_pruning Importance


@dataclass(frozen=True)
class PruneRequest:
    """What one pruning step is asked for, besides the model it prunes: the method's configuration, the compression
    rate to reach, the data a kind that ranks by what the model computes uses (LRP relevance, Taylor gradients), the
    seed of the step's randomness, the device, and the unpruned model's parameter count (kinds whose rate counts the
    whole model measure it against that)."""

    config: PruningConfig
    compression_rate: float
    data: ImageData
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    base_params: int = 0


class TimedFigures(Protocol):
    values: dict[str, float]
    missing: dict[str, str]


# latency(model, image_size, batch_size, device, settings): passed in by the caller, since timing is a later stage
LatencyTimer = Callable[[nn.Module, int, int, torch.device, PerfConfig], TimedFigures]


@dataclass(frozen=True)
class Pruner:
    """A pruning method. Its kind is its class: how one step prunes a model, what its compression rate counts, how
    far the achieved rate may miss the request, and which architectures it cannot prune. A new kind is a subclass in
    its own file, registered with `pruners.register(name)(MyKind(...))` (`nm_2_4.py` and `lrp.py` are two)."""

    name: str
    version: str
    description: str

    kind: ClassVar[str] = "abstract"
    rate_tolerance: ClassVar[float] = 0.01  # relative miss of the requested compression rate that is accepted

    @property
    def structured(self) -> bool:
        return self.kind == "structured"

    def prune_step(self, model: nn.Module, request: PruneRequest) -> tuple[nn.Module, list[tuple[nn.Module, str]]]:
        """Prune `model` to `request.compression_rate` (of the base model's `base_params` where the kind counts the
        whole model); returns the pruned model and the masked (module, name) pairs to make permanent after
        fine-tuning."""
        raise NotImplementedError(f"pruning kind {self.kind!r} has no prune_step")

    def unprunable_reason(
        self, model_name: str, config: PruningConfig, image_size: int, options: dict[str, Any]
    ) -> str | None:
        """Why this method cannot prune the architecture (checked at plan time), or None."""
        return None

    def achieved_rate(self, pruned: nn.Module, original: nn.Module, config: PruningConfig) -> tuple[float, str]:
        """(the compression rate `pruned` reached, what that rate counts), as this kind counts it."""
        raise NotImplementedError(f"pruning kind {self.kind!r} has no achieved_rate")

    def compression_rate_error(self, compression_rate: float) -> str | None:
        """Why this method cannot reach `compression_rate` on any model (checked at plan time), or None."""
        return None

    def sparse_figures(
        self, model: nn.Module, image_size: int, device: torch.device, settings: PerfConfig, timer: LatencyTimer
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Speed figures with kernels made for this kind's sparsity (values, and the reason for each one missing),
        timed by `timer` (the measure stage's `latency`); none for kinds whose pruned models run as they are."""
        return {}, {}


@dataclass(frozen=True)
class UnstructuredPruner(Pruner):
    """`importance` scores each weight and the lowest are zeroed by masks (the compression rate counts the pruned
    scope)."""

    importance: Importance
    kind: ClassVar[str] = "unstructured"
    # Unstructured masks round each layer's count (torch.nn.utils.prune's rule), so a small scope misses a little.
    rate_tolerance: ClassVar[float] = 0.01

    def prune_step(self, model: nn.Module, request: PruneRequest) -> tuple[nn.Module, list[tuple[nn.Module, str]]]:
        from xbench.components.pruning import prune_step

        return model, prune_step(model, self, request.config, request.compression_rate, request.seed)

    def achieved_rate(self, pruned: nn.Module, original: nn.Module, config: PruningConfig) -> tuple[float, str]:
        from xbench.components.pruning import sparsity_report

        rate = sparsity_report(pruned, config.scope, original=original)["compression_rate_scope"]
        return rate, f"nonzero weights in scope {config.scope}"


@dataclass(frozen=True)
class StructuredPruner(Pruner):
    """`channel_importance` makes a torch-pruning importance and whole channels are removed (the compression rate
    counts the whole model: params(original) / params(pruned))."""

    channel_importance: ChannelImportance
    needs_gradients: bool = False
    needs_batchnorm: bool = False
    kind: ClassVar[str] = "structured"
    # The channel-ratio search stops this close to the requested parameter count.
    rate_tolerance: ClassVar[float] = 0.005

    def prune_step(self, model: nn.Module, request: PruneRequest) -> tuple[nn.Module, list[tuple[nn.Module, str]]]:
        from xbench.components.pruning import channel_pruned

        target = request.base_params / request.compression_rate
        pruned, _ = channel_pruned(model, self, request.config, target, request.data, request.seed, request.device)
        return pruned, []

    def prepared(self, model: nn.Module, data: ImageData, device: torch.device) -> StructuredPruner:
        """This method ready to rank `model`'s channels: itself, or (for a kind whose ranking needs a pass over data,
        such as LRP relevance) a copy holding what that pass found, so the channel-ratio search makes it once."""
        return self

    def importance_for(self, model: nn.Module, data: ImageData, device: torch.device) -> Any:
        """The torch-pruning importance that ranks `model`'s channels (the method's factory; a kind that ranks by what
        the model computes on data, such as LRP relevance, overrides this)."""
        return self.channel_importance()

    def achieved_rate(self, pruned: nn.Module, original: nn.Module, config: PruningConfig) -> tuple[float, str]:
        params = sum(p.numel() for p in original.parameters())
        return params / sum(p.numel() for p in pruned.parameters()), "params of the whole model"

    def unprunable_reason(
        self, model_name: str, config: PruningConfig, image_size: int, options: dict[str, Any]
    ) -> str | None:
        from xbench.components.pruning import _remove_channels

        model = timm_model(model_name, 2, image_size, **options)
        if self.needs_batchnorm and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            return "it has no BatchNorm layers, whose scales this method ranks channels by"
        probe = ImageData.random(4, image_size, num_classes=2)
        before = sum(p.numel() for p in model.parameters())
        try:
            _remove_channels(model, self, config, 0.25, probe, 0, torch.device("cpu"))
            with torch.no_grad():
                model(probe.eval_x[:1])
        except Exception as exc:  # the reason is the message, whatever torch-pruning or the model raised
            return f"torch-pruning failed on it ({type(exc).__name__}: {exc})"
        if sum(p.numel() for p in model.parameters()) >= before:
            return f"no channel could be removed with scope {config.scope!r}"
        return None


pruners: Registry[Pruner] = Registry("pruning method", modules=BUILT_IN)


def _first_line(fn: Callable[..., Any]) -> str:
    doc = (fn.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def unstructured_pruner(name: str, version: str = "1") -> Callable[[Importance], Importance]:
    def decorator(importance: Importance) -> Importance:
        pruners.register(name)(UnstructuredPruner(name, version, _first_line(importance), importance=importance))
        return importance

    return decorator


def structured_pruner(
    name: str, needs_gradients: bool = False, needs_batchnorm: bool = False, version: str = "1"
) -> Callable[[ChannelImportance], ChannelImportance]:
    def decorator(factory: ChannelImportance) -> ChannelImportance:
        pruners.register(name)(
            StructuredPruner(
                name,
                version,
                _first_line(factory),
                channel_importance=factory,
                needs_gradients=needs_gradients,
                needs_batchnorm=needs_batchnorm,
            )
        )
        return factory

    return decorator
