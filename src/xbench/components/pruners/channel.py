"""Channel pruning with torch-pruning's DepGraph: whole channels removed by an importance criterion (the compression
rate counts the whole model's parameters)."""

from __future__ import annotations

from typing import Any

from xbench.components.pruners._base import structured_pruner


@structured_pruner("channel_magnitude")
def channel_magnitude() -> Any:
    """Channel pruning by the L1 norm of each DepGraph group (Li et al. 2017, Fang et al. 2023)."""
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=1)


@structured_pruner("channel_taylor", needs_gradients=True)
def channel_taylor() -> Any:
    """Channel pruning by first-order Taylor importance, |weight x gradient| (Molchanov et al. 2019)."""
    import torch_pruning as tp

    return tp.importance.GroupTaylorImportance()


@structured_pruner("channel_bn_scale", needs_batchnorm=True)
def channel_bn_scale() -> Any:
    """Channel pruning by the magnitude of BatchNorm scale factors (Liu et al. 2017, network slimming)."""
    import torch_pruning as tp

    return tp.importance.BNScaleImportance()


@structured_pruner("channel_random")
def channel_random() -> Any:
    """Channel pruning of randomly chosen channels (the structured baseline)."""
    import torch_pruning as tp

    return tp.importance.RandomImportance()
