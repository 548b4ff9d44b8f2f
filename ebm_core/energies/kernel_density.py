from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ebm_core.energies.base import EnergyFunction


class KernelDensityEnergy(EnergyFunction):
    """E(x) = -T * log( (1/N) sum_i exp(cos(x, r_i) / T) ) over N reference rows r_i (N, D).

    Label-free and non-parametric; as T -> 0 it tends to (1 - cosine to the nearest row).

    A von Mises-Fisher kernel density estimate, read as an energy. `temperature` is the kernel width.
    Reference rows are stored as unit vectors; scoring is done in blocks of `block_size` references.
    """

    def __init__(self, reference: torch.Tensor, temperature: float = 0.05, block_size: int = 8192):
        super().__init__()
        reference = torch.as_tensor(reference, dtype=torch.float32)
        if reference.ndim != 2 or reference.shape[0] < 1:
            raise ValueError(f"reference must be (N, D) with N >= 1, got {tuple(reference.shape)}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        self.input_dim = reference.shape[1]
        self.temperature = float(temperature)
        self.block_size = int(block_size)
        self.register_buffer("reference", F.normalize(reference, dim=1))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        u = F.normalize(x, dim=1)  # (B, D)
        parts = [
            torch.logsumexp(u @ self.reference[s : s + self.block_size].T / self.temperature, dim=1)
            for s in range(0, self.reference.shape[0], self.block_size)
        ]  # each (B,)
        lse = torch.logsumexp(torch.stack(parts, dim=1), dim=1)
        return -self.temperature * (lse - math.log(self.reference.shape[0]))
