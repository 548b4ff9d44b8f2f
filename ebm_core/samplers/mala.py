from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ebm_core.samplers.base import Sampler, SamplerOutput, finite_energy_and_grad
from ebm_core.samplers.noise import gaussian_noise, uniform_noise
from ebm_core.shapes import check_batch


@dataclass(frozen=True)
class MALASampler(Sampler):
    """Metropolis-adjusted Langevin (Roberts & Tweedie 1996), exact for p(x) proportional to exp(-E(x)).

    proposal  y = x - step_size * grad E(x) + sqrt(2 * step_size) * z,   z ~ N(0, I)
    accept    with probability min(1, exp(E(x) - E(y)) q(x | y) / q(y | x)),
              q(y | x) = N(y; x - step_size * grad E(x), 2 * step_size * I)

    Each chain accepts or rejects on its own; `acceptance_rate` is the share of accepted proposals over
    all chains and steps (about 0.57 is the textbook optimum in high dimension). `box` restricts the
    target to [low, high]^D: proposals leaving it are rejected, which keeps the chain exact.
    """

    name = "mala"
    step_size: float = 0.01
    n_steps: int = 20
    box: tuple[float, float] | None = None

    def __post_init__(self):
        if self.step_size <= 0 or self.n_steps < 1:
            raise ValueError(f"need step_size > 0 and n_steps >= 1; got {self.step_size}, {self.n_steps}")
        if self.box is not None and not self.box[0] < self.box[1]:
            raise ValueError(f"box must be (low, high) with low < high, got {self.box}")

    def sample(
        self, energy_fn, x_init: torch.Tensor, generator: torch.Generator, n_steps: int | None = None
    ) -> SamplerOutput:
        x = check_batch(x_init, name="x_init").detach().clone()  # (B, D)
        step = self.step_size
        energy, grad = finite_energy_and_grad(energy_fn, x, "MALA", "start")  # (B,), (B, D)
        output = SamplerOutput(samples=x)
        n_accepted, n_proposed = 0, 0
        for i in range(n_steps or self.n_steps):
            output.energy_trace.append(float(energy.mean()))
            output.grad_norm_trace.append(float(grad.norm(dim=1).mean()))
            z = gaussian_noise(x.shape, generator, x.device, x.dtype)
            proposal = x - step * grad + math.sqrt(2.0 * step) * z
            p_energy, p_grad = finite_energy_and_grad(energy_fn, proposal, "MALA", f"step {i + 1}")
            # log q(y | x) = -|z|^2 / 2 and log q(x | y) = -|x - y + step * grad E(y)|^2 / (4 step), up to
            # the same constant.
            log_q_forward = -0.5 * z.pow(2).sum(dim=1)
            log_q_backward = -(x - proposal + step * p_grad).pow(2).sum(dim=1) / (4.0 * step)
            log_alpha = energy - p_energy + log_q_backward - log_q_forward  # (B,)
            if self.box is not None:
                inside = ((proposal >= self.box[0]) & (proposal <= self.box[1])).all(dim=1)
                log_alpha = torch.where(inside, log_alpha, torch.full_like(log_alpha, -math.inf))
            u = uniform_noise((x.shape[0],), generator, x.device, x.dtype)
            accept = torch.log(u) < log_alpha  # (B,)
            x = torch.where(accept[:, None], proposal, x)
            energy = torch.where(accept, p_energy, energy)
            grad = torch.where(accept[:, None], p_grad, grad)
            n_accepted += int(accept.sum())
            n_proposed += accept.numel()
        output.samples = x.detach()
        output.acceptance_rate = n_accepted / n_proposed
        return output
