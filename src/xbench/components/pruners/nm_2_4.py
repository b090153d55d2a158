"""N:M semi-structured sparsity (2:4 by default): in every group of M consecutive weights along a layer's reduction
dimension, the N of largest magnitude are kept (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks").

The reduction dimension is a Linear layer's input features, and a convolution's (in_channels/groups x kh x kw),
the K of the GEMM the convolution becomes: the dimension NVIDIA's sparse tensor cores need the pattern along. A layer
whose reduction dimension is not a multiple of M (a stem conv on 3 channels, for instance) stays dense; the
compression rate counts the layers in scope that carry the pattern, and says so.

On CUDA GPUs with sparse tensor cores (compute capability 8.0 or newer), the latency is also measured with torch's
semi-structured sparse tensors in the Linear layers (`torch.sparse.to_sparse_semi_structured`); elsewhere the figure
says why it is missing: the model then runs dense, and 2:4 zeros save nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import prune

from xbench.components.pruners._base import LatencyTimer, PruneRequest, UnstructuredPruner, pruners
from xbench.components.pruning import scope_modules, weight_of
from xbench.core.suite import PerfConfig, PruningConfig


def reduction_size(weight: torch.Tensor) -> int:
    """The length of the dimension N:M groups run along: everything but the output dimension."""
    return weight[0].numel()


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean keep-mask: in each group of `m` consecutive weights along the reduction dimension, the `n` of largest
    magnitude (of equal ones, the first)."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    groups = rows.abs().reshape(rows.shape[0], -1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.argsort(dim=-1, descending=True, stable=True)[..., :n], True)
    return keep.reshape(weight.shape)


def follows_pattern(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether at most `n` of every `m` consecutive weights along the reduction dimension are nonzero."""
    if reduction_size(weight) % m:
        return False
    groups = weight.detach().reshape(weight.shape[0], -1, m)
    return bool((groups.count_nonzero(dim=-1) <= n).all())


@dataclass(frozen=True)
class SemiStructuredPruner(UnstructuredPruner):
    """N:M sparsity: masks like unstructured pruning, with the pattern fixed by N and M, so one compression rate
    (M / N over the layers that carry it) is the only one it reaches."""

    n: int = 2
    m: int = 4
    kind: ClassVar[str] = "semi-structured"

    @property
    def pattern_rate(self) -> float:
        return self.m / self.n

    def patterned_modules(self, model: nn.Module, scope: str) -> list[nn.Module]:
        return [module for _, module in scope_modules(model, scope) if reduction_size(weight_of(module)) % self.m == 0]

    def compression_rate_error(self, compression_rate: float) -> str | None:
        if compression_rate in (1, self.pattern_rate):
            return None
        return (
            f"{self.name} keeps {self.n} of every {self.m} weights, so it reaches CR {self.pattern_rate:g} only (over "
            f"the layers it prunes); ask for compression_rates [1, {self.pattern_rate:g}], not {compression_rate:g}"
        )

    def prune_step(self, model: nn.Module, request: PruneRequest) -> tuple[nn.Module, list[tuple[nn.Module, str]]]:
        modules = self.patterned_modules(model, request.config.scope)
        for module in modules:
            prune.custom_from_mask(module, "weight", nm_mask(weight_of(module), self.n, self.m))
        return model, [(module, "weight") for module in modules]

    def achieved_rate(self, pruned: nn.Module, original: nn.Module, config: PruningConfig) -> tuple[float, str]:
        weights = [weight_of(module) for module in self.patterned_modules(pruned, config.scope)]
        total = sum(w.numel() for w in weights)
        nonzero = sum(int(torch.count_nonzero(w)) for w in weights)
        dense = len(scope_modules(pruned, config.scope)) - len(weights)
        return total / max(nonzero, 1), (
            f"nonzero weights of the {len(weights)} layers in scope {config.scope} whose reduction dimension is a "
            f"multiple of {self.m} ({dense} left dense)"
        )

    def unprunable_reason(
        self, model_name: str, config: PruningConfig, image_size: int, options: dict[str, Any]
    ) -> str | None:
        from xbench.components.models import timm_model

        model = timm_model(model_name, 2, image_size, **options)
        if not self.patterned_modules(model, config.scope):
            return f"no layer in scope {config.scope!r} has a reduction dimension that is a multiple of {self.m}"
        return None

    def sparse_figures(
        self, model: nn.Module, image_size: int, device: torch.device, settings: PerfConfig, timer: LatencyTimer
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Latency with semi-structured sparse kernels in the Linear layers that carry the pattern, against the same
        model dense in half precision, where the GPU has the kernels; otherwise the reason no such figure exists."""
        names = [f"semi_structured_speedup_bs{size}" for size in settings.batch_sizes]
        reason = semi_structured_unavailable(device)
        if reason is not None:
            return {}, dict.fromkeys(names, reason)
        try:
            sparse, converted = semi_structured_copy(model, self.n, self.m)
        except (RuntimeError, ValueError) as exc:  # shapes or dtypes cuSPARSELt/CUTLASS do not take
            return {}, dict.fromkeys(names, f"torch could not make the weights semi-structured: {exc}")
        if not converted:
            return {}, dict.fromkeys(names, "no Linear layer carries the 2:4 pattern with a shape the kernels take")
        # The kernels take half precision: the speed-up is against the same model, dense, in half precision, timed
        # in the same call (never against the float32 figures).
        dense = _HalfInputs(copy.deepcopy(model).half().eval())
        values: dict[str, float] = {"semi_structured_layers": float(converted)}
        missing: dict[str, str] = {}
        for size in settings.batch_sizes:
            for label, runner in (("dense_half", dense), ("semi_structured", sparse)):
                figures = timer(runner, image_size, size, device, settings)
                for key, value in figures.values.items():
                    if key.startswith("latency_ms_p50"):
                        values[key.replace("_bs", f"_{label}_bs")] = value
                missing.update({k.replace("_bs", f"_{label}_bs"): v for k, v in figures.missing.items()})
            sparse_ms = values.get(f"latency_ms_p50_semi_structured_bs{size}")
            dense_ms = values.get(f"latency_ms_p50_dense_half_bs{size}")
            if sparse_ms and dense_ms:
                values[f"semi_structured_speedup_bs{size}"] = dense_ms / sparse_ms
        return values, missing


def semi_structured_unavailable(device: torch.device) -> str | None:
    """Why torch's semi-structured sparse kernels cannot run on `device`, or None."""
    if device.type != "cuda":
        return (
            "2:4 sparse kernels run on CUDA GPUs with sparse tensor cores only; on this device the 2:4 model runs "
            "dense, so no speed-up is expected"
        )
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 0):
        return f"the GPU (compute capability {major}.{minor}) has no sparse tensor cores (8.0 or newer needed)"
    return None


def semi_structured_copy(model: nn.Module, n: int, m: int) -> tuple[nn.Module, int]:
    """A half-precision copy whose 2:4 Linear weights are torch semi-structured sparse tensors, and how many."""
    from torch.sparse import to_sparse_semi_structured

    sparse = copy.deepcopy(model).half().eval()
    converted = 0
    for module in sparse.modules():
        if isinstance(module, nn.Linear) and (n, m) == (2, 4) and follows_pattern(module.weight, n, m):
            module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
            converted += 1
    return _HalfInputs(sparse), converted


class _HalfInputs(nn.Module):
    """Runs the half-precision model on whatever float inputs it is timed with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half())


def _magnitude(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return weight.abs()


pruners.register("nm_2_4")(
    SemiStructuredPruner(
        "nm_2_4",
        "1",
        "2:4 semi-structured: the 2 largest of every 4 weights along the reduction dimension (sparse tensor cores).",
        importance=_magnitude,
    )
)
