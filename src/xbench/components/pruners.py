"""The pruning methods: the registry and the unstructured and channel kinds (`pruning.py`), 2:4 semi-structured
sparsity (`nm_sparsity.py`) and pruning by LRP relevance (`lrp_pruning.py`). Import `pruners` from here to see them
all."""

from __future__ import annotations

from xbench.components import lrp_pruning, nm_sparsity  # noqa: F401  (their methods register on import)
from xbench.components.pruning import Pruner, pruners, structured_pruner, unstructured_pruner

__all__ = ["Pruner", "pruners", "structured_pruner", "unstructured_pruner"]
