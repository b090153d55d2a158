"""Controls: explanations that ignore the model (noise, edges), the floor every explainer should beat."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xbench.components.explainers._base import explainer

# --------------------------------------------------------------------------------------------------------------------
# Controls: every leaderboard needs a floor to beat.


@explainer("random", "control", defaults={"seed": 0})
def random_attribution(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Uniform noise, independent of model and input: the floor every explainer should beat."""
    # Seeded from the batch itself, so a batch always gets the same noise and different batches different noise.
    generator = torch.Generator().manual_seed(int(params["seed"]) + int(x.sum().item() * 1000) % 2**31)
    return torch.rand(x.shape[0], 1, *x.shape[2:], generator=generator)


@explainer("sobel", "control")
def sobel(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Edge magnitude of the input (Sobel filter on the channel mean), independent of the model."""
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    gray = x.detach().mean(dim=1, keepdim=True)
    gx = nn.functional.conv2d(gray, kernel.view(1, 1, 3, 3), padding=1)
    gy = nn.functional.conv2d(gray, kernel.t().reshape(1, 1, 3, 3), padding=1)
    return torch.sqrt(gx**2 + gy**2)
