from __future__ import annotations

import torch
from torch import nn

from ebm_core.shapes import check_batch, check_energy_output


class EnergyFunction(nn.Module):
    """Base class: subclasses implement `energy(x)`; `forward` checks shapes around it."""

    input_dim: int

    def energy(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, D) -> (B,)
        check_batch(x, self.input_dim)
        return check_energy_output(self.energy(x), x.shape[0])
