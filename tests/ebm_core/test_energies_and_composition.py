import math

import pytest
import torch

from ebm_core.composition import WeightedSumEnergy
from ebm_core.energies import (
    ClassifierEnergy,
    ClassifierEnergyConfig,
    GaussianEnergy,
    KernelDensityEnergy,
    MixtureOfGaussiansEnergy,
    MLPEnergy,
    MLPEnergyConfig,
    QuadraticEnergy,
)
from ebm_core.errors import ShapeError
from ebm_core.samplers import MALASampler


def grid_2d(half_width=8.0, n=401):
    axis = torch.linspace(-half_width, half_width, n)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1), float(axis[1] - axis[0]) ** 2


def test_classifier_energy_is_minus_t_logsumexp_of_its_logits():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        energy = ClassifierEnergy(ClassifierEnergyConfig(input_dim=3, n_classes=4, hidden_dims=(8,), temperature=2.0))
    x = torch.randn((5, 3), generator=torch.Generator().manual_seed(0))
    logits = energy.logits(x)
    assert logits.shape == (5, 4)
    torch.testing.assert_close(energy(x), -2.0 * torch.logsumexp(logits / 2.0, dim=1))
    with pytest.raises(ShapeError, match=r"\(B, 3\)"):
        energy.logits(torch.zeros((5, 2)))
    with pytest.raises(ValueError, match="n_classes"):
        ClassifierEnergyConfig(input_dim=3, n_classes=1)
    config = ClassifierEnergyConfig(3, 4, (8, 8), spectral_norm=True, temperature=0.5)
    assert ClassifierEnergyConfig.from_dict(config.to_dict()) == config


def test_mixture_energy_is_a_normalised_density_with_the_right_score_and_samples():
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    covariances = torch.stack([torch.eye(2) * 0.5, torch.tensor([[1.0, 0.3], [0.3, 0.8]])])
    mixture = MixtureOfGaussiansEnergy(means, covariances, weights=torch.tensor([0.3, 0.7]))
    grid, cell = grid_2d()
    with torch.no_grad():
        assert float(torch.exp(-mixture(grid)).sum()) * cell == pytest.approx(1.0, abs=1e-3)

    x = torch.randn((20, 2), generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture(x).sum(), x)
    torch.testing.assert_close(mixture.score(x.detach()), -grad, rtol=1e-4, atol=1e-5)

    samples, component = mixture.sample(20_000, torch.Generator().manual_seed(1))
    assert float((component == 1).float().mean()) == pytest.approx(0.7, abs=0.015)
    torch.testing.assert_close(samples.mean(0), 0.3 * means[0] + 0.7 * means[1], atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="sum to 1"):
        MixtureOfGaussiansEnergy(means, covariances, weights=torch.tensor([0.5, 0.6]))


def test_quadratic_energy_normaliser_is_the_closed_form():
    energy = QuadraticEnergy(2)
    with torch.no_grad():
        energy.mean.copy_(torch.tensor([0.5, -1.0]))
        energy.log_diagonal.copy_(torch.tensor([0.3, -0.2]))
        energy.off_diagonal.copy_(torch.tensor([[0.0, 0.0], [0.7, 0.0]]))
        grid, cell = grid_2d(half_width=10.0)
        numeric = float(torch.logsumexp(-energy(grid), dim=0)) + math.log(cell)
        assert float(energy.log_normaliser()) == pytest.approx(numeric, abs=1e-3)


def test_sampling_a_sum_of_two_gaussian_energies_gives_their_product():
    mean_a, cov_a = torch.tensor([2.0, 0.0]), torch.tensor([[1.0, 0.3], [0.3, 0.5]])
    mean_b, cov_b = torch.tensor([0.0, 1.0]), torch.tensor([[0.6, -0.2], [-0.2, 1.5]])
    product = WeightedSumEnergy([(1.0, GaussianEnergy(mean_a, cov_a)), (1.0, GaussianEnergy(mean_b, cov_b))])
    # Closed form: precisions add; the mean is the precision-weighted average.
    prec_a, prec_b = torch.linalg.inv(cov_a), torch.linalg.inv(cov_b)
    cov = torch.linalg.inv(prec_a + prec_b)
    mean = cov @ (prec_a @ mean_a + prec_b @ mean_b)

    generator = torch.Generator().manual_seed(0)
    out = MALASampler(step_size=0.3, n_steps=100).sample(product, torch.randn((2000, 2), generator=generator), generator)

    torch.testing.assert_close(out.samples.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(out.samples.T), cov, atol=0.05, rtol=0)
    assert 0.5 <= out.acceptance_rate <= 0.95


def test_weights_scale_energies_and_compose():
    a = GaussianEnergy(torch.zeros(2), torch.eye(2))
    b = GaussianEnergy(torch.ones(2), 2 * torch.eye(2))
    x = torch.randn((7, 2), generator=torch.Generator().manual_seed(0))
    mixed = WeightedSumEnergy([(0.5, a), (2.0, b)])
    torch.testing.assert_close(mixed(x), 0.5 * a(x) + 2.0 * b(x))
    torch.testing.assert_close(WeightedSumEnergy([(1.0, mixed), (-1.0, a)])(x), -0.5 * a(x) + 2.0 * b(x))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mlp = MLPEnergy(MLPEnergyConfig(3, (4,)))
    with pytest.raises(ValueError, match="input_dim"):
        WeightedSumEnergy([(1.0, a), (1.0, mlp)])
    with pytest.raises(ValueError, match="finite"):
        WeightedSumEnergy([(float("inf"), a)])
    with pytest.raises(ValueError, match="at least one"):
        WeightedSumEnergy([])
    with pytest.raises(ShapeError):
        mixed(torch.zeros((3, 3)))


def test_kernel_density_energy_known_answer():
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    energy = KernelDensityEnergy(reference, temperature=0.5)
    x = torch.tensor([[2.0, 0.0]])  # direction (1, 0): cosines 1 and 0
    expected = -0.5 * math.log(0.5 * (math.exp(1 / 0.5) + math.exp(0 / 0.5)))
    assert energy(x).item() == pytest.approx(expected, rel=1e-5)


def test_kernel_density_energy_blocks_agree():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(50, 4, generator=generator)
    x = torch.randn(7, 4, generator=generator)
    blocked = KernelDensityEnergy(reference, 0.1, block_size=8)(x)
    torch.testing.assert_close(KernelDensityEnergy(reference, 0.1)(x), blocked)
