"""The contract every sampler must pass, and known answers on a 2-D Gaussian energy."""

import pytest
import torch

from ebm_core.energies import GaussianEnergy
from ebm_core.errors import NonFiniteError, ShapeError
from ebm_core.samplers import SAMPLERS as REGISTERED
from ebm_core.samplers import HMCSampler, LangevinSampler, MALASampler, SamplerOutput

MEAN = torch.tensor([1.0, -2.0])
COVARIANCE = torch.tensor([[1.0, 0.5], [0.5, 2.0]])

SAMPLERS = {
    "langevin": LangevinSampler(step_size=0.05, n_steps=8),
    "mala": MALASampler(step_size=0.3, n_steps=8),
    "hmc": HMCSampler(step_size=0.3, n_leapfrog=3, n_steps=8),
}
BAD_SETTINGS = {
    "langevin": [dict(step_size=0.0), dict(n_steps=0), dict(noise_scale=-1.0)],
    "mala": [dict(step_size=0.0), dict(n_steps=0), dict(box=(1.0, -1.0))],
    "hmc": [dict(step_size=-0.1), dict(step_jitter=1.0), dict(n_leapfrog=0), dict(n_steps=0), dict(mass=0.0)],
}


class NaNBeyond(torch.nn.Module):
    """A Gaussian energy that turns NaN far from the origin, as a diverged network's would."""

    input_dim = 2

    def forward(self, x):
        energy = 0.5 * x.pow(2).sum(dim=1)
        return torch.where(x.norm(dim=1) > 3.0, energy * float("nan"), energy)


def test_every_registered_sampler_is_checked_here():
    assert {name: type(s) for name, s in SAMPLERS.items()} == REGISTERED


@pytest.fixture(params=sorted(SAMPLERS))
def sampler(request):
    return SAMPLERS[request.param]


def test_output_has_the_input_shape_and_one_trace_entry_per_step(sampler):
    energy = GaussianEnergy(MEAN, COVARIANCE)
    out = sampler.sample(energy, torch.zeros((16, 2)), torch.Generator().manual_seed(0))
    assert isinstance(out, SamplerOutput)
    assert out.samples.shape == (16, 2) and not out.samples.requires_grad
    assert len(out.energy_trace) == len(out.grad_norm_trace) == sampler.n_steps
    assert all(torch.isfinite(torch.tensor(out.energy_trace)))
    short = sampler.sample(energy, torch.zeros((4, 2)), torch.Generator().manual_seed(0), n_steps=3)
    assert len(short.energy_trace) == 3
    if not isinstance(sampler, LangevinSampler):
        assert 0.0 <= out.acceptance_rate <= 1.0


def test_same_generator_seed_gives_identical_chains_and_another_seed_does_not(sampler):
    energy = GaussianEnergy(MEAN, COVARIANCE)
    x_init = torch.zeros((16, 2))
    a = sampler.sample(energy, x_init, torch.Generator().manual_seed(7))
    b = sampler.sample(energy, x_init, torch.Generator().manual_seed(7))
    c = sampler.sample(energy, x_init, torch.Generator().manual_seed(8))
    assert torch.equal(a.samples, b.samples) and a.energy_trace == b.energy_trace
    assert not torch.equal(a.samples, c.samples)
    assert torch.equal(x_init, torch.zeros((16, 2)))  # the start is not modified in place


def test_bad_inputs_and_settings_raise_errors_that_say_what_is_wrong(sampler):
    energy = GaussianEnergy(MEAN, COVARIANCE)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ShapeError, match=r"\(B, D\)"):
        sampler.sample(energy, torch.zeros(5), generator)
    with pytest.raises(ShapeError, match=r"\(B, 2\)"):
        sampler.sample(energy, torch.zeros((5, 3)), generator)
    with pytest.raises(NonFiniteError, match="rows"):
        sampler.sample(energy, torch.tensor([[0.0, float("nan")]]), generator)
    with pytest.raises(TypeError, match="floating"):
        sampler.sample(energy, torch.zeros((5, 2), dtype=torch.long), generator)
    with pytest.raises(NonFiniteError, match="non-finite"):
        sampler.sample(NaNBeyond(), torch.full((4, 2), 2.9), generator, n_steps=50)
    name = {LangevinSampler: "langevin", MALASampler: "mala", HMCSampler: "hmc"}[type(sampler)]
    for settings in BAD_SETTINGS[name]:
        with pytest.raises(ValueError):
            type(sampler)(**settings)


@pytest.mark.parametrize(
    "sampler",
    [MALASampler(step_size=0.5, n_steps=150), HMCSampler(step_size=1.2, n_leapfrog=3, n_steps=40)],
    ids=["mala", "hmc"],
)
def test_metropolis_samplers_reproduce_a_gaussian_and_accept_at_a_sensible_rate(sampler):
    energy = GaussianEnergy(MEAN, COVARIANCE)
    generator = torch.Generator().manual_seed(0)
    x_init = torch.randn((2000, 2), generator=generator)

    out = sampler.sample(energy, x_init, generator)

    # Metropolis correction: no step-size bias, so only Monte Carlo error (~0.03 on the mean, ~0.06 on
    # the largest covariance entry with 2000 chains).
    assert torch.allclose(out.samples.mean(0), MEAN, atol=0.1)
    assert torch.allclose(torch.cov(out.samples.T), COVARIANCE, atol=0.15)
    assert 0.5 <= out.acceptance_rate <= 0.95


def test_mala_acceptance_falls_as_the_step_grows_and_box_rejects_escapes():
    energy = GaussianEnergy(MEAN, COVARIANCE)
    start = torch.zeros((500, 2)) + MEAN
    rates = [
        MALASampler(step_size=step, n_steps=20).sample(energy, start, torch.Generator().manual_seed(0)).acceptance_rate
        for step in (0.05, 0.5, 2.0)
    ]
    assert rates[0] > rates[1] > rates[2]
    boxed = MALASampler(step_size=0.5, n_steps=30, box=(-1.0, 1.0)).sample(
        energy, torch.zeros((200, 2)), torch.Generator().manual_seed(0)
    )
    assert boxed.samples.abs().max() <= 1.0
