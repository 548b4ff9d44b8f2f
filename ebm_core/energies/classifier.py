from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ebm_core.energies.base import EnergyFunction
from ebm_core.shapes import check_batch


@dataclass(frozen=True)
class ClassifierEnergyConfig:
    input_dim: int
    n_classes: int
    hidden_dims: tuple[int, ...] = (256, 256)
    spectral_norm: bool = False
    temperature: float = 1.0

    def __post_init__(self):
        if self.n_classes < 2 or self.temperature <= 0:
            raise ValueError(
                f"need n_classes >= 2 and temperature > 0; got {self.n_classes}, {self.temperature}"
            )

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden_dims": list(self.hidden_dims)}

    @classmethod
    def from_dict(cls, data: dict) -> "ClassifierEnergyConfig":
        return cls(
            input_dim=int(data["input_dim"]),
            n_classes=int(data["n_classes"]),
            hidden_dims=tuple(int(h) for h in data["hidden_dims"]),
            spectral_norm=bool(data.get("spectral_norm", False)),
            temperature=float(data.get("temperature", 1.0)),
        )


class ClassifierEnergy(EnergyFunction):
    """A classifier read as an energy (Grathwohl et al. 2020, JEM; Liu et al. 2020):

    f(x) = MLP logits (B, K),   E(x) = -T * logsumexp(f(x) / T)   (B,)

    so p(x) is proportional to sum_y exp(f(x)[y] / T)^T and p(y | x) = softmax(f(x)). `logits(x)` gives
    the class scores for labelled objectives; `forward`/`energy` give the label-free OOD score.
    """

    def __init__(self, config: ClassifierEnergyConfig):
        super().__init__()
        self.config = config
        self.input_dim = config.input_dim
        self.temperature = config.temperature
        layers: list[nn.Module] = []
        width_in = config.input_dim
        for width in config.hidden_dims:
            layers += [self._linear(width_in, width), nn.SiLU()]
            width_in = width
        layers.append(self._linear(width_in, config.n_classes))
        self.net = nn.Sequential(*layers)

    def _linear(self, n_in: int, n_out: int) -> nn.Module:
        layer = nn.Linear(n_in, n_out)
        return nn.utils.parametrizations.spectral_norm(layer) if self.config.spectral_norm else layer

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # (B, D) -> (B, K)
        check_batch(x, self.input_dim)
        return self.net(x)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return -self.temperature * torch.logsumexp(self.net(x) / self.temperature, dim=1)  # (B,)
