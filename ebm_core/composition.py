"""Combine trained energies without retraining.

`WeightedSumEnergy([(w1, E1), (w2, E2)])`: E(x) = sum_i w_i E_i(x), i.e. the product of experts
p(x) proportional to prod_i p_i(x)^w_i. An input must look in-distribution to every expert with a
positive weight to get a low energy, so a domain energy and a second guard energy combine into one score.
It is an `EnergyFunction`: it checks shapes, composes and works with every sampler. `ComposedDetector`
scores with it too (each member detector wrapped as an energy), so there is one weighted sum.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from ebm_core.energies.base import EnergyFunction


def check_weights(weights: Iterable[float], what: str) -> list[float]:
    """The weights as floats; at least one, all finite."""
    weights = [float(w) for w in weights]
    if not weights:
        raise ValueError(f"{what} needs at least one (weight, member) pair")
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite, got {weights}")
    return weights


class WeightedSumEnergy(EnergyFunction):
    def __init__(self, terms: Iterable[tuple[float, nn.Module]]):
        super().__init__()
        terms = list(terms)
        weights = check_weights([w for w, _ in terms], "WeightedSumEnergy")
        energies = [energy for _, energy in terms]
        dims = [getattr(energy, "input_dim", None) for energy in energies]
        if len(set(dims)) != 1 or dims[0] is None:
            raise ValueError(f"every energy must have the same input_dim, got {dims}")
        self.input_dim = dims[0]
        self.energies = nn.ModuleList(energies)
        # float64, so float64 experts (detector scores) are weighted exactly; float32 experts get the
        # same float32 weights as before.
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float64))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        per_expert = torch.stack([energy(x) for energy in self.energies], dim=1)  # (B, n_experts)
        return per_expert @ self.weights.to(per_expert.dtype)
