from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ebm_core.errors import NonFiniteError
from ebm_core.samplers.base import Sampler, SamplerOutput, chain_energy_and_grad
from ebm_core.samplers.noise import gaussian_noise_
from ebm_core.shapes import check_batch


@dataclass(frozen=True)
class LangevinSampler(Sampler):
    """Unadjusted Langevin dynamics targeting p(x) proportional to exp(-E(x)).

    x <- x - step_size * grad E(x) + noise_scale * sqrt(2 * step_size) * N(0, I)

    noise_scale = 1 is the exact discretisation of the Langevin diffusion; EBM training often uses a
    smaller noise (a "cold" chain), which is why it is a separate knob.
    """

    name = "langevin"
    step_size: float = 0.01
    noise_scale: float = 1.0
    n_steps: int = 20
    grad_clip: float | None = None  # max per-sample gradient norm
    clamp: tuple[float, float] | None = None  # keep samples inside the data's box

    def __post_init__(self):
        if self.step_size <= 0 or self.n_steps < 1 or self.noise_scale < 0:
            raise ValueError(
                f"need step_size > 0, n_steps >= 1, noise_scale >= 0; got {self.step_size}, "
                f"{self.n_steps}, {self.noise_scale}"
            )

    def sample(
        self, energy_fn, x_init: torch.Tensor, generator: torch.Generator, n_steps: int | None = None
    ) -> SamplerOutput:
        x = check_batch(x_init, name="x_init").detach().clone()  # (B, D), updated in place below
        n_steps = n_steps or self.n_steps
        noise_std = self.noise_scale * math.sqrt(2.0 * self.step_size)
        step = chain_energy_and_grad(energy_fn, x)  # the energy's parameters are constant in a chain
        noise = torch.empty_like(x)  # (B, D), refilled every step
        energies, grad_norms = [], []  # (B,) and (B, 1) per step: nothing is read back inside the chain
        for _ in range(n_steps):
            energy, grad = step(x)  # (B,), (B, D)
            grad_norm = torch.linalg.vector_norm(grad, dim=1, keepdim=True)  # (B, 1)
            if self.grad_clip is not None:
                grad = grad * torch.clamp(self.grad_clip / (grad_norm + 1e-12), max=1.0)
            x.add_(grad, alpha=-self.step_size)
            x.add_(gaussian_noise_(noise, generator), alpha=noise_std)
            if self.clamp is not None:
                x.clamp_(*self.clamp)
            energies.append(energy)
            grad_norms.append(grad_norm)
        # The per-step means in two reductions after the chain rather than two per step.
        energy_trace = torch.stack(energies).mean(dim=1).tolist()  # (n_steps,)
        grad_norm_trace = torch.cat(grad_norms, dim=1).mean(dim=0).tolist()  # (B, n_steps) -> (n_steps,)
        # Checked once per chain: a non-finite gradient poisons every later step, so the first bad step
        # of the trace is the step where it happened.
        bad = [i for i, value in enumerate(grad_norm_trace) if not math.isfinite(value)]
        if bad:
            raise NonFiniteError(
                f"Langevin sampler: energy gradient became non-finite at step {bad[0] + 1} of {n_steps}"
            )
        if not torch.isfinite(x).all():
            raise NonFiniteError(f"Langevin sampler: samples became non-finite in the last step ({n_steps})")
        return SamplerOutput(samples=x, energy_trace=energy_trace, grad_norm_trace=grad_norm_trace)
