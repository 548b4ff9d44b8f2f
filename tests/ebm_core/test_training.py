import numpy as np
import pytest
import torch

from ebm_core import LangevinSampler, MLPEnergy, NonFiniteLossError, TrainConfig, train_energy
from ebm_core.energies.mlp import MLPEnergyConfig
from ebm_core.objectives import ObjectiveOutput, PersistentContrastiveDivergence
from ebm_core.replay_buffer import ReplayBuffer


def mixture_of_gaussians(n, generator):
    centres = torch.tensor([[-2.0, -2.0], [2.0, 2.0], [-2.0, 2.0]])
    which = torch.randint(0, 3, (n,), generator=generator)
    return centres[which] + 0.3 * torch.randn((n, 2), generator=generator)


def auroc(in_scores, ood_scores):
    # Mann-Whitney, no ties expected with continuous energies
    return float((ood_scores[:, None] > in_scores[None, :]).float().mean())


def test_pcd_ranks_mixture_data_below_uniform_noise():
    generator = torch.Generator().manual_seed(0)
    data = mixture_of_gaussians(2000, generator)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        energy = MLPEnergy(MLPEnergyConfig(2, (64, 64)))
    buffer = ReplayBuffer(2000, torch.full((2,), -4.0), torch.full((2,), 4.0), 0.05, generator)
    objective = PersistentContrastiveDivergence(
        LangevinSampler(step_size=0.01, noise_scale=0.5, n_steps=20), buffer, energy_l2=0.1
    )
    history = train_energy(energy, objective, data, TrainConfig(n_steps=400, learning_rate=1e-3), generator)

    held_out = mixture_of_gaussians(500, generator)
    noise = torch.rand((500, 2), generator=generator) * 8 - 4
    with torch.no_grad():
        assert auroc(energy(held_out), energy(noise)) > 0.95
    assert history.stats["e_neg"][-1] > history.stats["e_pos"][-1]
    assert history.steps[-1] == 400


class NaNAtStep:
    """An objective whose loss turns NaN at a given step, as a diverging run's would."""

    def __init__(self, bad_step):
        self.bad_step = bad_step
        self.calls = 0

    def __call__(self, energy_fn, x, generator):
        self.calls += 1
        loss = energy_fn(x).mean()
        if self.calls == self.bad_step:
            loss = loss * float("nan")
        return ObjectiveOutput(loss=loss, stats={"e_pos": 0.0})


def test_non_finite_loss_stops_training_with_the_step_named():
    generator = torch.Generator().manual_seed(0)
    energy = MLPEnergy(MLPEnergyConfig(2, (8,)))
    before = [p.detach().clone() for p in energy.parameters()]
    with pytest.raises(NonFiniteLossError, match="step 3") as info:
        train_energy(energy, NaNAtStep(3), torch.randn(100, 2), TrainConfig(n_steps=10, log_every=1), generator)
    assert info.value.step == 3
    after = list(energy.parameters())
    # Steps 1 and 2 updated the weights; the NaN step did not write NaN into them.
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_replay_buffer_reinitialises_about_the_configured_share():
    generator = torch.Generator().manual_seed(0)
    buffer = ReplayBuffer(1000, torch.zeros(3), torch.ones(3), reinit_rate=0.05, generator=generator)
    buffer.samples.fill_(5.0)  # marks chains that were continued
    x, _ = buffer.draw(20_000 // 10)
    restarted = (x < 1.0).all(dim=1).float().mean().item()
    assert abs(restarted - 0.05) < 0.02
    assert np.isclose(float((x == 5.0).all(dim=1).float().mean()), 1 - restarted)
