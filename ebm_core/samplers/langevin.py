from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ebm_core.errors import NonFiniteError
from ebm_core.samplers.base import Sampler, SamplerOutput, energy_and_grad
from ebm_core.samplers.noise import gaussian_noise
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
        x = check_batch(x_init, name="x_init").detach().clone()
        noise_std = self.noise_scale * math.sqrt(2.0 * self.step_size)
        output = SamplerOutput(samples=x)
        for _ in range(n_steps or self.n_steps):
            energy, grad = energy_and_grad(energy_fn, x)
            grad_norm = grad.norm(dim=1, keepdim=True)  # (B, 1)
            if not torch.isfinite(grad_norm).all():
                raise NonFiniteError("Langevin sampler: energy gradient became non-finite")
            if self.grad_clip is not None:
                grad = grad * torch.clamp(self.grad_clip / (grad_norm + 1e-12), max=1.0)
            noise = gaussian_noise(x.shape, generator, x.device, x.dtype)
            x = x - self.step_size * grad + noise_std * noise
            if self.clamp is not None:
                x = x.clamp(*self.clamp)
            output.energy_trace.append(float(energy.mean()))
            output.grad_norm_trace.append(float(grad_norm.mean()))
        output.samples = x.detach()
        return output
