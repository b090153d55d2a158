"""The names a plug-in author imports: stable across releases, wherever the implementation lives.

A plug-in is one module (in a suite's `plugins:` list or an `xbench.plugins` entry point) that registers with these
decorators, for example::

    from xbench.api import explainer

    @explainer("input_magnitude", "my_lab")
    def input_magnitude(model, x, targets, params):
        \"\"\"|x| summed over channels.\"\"\"
        return x.abs().sum(dim=1, keepdim=True)

Importing this module imports torch (the plug-in kinds are torch code); the plan does not need it.
"""

from __future__ import annotations

from xbench.components.datasets import Dataset, ImageData, dataset, datasets
from xbench.components.explainers import Explainer, explainer, explainers
from xbench.components.pruners import Pruner, PruneRequest, pruners, structured_pruner, unstructured_pruner
from xbench.components.quantizers import QuantizedModel, Quantizer, quantizers
from xbench.components.quantizers import register as quantizer
from xbench.core.cells import Cell
from xbench.core.errors import XbenchInputError
from xbench.core.registry import Registry, UnknownNameError
from xbench.core.results import CellResult, MetricResult
from xbench.core.suite import Suite, load_suite
from xbench.measure.engine import EngineMetric, engine_metric, engine_metrics
from xbench.measure.metrics import Metric, metrics, quantus_metric, torch_metric

__all__ = [
    "Cell",
    "CellResult",
    "Dataset",
    "EngineMetric",
    "Explainer",
    "ImageData",
    "Metric",
    "MetricResult",
    "PruneRequest",
    "Pruner",
    "QuantizedModel",
    "Quantizer",
    "Registry",
    "Suite",
    "UnknownNameError",
    "XbenchInputError",
    "dataset",
    "datasets",
    "engine_metric",
    "engine_metrics",
    "explainer",
    "explainers",
    "load_suite",
    "metrics",
    "pruners",
    "quantizer",
    "quantizers",
    "quantus_metric",
    "structured_pruner",
    "torch_metric",
    "unstructured_pruner",
]
