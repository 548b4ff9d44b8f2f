from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ebm_core.config_dict import to_plain


@dataclass
class SamplerOutput:
    samples: torch.Tensor  # (B, D), detached
    energy_trace: list[float] = field(default_factory=list)  # mean energy per step
    grad_norm_trace: list[float] = field(default_factory=list)  # mean per-sample gradient norm per step
    acceptance_rate: float | None = None  # Metropolis samplers only


@dataclass(frozen=True)
class Sampler:
    """Base of the samplers. A sampler is a frozen dataclass of hyperparameters, so it is its own config:
    `name` is its key in `ebm_core.samplers.SAMPLERS` and in YAML (`sampler: {name: mala, ...}`)."""

    name: ClassVar[str]

    def sample(
        self, energy_fn, x_init: torch.Tensor, generator: torch.Generator, n_steps: int | None = None
    ) -> SamplerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"name": self.name, **to_plain(self)}


def energy_and_grad(energy_fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies (B,) and their gradients (B, D) at x, without touching parameter gradients."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        energy = energy_fn(x)
        (grad,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach(), grad.detach()


def finite_energy_and_grad(energy_fn, x: torch.Tensor, sampler: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies and gradients for a Metropolis step, in full precision, or a NonFiniteError."""
    from ebm_core.errors import NonFiniteError

    # The accept/reject step compares energies: keep them in full precision even under bf16 autocast.
    with torch.autocast(device_type=x.device.type, enabled=False):
        energy, grad = energy_and_grad(energy_fn, x)
    if not (torch.isfinite(energy).all() and torch.isfinite(grad).all()):
        raise NonFiniteError(f"{sampler} sampler: energy or its gradient became non-finite at {where}")
    return energy, grad
