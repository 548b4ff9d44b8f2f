from __future__ import annotations

import torch

from ebm_core.objectives.base import ObjectiveOutput
from ebm_core.replay_buffer import ReplayBuffer
from ebm_core.samplers.langevin import LangevinSampler


class PersistentContrastiveDivergence:
    """PCD: push energy down on data and up on Langevin samples continued from a replay buffer.

    loss = mean E(x_data) - mean E(x_sample) + energy_l2 * mean(E(x_data)^2 + E(x_sample)^2)

    The L2 term keeps energies near zero so they cannot drift to huge magnitudes (Du & Mordatch 2019).
    """

    def __init__(self, sampler: LangevinSampler, buffer: ReplayBuffer, energy_l2: float = 0.1):
        self.sampler = sampler
        self.buffer = buffer
        self.energy_l2 = energy_l2

    def __call__(self, energy_fn, x_data: torch.Tensor, generator: torch.Generator) -> ObjectiveOutput:
        x_init, index = self.buffer.draw(x_data.shape[0])
        x_init = x_init.to(x_data.device)
        # Parameters must not receive gradients from the sampling chain.
        requires_grad = [p.requires_grad for p in energy_fn.parameters()]
        for p in energy_fn.parameters():
            p.requires_grad_(False)
        try:
            chain = self.sampler.sample(energy_fn, x_init, generator)
        finally:
            for p, flag in zip(energy_fn.parameters(), requires_grad):
                p.requires_grad_(flag)
        self.buffer.update(index, chain.samples)

        e_pos = energy_fn(x_data)  # (B,)
        e_neg = energy_fn(chain.samples)  # (B,)
        loss = e_pos.mean() - e_neg.mean() + self.energy_l2 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        stats = {
            "e_pos": float(e_pos.mean().detach()),
            "e_neg": float(e_neg.mean().detach()),
            "energy_gap": float((e_neg.mean() - e_pos.mean()).detach()),
            "sampler_grad_norm": chain.grad_norm_trace[-1],
            "buffer_mean_age": float(self.buffer.age.float().mean()),
        }
        return ObjectiveOutput(loss=loss, stats=stats)
