"""Contrastive divergence: lower the energy of data, raise it on samples from the model.

Two ways to start the sampling chains, one loss:
- `ContrastiveDivergence` (CD-k, Hinton 2002): chains start at the data batch and run k sampler steps;
- `PersistentContrastiveDivergence` (PCD, Tieleman 2008): chains continue from a replay buffer, a share
  restarting from noise each draw (Du & Mordatch 2019).

loss = mean E(x_data) - mean E(x_sample) + energy_l2 * mean(E(x_data)^2 + E(x_sample)^2)

The L2 term keeps energies near zero so they cannot drift to huge magnitudes (Du & Mordatch 2019).
Any sampler with `sample(energy_fn, x_init, generator, n_steps=None)` works (Langevin, MALA, HMC).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebm_core.objectives.base import ObjectiveConfig, ObjectiveContext, ObjectiveOutput
from ebm_core.replay_buffer import ReplayBuffer
from ebm_core.samplers.base import SamplerOutput


def sample_negatives(
    sampler, energy_fn, x_init: torch.Tensor, generator: torch.Generator, n_steps: int | None = None
) -> SamplerOutput:
    """Run the sampler from x_init with the energy's parameters frozen (no gradient flows into them)."""
    requires_grad = [p.requires_grad for p in energy_fn.parameters()]
    for p in energy_fn.parameters():
        p.requires_grad_(False)
    try:
        return sampler.sample(energy_fn, x_init, generator, n_steps=n_steps)
    finally:
        for p, flag in zip(energy_fn.parameters(), requires_grad):
            p.requires_grad_(flag)


def contrastive_loss(
    energy_fn, x_data: torch.Tensor, chain: SamplerOutput, energy_l2: float
) -> tuple[torch.Tensor, dict[str, float]]:
    n_pos = x_data.shape[0]
    if chain.samples.shape[1:] == x_data.shape[1:] and chain.samples.dtype == x_data.dtype:
        # One forward (and so one backward) over both halves: the same rows, half the passes. An energy
        # with a hand-written first-order backward (MLPEnergy.first_order_forward) gives it: this loss
        # needs one gradient, never create_graph.
        fast = getattr(energy_fn, "first_order_forward", None)
        forward = (fast() if fast is not None else None) or energy_fn
        energies = forward(torch.cat([x_data, chain.samples]))  # (B + B_neg,)
        e_pos, e_neg = energies[:n_pos], energies[n_pos:]  # (B,), (B_neg,)
    else:  # let the energy's own checks say what is wrong with either batch
        e_pos, e_neg = energy_fn(x_data), energy_fn(chain.samples)
    mean_pos, mean_neg = e_pos.mean(), e_neg.mean()
    loss = mean_pos - mean_neg + energy_l2 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
    values = torch.stack([mean_pos, mean_neg, mean_neg - mean_pos]).detach().tolist()  # one read-back
    stats = {
        "e_pos": values[0],
        "e_neg": values[1],
        "energy_gap": values[2],
        "sampler_grad_norm": chain.grad_norm_trace[-1],
    }
    if chain.acceptance_rate is not None:
        stats["sampler_acceptance"] = float(chain.acceptance_rate)
    return loss, stats


class ContrastiveDivergence:
    """CD-k: negatives are k sampler steps away from the data batch (k = the sampler's n_steps by default)."""

    def __init__(self, sampler, k: int | None = None, energy_l2: float = 0.1):
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.sampler = sampler
        self.k = k
        self.energy_l2 = energy_l2

    def __call__(self, energy_fn, x_data: torch.Tensor, generator: torch.Generator) -> ObjectiveOutput:
        chain = sample_negatives(self.sampler, energy_fn, x_data, generator, n_steps=self.k)
        loss, stats = contrastive_loss(energy_fn, x_data, chain, self.energy_l2)
        return ObjectiveOutput(loss=loss, stats=stats)


class PersistentContrastiveDivergence:
    """PCD: chains continue from a replay buffer (its state travels in training checkpoints)."""

    def __init__(self, sampler, buffer: ReplayBuffer, energy_l2: float = 0.1):
        self.sampler = sampler
        self.buffer = buffer
        self.energy_l2 = energy_l2

    def __call__(self, energy_fn, x_data: torch.Tensor, generator: torch.Generator) -> ObjectiveOutput:
        x_init, index = self.buffer.draw(x_data.shape[0])
        x_init = x_init.to(x_data.device)
        chain = sample_negatives(self.sampler, energy_fn, x_init, generator)
        self.buffer.update(index, chain.samples)
        loss, stats = contrastive_loss(energy_fn, x_data, chain, self.energy_l2)
        stats["buffer_mean_age"] = float(self.buffer.age.float().mean())
        return ObjectiveOutput(loss=loss, stats=stats)

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "buffer_generator": self.buffer.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.buffer.generator.set_state(state["buffer_generator"])


def replay_buffer_for(
    x_train: torch.Tensor, capacity: int, reinit_rate: float, noise_margin: float, generator: torch.Generator
) -> ReplayBuffer:
    """A replay buffer whose restart noise fills the data's box widened by `noise_margin` of its range."""
    low, high = x_train.min(dim=0).values, x_train.max(dim=0).values  # (D,), (D,)
    margin = noise_margin * (high - low) + 1e-3
    return ReplayBuffer(capacity, low - margin, high + margin, reinit_rate, generator)


@dataclass(frozen=True)
class CDConfig(ObjectiveConfig):
    """Persistent CD (`PersistentContrastiveDivergence`) with negatives from the detector's sampler."""

    name = "cd"
    buffer_capacity: int = 10_000
    buffer_reinit_rate: float = 0.05
    noise_margin: float = 0.25  # restart noise box = data box widened by this share of its range
    energy_l2: float = 0.01  # 0.1 pins energies at +-5 and flattens the in-distribution tail

    def build(self, context: ObjectiveContext) -> PersistentContrastiveDivergence:
        buffer = replay_buffer_for(
            context.x_train, self.buffer_capacity, self.buffer_reinit_rate, self.noise_margin, context.generator
        )
        return PersistentContrastiveDivergence(context.sampler, buffer, self.energy_l2)


@dataclass(frozen=True)
class CDKConfig(ObjectiveConfig):
    """CD-k (`ContrastiveDivergence`): chains start at the data batch; k = None uses the sampler's n_steps."""

    name = "cdk"
    k: int | None = None
    energy_l2: float = 0.01

    def build(self, context: ObjectiveContext) -> ContrastiveDivergence:
        return ContrastiveDivergence(context.sampler, k=self.k, energy_l2=self.energy_l2)
