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

    def input_gradient_fn(self):
        """x (B, D) -> (E(x) (B,), dE/dx (B, D)) without autograd, for a sampling chain: the weights are
        read once, so they must not change while it is used. The operations are those autograd runs for
        `energy(x).sum()` (addmm forward; mm and silu_backward back), so results match it to the bit on
        the same kernels. None when that does not hold: spectral norm recomputes its weights at every
        forward, and hooks or other layers could change what a forward does.
        """
        layers = list(self.net)
        linears, activations = layers[0::2], layers[1::2]
        if (
            self.config.spectral_norm
            or not all(type(m) is nn.Linear and m.bias is not None for m in linears)
            or not all(type(m) is nn.SiLU for m in activations)
            or any(m._forward_hooks or m._forward_pre_hooks for m in [self, self.net, *layers])
        ):
            return None
        weights = [(m.weight.detach(), m.bias.detach()) for m in linears]  # (out, in), (out,)
        hidden, (w_out, b_out) = weights[:-1], weights[-1]
        silu, silu_backward = nn.functional.silu, torch.ops.aten.silu_backward

        def energy_and_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pre_activations = []
            h = x
            for w, b in hidden:
                z = torch.addmm(b, h, w.t())  # (B, width)
                pre_activations.append(z)
                h = silu(z)
            energy = torch.addmm(b_out, h, w_out.t()).squeeze(-1)  # (B,)
            grad = w_out.expand(x.shape[0], -1)  # d sum(E) / dh, (B, width)
            for (w, _), z in zip(reversed(hidden), reversed(pre_activations)):
                grad = silu_backward(grad, z).mm(w)  # (B, width_in)
            return energy, grad.contiguous()

        return energy_and_grad
