import numpy as np
import pytest

from ebm_core import (
    DetectorConfig,
    EnergyDetector,
    LangevinSampler,
    NotCalibratedError,
    NotFittedError,
    ShapeError,
    TrainConfig,
)

SMALL = DetectorConfig(
    hidden_dims=(32, 32),
    sampler=LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=10),
    buffer_capacity=1000,
    train=TrainConfig(n_steps=150, batch_size=64, learning_rate=1e-3),
)


def gaussian(n, seed, dim=2):
    return np.random.default_rng(seed).normal(loc=3.0, scale=2.0, size=(n, dim))


@pytest.fixture(scope="module")
def fitted():
    return EnergyDetector(SMALL).fit(gaussian(1000, 0), seed=0, feature_names=["a", "b"])


def test_fit_learns_standardisation_and_is_reproducible(fitted):
    np.testing.assert_allclose(fitted.mean_, [3.0, 3.0], atol=0.15)
    np.testing.assert_allclose(fitted.scale_, [2.0, 2.0], atol=0.15)
    again = EnergyDetector(SMALL).fit(gaussian(1000, 0), seed=0, feature_names=["a", "b"])
    x = gaussian(50, 1)
    np.testing.assert_array_equal(fitted.score(x), again.score(x))


def test_energy_is_lower_in_distribution_than_far_away(fitted):
    far = gaussian(200, 2) + 20.0
    assert np.median(fitted.score(far)) > np.quantile(fitted.score(gaussian(200, 3)), 0.95)


def test_calibrated_detector_flags_about_alpha_of_fresh_draws(fitted):
    detector = EnergyDetector.load(_save(fitted))  # a copy, so the module fixture stays uncalibrated
    detector.calibrate(gaussian(5000, 4), alpha=0.05)
    realised = detector.predict(gaussian(10_000, 5)).mean()
    assert abs(realised - 0.05) < 0.01
    p = detector.p_value(gaussian(10_000, 6))
    assert np.all((p > 0) & (p <= 1))
    assert abs(np.mean(p <= 0.05) - 0.05) < 0.01


def test_save_and_load_scores_identically(tmp_path, fitted):
    detector = EnergyDetector.load(_save(fitted)).calibrate(gaussian(500, 7), alpha=0.1)
    detector.save(tmp_path / "det")
    loaded = EnergyDetector.load(tmp_path / "det")
    x = gaussian(300, 8)
    np.testing.assert_array_equal(detector.score(x), loaded.score(x))
    np.testing.assert_array_equal(detector.p_value(x), loaded.p_value(x))
    assert loaded.threshold_ == detector.threshold_
    assert loaded.feature_names_in_ == ["a", "b"]
    assert loaded.config == detector.config
    assert sorted(p.name for p in (tmp_path / "det").iterdir()) == ["detector.json", "weights.safetensors"]


def test_unfitted_and_uncalibrated_use_raise_named_errors(fitted):
    with pytest.raises(NotFittedError, match="fit"):
        EnergyDetector(SMALL).score(gaussian(3, 0))
    with pytest.raises(NotCalibratedError, match="calibrate"):
        fitted.predict(gaussian(3, 0))
    with pytest.raises(NotCalibratedError):
        fitted.p_value(gaussian(3, 0))


def test_bad_inputs_raise_errors_that_say_what_is_wrong(fitted, tmp_path):
    with pytest.raises(ShapeError, match=r"\(N, 2\)"):
        fitted.score(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"rows \[1\], columns \[0\]"):
        fitted.score(np.array([[0.0, 0.0], [np.nan, 0.0]]))
    with pytest.raises(TypeError, match="numeric"):
        fitted.score(np.array([["a", "b"]]))
    with pytest.raises(FileNotFoundError, match="detector.json"):
        EnergyDetector.load(tmp_path / "nothing-here")


def _save(detector, _counter=[0]):
    import tempfile
    from pathlib import Path

    _counter[0] += 1
    return detector.save(Path(tempfile.mkdtemp()) / f"copy{_counter[0]}")


def test_failed_recalibration_leaves_the_previous_calibration_intact(fitted):
    detector = EnergyDetector.load(_save(fitted)).calibrate(gaussian(500, 9), alpha=0.1)
    before = (detector.threshold_, detector.alpha_, detector.calibration_energies_.copy())
    with pytest.raises(ValueError, match="alpha"):
        detector.calibrate(gaussian(50, 10), alpha=1.5)
    assert detector.threshold_ == before[0] and detector.alpha_ == before[1]
    np.testing.assert_array_equal(detector.calibration_energies_, before[2])


def test_saving_over_a_detector_replaces_it_whole_and_keeps_companion_files(fitted, tmp_path):
    target = tmp_path / "det"
    EnergyDetector.load(_save(fitted)).save(target)
    (target / "featurizer.json").write_text("{}")
    calibrated = EnergyDetector.load(target).calibrate(gaussian(300, 11), alpha=0.1)
    calibrated.save(target)
    assert sorted(p.name for p in target.iterdir()) == ["detector.json", "featurizer.json", "weights.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["det"]  # no staging or backup folders left behind
    assert EnergyDetector.load(target).threshold_ == calibrated.threshold_
