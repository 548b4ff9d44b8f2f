"""An energy read in a learned feature space: a kernel density over the training rows' features.

E(x) = -T * ( logsumexp_i( h(x).r_i / T ) - log N ), with h an MLP head whose output is normalised to
the unit sphere and r_i = h(x_i) the N training rows' features (set by `set_reference` after
training). Low energy = close to many training rows in the learned space = in-distribution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ebm_core.energies.base import EnergyFunction
from ebm_core.energies.kernel_density import KernelDensityEnergy


class ContrastiveHeadEnergy(EnergyFunction):
    def __init__(self, input_dim: int, hidden_dims: tuple[int, ...] = (512,), feature_dim: int = 128,
                 temperature: float = 0.05):
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        self.input_dim = int(input_dim)
        self.feature_dim = int(feature_dim)
        self.temperature = float(temperature)
        layers: list[nn.Module] = []
        width_in = self.input_dim
        for width in hidden_dims:
            layers += [nn.Linear(width_in, width), nn.GELU()]
            width_in = width
        layers.append(nn.Linear(width_in, self.feature_dim))
        self.head = nn.Sequential(*layers)
        self.density: KernelDensityEnergy | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(x), dim=1)  # (B, D) -> (B, feature_dim), unit rows

    @torch.no_grad()
    def set_reference(self, x: torch.Tensor, batch_size: int = 4096) -> "ContrastiveHeadEnergy":
        """Store the features of the training rows x (N, D) as the density's reference."""
        parts = [self.features(x[s : s + batch_size]) for s in range(0, x.shape[0], batch_size)]
        self.density = KernelDensityEnergy(torch.cat(parts), self.temperature)
        return self

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        if self.density is None:
            raise RuntimeError("ContrastiveHeadEnergy has no reference rows yet: call set_reference(x_train)")
        return self.density.energy(self.features(x))
