"""The explainers, one module per family (`captum_methods`, `cam_methods`, `controls`, `lrp`, `attention`); the
plug-in record, its registry, the decorator and how attributions are computed are in `_base`. The registry imports
the built-in modules the first time it is read."""

from xbench.components.explainers._base import (
    Explainer,
    ExplainFn,
    default_target_layer,
    explain,
    explain_tensor,
    explainer,
    explainers,
    is_token_model,
    postprocess,
    quantus_explain_func,
)

__all__ = [
    "ExplainFn",
    "Explainer",
    "default_target_layer",
    "explain",
    "explain_tensor",
    "explainer",
    "explainers",
    "is_token_model",
    "postprocess",
    "quantus_explain_func",
]
