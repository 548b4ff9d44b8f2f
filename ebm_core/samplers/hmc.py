from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ebm_core.samplers.base import Sampler, SamplerOutput, finite_energy_and_grad
from ebm_core.samplers.noise import gaussian_noise, uniform_noise
from ebm_core.shapes import check_batch


@dataclass(frozen=True)
class HMCSampler(Sampler):
    """Hamiltonian Monte Carlo (Duane et al. 1987; Neal 2011) for p(x) proportional to exp(-E(x)).

    Each of `n_steps` transitions draws a momentum p ~ N(0, mass * I), runs `n_leapfrog` leapfrog steps
    of size `step_size` on H(x, p) = E(x) + |p|^2 / (2 mass), and accepts the end point with probability
    min(1, exp(H_start - H_end)); chains accept independently. `acceptance_rate` is the share of
    accepted trajectories (0.6-0.9 is the usual target).

    `step_jitter` draws each chain's step size per transition uniformly from step_size * [1 - j, 1 + j]
    (Neal 2011, section 5.4.2.2): with a fixed trajectory length, a chain whose trajectory is close to
    a half period of some direction of the energy flips back and forth and never mixes there.
    """

    name = "hmc"
    step_size: float = 0.1
    n_leapfrog: int = 10
    n_steps: int = 20
    mass: float = 1.0
    step_jitter: float = 0.1

    def __post_init__(self):
        if self.step_size <= 0 or self.n_leapfrog < 1 or self.n_steps < 1 or self.mass <= 0:
            raise ValueError(
                f"need step_size > 0, n_leapfrog >= 1, n_steps >= 1, mass > 0; got {self.step_size}, "
                f"{self.n_leapfrog}, {self.n_steps}, {self.mass}"
            )
        if not 0.0 <= self.step_jitter < 1.0:
            raise ValueError(f"step_jitter must be in [0, 1), got {self.step_jitter}")

    def sample(
        self, energy_fn, x_init: torch.Tensor, generator: torch.Generator, n_steps: int | None = None
    ) -> SamplerOutput:
        x = check_batch(x_init, name="x_init").detach().clone()  # (B, D)
        mass = self.mass
        energy, grad = finite_energy_and_grad(energy_fn, x, "HMC", "start")  # (B,), (B, D)
        output = SamplerOutput(samples=x)
        n_accepted, n_proposed = 0, 0
        for i in range(n_steps or self.n_steps):
            output.energy_trace.append(float(energy.mean()))
            output.grad_norm_trace.append(float(grad.norm(dim=1).mean()))
            p = math.sqrt(mass) * gaussian_noise(x.shape, generator, x.device, x.dtype)  # (B, D)
            h_start = energy + p.pow(2).sum(dim=1) / (2.0 * mass)
            u_step = uniform_noise((x.shape[0], 1), generator, x.device, x.dtype)
            eps = self.step_size * (1.0 + self.step_jitter * (2.0 * u_step - 1.0))  # (B, 1)
            # Leapfrog: half step in momentum, alternating full steps, final half step in momentum.
            y, y_grad = x, grad
            p = p - 0.5 * eps * y_grad
            for leap in range(self.n_leapfrog):
                y = y + eps * p / mass
                y_energy, y_grad = finite_energy_and_grad(energy_fn, y, "HMC", f"step {i + 1}, leapfrog {leap + 1}")
                if leap < self.n_leapfrog - 1:
                    p = p - eps * y_grad
            p = p - 0.5 * eps * y_grad
            h_end = y_energy + p.pow(2).sum(dim=1) / (2.0 * mass)
            u = uniform_noise((x.shape[0],), generator, x.device, x.dtype)
            accept = torch.log(u) < h_start - h_end  # (B,)
            x = torch.where(accept[:, None], y, x)
            energy = torch.where(accept, y_energy, energy)
            grad = torch.where(accept[:, None], y_grad, grad)
            n_accepted += int(accept.sum())
            n_proposed += accept.numel()
        output.samples = x.detach()
        output.acceptance_rate = n_accepted / n_proposed
        return output
