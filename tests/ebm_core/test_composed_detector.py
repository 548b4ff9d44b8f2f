import numpy as np
import pytest
import torch

from ebm_core.composed_detector import (
    ComposedDetector,
    CrossEntropyObjective,
    KernelDensityDetector,
    KernelDensityEnergy,
    fit_with_objective,
    set_temperature,
)
from ebm_core.detector import DetectorConfig, EnergyDetector
from ebm_core.errors import NotCalibratedError, NotFittedError
from ebm_core.training import TrainConfig


def _blobs(seed=0, n=60):
    rng = np.random.default_rng(seed)
    centres = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    y = np.repeat(np.arange(3), n)
    return centres[y] + 0.3 * rng.standard_normal((3 * n, 2)), y


def test_kernel_density_energy_known_answer():
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    energy = KernelDensityEnergy(reference, temperature=0.5)
    x = torch.tensor([[2.0, 0.0]])  # direction (1, 0): cosines 1 and 0
    expected = -0.5 * np.log(0.5 * (np.exp(1 / 0.5) + np.exp(0 / 0.5)))
    assert energy(x).item() == pytest.approx(expected, rel=1e-5)


def test_kernel_density_energy_blocks_agree():
    rng = torch.Generator().manual_seed(0)
    reference = torch.randn(50, 4, generator=rng)
    x = torch.randn(7, 4, generator=rng)
    full = KernelDensityEnergy(reference, 0.1)(x)
    blocked = KernelDensityEnergy(reference, 0.1, block_size=8)(x)
    torch.testing.assert_close(full, blocked)


def test_kernel_density_detector_ranks_far_directions_higher_and_needs_fit():
    x, _ = _blobs()
    det = KernelDensityDetector(temperature=0.05)
    with pytest.raises(NotFittedError):
        det.score(x)
    det.fit(x)
    assert det.score(np.array([[0.0, -4.0]]))[0] > det.score(np.array([[4.0, 0.1]]))[0]
    with pytest.raises(NotCalibratedError):
        det.predict(x)
    det.calibrate(x, alpha=0.1)
    assert det.predict(x).mean() <= 0.1 + 1 / (len(x) + 1)


def test_cross_entropy_fit_classifies_and_temperature_rereads():
    x, y = _blobs()
    cfg = DetectorConfig(hidden_dims=(16,), train=TrainConfig(n_steps=150, batch_size=64, learning_rate=1e-2))
    det = fit_with_objective(EnergyDetector(cfg), x, y, lambda x_std, g: CrossEntropyObjective(), seed=0)
    assert det.energy_kind_ == "classifier" and det.classes_ == [0, 1, 2]
    xs = torch.as_tensor(det._standardize(x), dtype=torch.float32)
    accuracy = (det.energy_.logits(xs).argmax(1).numpy() == y).mean()
    assert accuracy > 0.95
    with torch.no_grad():
        logits = det.energy_.logits(xs)
    set_temperature(det, 2.0)
    expected = -2.0 * torch.logsumexp(logits / 2.0, dim=1)
    np.testing.assert_allclose(det.score(x), expected.double().numpy(), rtol=1e-5, atol=1e-5)


def test_cross_entropy_objective_needs_labels():
    with pytest.raises(ValueError, match="labelled"):
        CrossEntropyObjective()(None, torch.zeros(4, 2), torch.Generator())


def test_composed_detector_is_weighted_sum():
    x, y = _blobs()
    a = KernelDensityDetector(0.05).fit(x)
    b = KernelDensityDetector(0.5).fit(x)
    comp = ComposedDetector([(0.3, a), (2.0, b)])
    np.testing.assert_allclose(comp.score(x), 0.3 * a.score(x) + 2.0 * b.score(x))
    comp.calibrate(x, 0.05)
    assert comp.p_value(x).shape == (len(x),)
    with pytest.raises(ValueError, match="finite"):
        ComposedDetector([(float("nan"), a)])
