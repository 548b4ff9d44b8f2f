import pytest
import torch

from ebm_core import GaussianEnergy, LangevinSampler, NonFiniteError, ShapeError

MEAN = torch.tensor([1.0, -2.0])
COVARIANCE = torch.tensor([[1.0, 0.5], [0.5, 2.0]])


def test_langevin_on_gaussian_energy_reproduces_mean_and_covariance():
    energy = GaussianEnergy(MEAN, COVARIANCE)
    generator = torch.Generator().manual_seed(0)
    x_init = torch.randn((4000, 2), generator=generator)
    sampler = LangevinSampler(step_size=0.02, noise_scale=1.0, n_steps=800)

    samples = sampler.sample(energy, x_init, generator).samples

    # Tolerances: Monte Carlo error ~0.03 on the mean; the step-size bias of unadjusted Langevin on
    # this covariance is about step/2 * variance (<= 3%), well inside 0.12.
    assert torch.allclose(samples.mean(0), MEAN, atol=0.06)
    assert torch.allclose(torch.cov(samples.T), COVARIANCE, atol=0.12)


def test_langevin_traces_record_every_step_and_energy_falls_from_a_far_start():
    energy = GaussianEnergy(MEAN, COVARIANCE)
    generator = torch.Generator().manual_seed(1)
    out = LangevinSampler(step_size=0.05, n_steps=50).sample(energy, torch.full((64, 2), 8.0), generator)
    assert len(out.energy_trace) == len(out.grad_norm_trace) == 50
    assert out.energy_trace[-1] < out.energy_trace[0] / 4
    assert out.samples.shape == (64, 2)


def test_same_generator_seed_gives_identical_chains():
    energy = GaussianEnergy(MEAN, COVARIANCE)
    x_init = torch.zeros((16, 2))
    sampler = LangevinSampler(step_size=0.1, n_steps=10)
    a = sampler.sample(energy, x_init, torch.Generator().manual_seed(7)).samples
    b = sampler.sample(energy, x_init, torch.Generator().manual_seed(7)).samples
    c = sampler.sample(energy, x_init, torch.Generator().manual_seed(8)).samples
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_clamp_keeps_samples_in_box_and_grad_clip_limits_the_move():
    energy = GaussianEnergy(MEAN, COVARIANCE)
    generator = torch.Generator().manual_seed(2)
    clamped = LangevinSampler(step_size=0.1, n_steps=20, clamp=(-0.5, 0.5)).sample(
        energy, torch.zeros((32, 2)), generator
    )
    assert clamped.samples.abs().max() <= 0.5
    start = torch.full((1, 2), 100.0)
    clipped = LangevinSampler(step_size=0.1, noise_scale=0.0, n_steps=1, grad_clip=1.0).sample(
        energy, start, generator
    )
    assert torch.linalg.vector_norm(clipped.samples - start) == pytest.approx(0.1, rel=1e-4)


def test_wrong_shape_and_non_finite_start_raise_named_errors():
    energy = GaussianEnergy(MEAN, COVARIANCE)
    sampler = LangevinSampler()
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ShapeError, match=r"\(B, D\)"):
        sampler.sample(energy, torch.zeros(5), generator)
    with pytest.raises(ShapeError, match=r"\(B, 2\)"):
        sampler.sample(energy, torch.zeros((5, 3)), generator)
    with pytest.raises(NonFiniteError, match="rows"):
        sampler.sample(energy, torch.tensor([[0.0, float("nan")]]), generator)
    with pytest.raises(ValueError, match="step_size"):
        LangevinSampler(step_size=0.0)
