"""The pruning methods, one module per family (`unstructured`, `channel`, `lrp`, `nm_2_4`); the kinds, the registry
and the decorators are in `_base`, the machinery they share in `xbench.components.pruning`. The registry imports the
built-in modules the first time it is read."""

from xbench.components.pruners._base import (
    Pruner,
    PruneRequest,
    StructuredPruner,
    UnstructuredPruner,
    pruners,
    structured_pruner,
    unstructured_pruner,
)

__all__ = [
    "PruneRequest",
    "Pruner",
    "StructuredPruner",
    "UnstructuredPruner",
    "pruners",
    "structured_pruner",
    "unstructured_pruner",
]
