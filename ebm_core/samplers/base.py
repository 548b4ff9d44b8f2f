from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplerOutput:
    samples: torch.Tensor  # (B, D), detached
    energy_trace: list[float] = field(default_factory=list)  # mean energy per step
    grad_norm_trace: list[float] = field(default_factory=list)  # mean per-sample gradient norm per step
    acceptance_rate: float | None = None  # Metropolis samplers only


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
