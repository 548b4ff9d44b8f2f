from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ebm_core.energies.base import EnergyFunction


@dataclass(frozen=True)
class MLPEnergyConfig:
    input_dim: int
    hidden_dims: tuple[int, ...] = (256, 256)
    spectral_norm: bool = False

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden_dims": list(self.hidden_dims)}

    @classmethod
    def from_dict(cls, data: dict) -> "MLPEnergyConfig":
        return cls(
            input_dim=int(data["input_dim"]),
            hidden_dims=tuple(int(h) for h in data["hidden_dims"]),
            spectral_norm=bool(data.get("spectral_norm", False)),
        )


class MLPEnergy(EnergyFunction):
    """E(x) = MLP(x): SiLU hidden layers and a scalar head."""

    def __init__(self, config: MLPEnergyConfig):
        super().__init__()
        self.config = config
        self.input_dim = config.input_dim
        layers: list[nn.Module] = []
        width_in = config.input_dim
        for width in config.hidden_dims:
            layers += [self._linear(width_in, width), nn.SiLU()]
            width_in = width
        layers.append(self._linear(width_in, 1))
        self.net = nn.Sequential(*layers)

    def _linear(self, n_in: int, n_out: int) -> nn.Module:
        layer = nn.Linear(n_in, n_out)
        return nn.utils.parametrizations.spectral_norm(layer) if self.config.spectral_norm else layer

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # (B, 1) -> (B,)
