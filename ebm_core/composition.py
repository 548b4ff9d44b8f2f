"""Combine trained energies without retraining.

- `WeightedSumEnergy([(w1, E1), (w2, E2)])`: E(x) = sum_i w_i E_i(x), i.e. the product of experts
  p(x) proportional to prod_i p_i(x)^w_i. An input must look in-distribution to every expert with a
  positive weight to get a low energy, so a domain energy and a second guard energy combine into one score.
- `TemperedEnergy(E, T)`: E(x) / T, i.e. p(x)^(1/T): T > 1 flattens the density, T < 1 sharpens it.

Both are `EnergyFunction`s: they check shapes, compose with each other and work with every sampler.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from ebm_core.energies.base import EnergyFunction


class WeightedSumEnergy(EnergyFunction):
    def __init__(self, terms: Iterable[tuple[float, nn.Module]]):
        super().__init__()
        terms = list(terms)
        if not terms:
            raise ValueError("WeightedSumEnergy needs at least one (weight, energy) pair")
        weights, energies = zip(*terms)
        for weight in weights:
            if not math.isfinite(float(weight)):
                raise ValueError(f"weights must be finite, got {list(weights)}")
        dims = [getattr(energy, "input_dim", None) for energy in energies]
        if len(set(dims)) != 1 or dims[0] is None:
            raise ValueError(f"every energy must have the same input_dim, got {dims}")
        self.input_dim = dims[0]
        self.energies = nn.ModuleList(energies)
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        per_expert = torch.stack([energy(x) for energy in self.energies], dim=1)  # (B, n_experts)
        return per_expert @ self.weights.to(per_expert.dtype)


class TemperedEnergy(EnergyFunction):
    def __init__(self, energy: nn.Module, temperature: float):
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        self.input_dim = energy.input_dim
        self.base = energy
        self.temperature = float(temperature)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) / self.temperature
