"""Unstructured pruning by weight scores: masks zero the lowest-scoring weights of the scope (the compression rate
counts the pruned scope)."""

from __future__ import annotations

import torch

from xbench.components.pruners._base import unstructured_pruner


@unstructured_pruner("magnitude")
def magnitude(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """L1 unstructured: remove the weights of smallest absolute value."""
    return weight.abs()


@unstructured_pruner("random")
def random(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random unstructured: remove weights chosen uniformly at random (the baseline every pruner must beat)."""
    return torch.rand(weight.shape, generator=generator)
