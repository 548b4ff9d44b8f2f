from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ebm_core.config_dict import to_plain
from ebm_core.shapes import check_batch_shape


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


def chain_energy_and_grad(energy_fn, x: torch.Tensor):
    """The function x -> (energies (B,), input gradients (B, D)) a chain calls at every step.

    Set up once per chain, for parameters that do not change during it. An energy that can give its input
    gradient without autograd (`MLPEnergy.input_gradient_fn`, the same operations autograd runs) gives it;
    otherwise autograd of the input only. Neither checks finiteness per step (that would read a value back
    every step): the sampler checks its traces and samples once, at the end of the chain.
    """
    energy_of = energy_fn
    if hasattr(energy_fn, "unchecked_forward"):  # an EnergyFunction (no import: energies use samplers.noise)
        check_batch_shape(x, energy_fn.input_dim)  # what its forward would say about a wrong width
        if not torch.is_autocast_enabled(x.device.type):
            fast = energy_fn.input_gradient_fn()
            if fast is not None:
                return fast
        energy_of = energy_fn.unchecked_forward()

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            energy = energy_of(x)
            (grad,) = torch.autograd.grad(energy.sum(), x)
        return energy.detach(), grad

    return step


def finite_energy_and_grad(energy_fn, x: torch.Tensor, sampler: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies and gradients for a Metropolis step, in full precision, or a NonFiniteError."""
    from ebm_core.errors import NonFiniteError

    # The accept/reject step compares energies: keep them in full precision even under bf16 autocast.
    with torch.autocast(device_type=x.device.type, enabled=False):
        energy, grad = energy_and_grad(energy_fn, x)
    if not (torch.isfinite(energy).all() and torch.isfinite(grad).all()):
        raise NonFiniteError(f"{sampler} sampler: energy or its gradient became non-finite at {where}")
    return energy, grad
