"""The perturbations of a meta-evaluation (MetaQuantus; Hedstrom et al., TMLR 2023), on the model's device.

Two minor ones, which should leave a trustworthy metric's scores alone (noise resilience), and one disruptive one,
which should move them (adversary reactivity):

- `weight_noise` (minor): every parameter multiplied by N(1, sigma), MetaQuantus's multiplicative model noise (a
  pruned weight stays 0, so a pruned model stays as sparse);
- `input_noise` (minor): N(0, sigma) added to the normalised inputs;
- `randomised_layers` (disruptive): the last `layers` modules with weights re-initialised with their own
  initialiser, top down, as in the model-randomisation test (Adebayo et al., 2018).

Draws come from generators seeded by (seed, perturbation, draw), so every explainer of a model variant sees the same
perturbed models and inputs, and no draw touches the global random state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

PERTURBATION_STREAM = 0x6D657461  # keeps these draws apart from every other stream drawn from the same seed


@dataclass(frozen=True)
class Perturbation:
    name: str
    disruptive: bool
    description: str


PERTURBATIONS = (
    Perturbation("weight_noise", False, "every weight multiplied by N(1, weight_noise)"),
    Perturbation("input_noise", False, "N(0, input_noise) added to the inputs"),
    Perturbation("randomised_layers", True, "the last randomised_layers layers with weights re-initialised"),
)


def draw_seed(seed: int, perturbation: str, draw: int) -> int:
    names = [p.name for p in PERTURBATIONS]
    state = np.random.SeedSequence([seed, PERTURBATION_STREAM, names.index(perturbation), draw]).generate_state(1)
    return int(state[0])


def noisy_weights(model: nn.Module, sigma: float, seed: int) -> nn.Module:
    """A copy of `model` with every parameter multiplied by N(1, sigma)."""
    noisy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in noisy.parameters():
            factor = 1 + sigma * torch.randn(parameter.shape, generator=generator)
            parameter.mul_(factor.to(parameter.device, parameter.dtype))
    return noisy


def noisy_inputs(x: Tensor, sigma: float, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return x + sigma * torch.randn(x.shape, generator=generator).to(x.dtype)


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """The modules that hold a weight of their own, in the order the model registers them (input to output)."""
    return [m for m in model.modules() if isinstance(getattr(m, "weight", None), nn.Parameter)]


def randomised_layers(model: nn.Module, layers: int, seed: int) -> nn.Module:
    """A copy of `model` with its last `layers` weighted modules re-initialised (their `reset_parameters`, under a
    forked random state seeded here; a module without one gets N(0, its weights' std))."""
    randomised = copy.deepcopy(model)
    top = weighted_layers(randomised)[-layers:]
    devices = [p.device for p in randomised.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})), torch.no_grad():
        torch.manual_seed(seed)
        for module in reversed(top):
            reset: Callable[[], None] | None = getattr(module, "reset_parameters", None)
            if reset is not None:
                reset()
            else:
                weight = module.weight
                assert isinstance(weight, Tensor)
                weight.normal_(0.0, float(weight.std()) or 1.0)
    return randomised


def perturbed(
    name: str, model: nn.Module, x: Tensor, seed: int, weight_noise: float, input_noise: float, layers: int
) -> tuple[nn.Module, Tensor]:
    """The model and inputs under one draw of perturbation `name`."""
    if name == "weight_noise":
        return noisy_weights(model, weight_noise, seed), x
    if name == "input_noise":
        return model, noisy_inputs(x, input_noise, seed)
    if name == "randomised_layers":
        return randomised_layers(model, layers, seed), x
    raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(p.name for p in PERTURBATIONS)}")
