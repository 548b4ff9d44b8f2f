"""EnergyDetector beyond the shared contract (tests/ebm_core/test_detector_contract.py): what it learns,
known answers for calibration and score temperature, checkpoint/resume through `fit`, and loading
detectors saved in the earlier format."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ebm_core import (
    CDConfig,
    CEConfig,
    DetectorConfig,
    EnergyDetector,
    LangevinSampler,
    ShapeError,
    TrainConfig,
    load_detector,
)

SMALL = DetectorConfig(
    hidden_dims=(32, 32),
    objective=CDConfig(buffer_capacity=1000),
    sampler=LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=10),
    train=TrainConfig(n_steps=150, batch_size=64, learning_rate=1e-3),
)


def gaussian(n, seed, dim=2):
    return np.random.default_rng(seed).normal(loc=3.0, scale=2.0, size=(n, dim))


def blobs(seed=0, n=60):
    rng = np.random.default_rng(seed)
    centres = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    y = np.repeat(np.arange(3), n)
    return centres[y] + 0.3 * rng.standard_normal((3 * n, 2)), y


@pytest.fixture(scope="module")
def fitted():
    return EnergyDetector(SMALL).fit(gaussian(1000, 0), seed=0, feature_names=["a", "b"])


def test_fit_learns_standardisation_and_is_reproducible(fitted):
    np.testing.assert_allclose(fitted.mean_, [3.0, 3.0], atol=0.15)
    np.testing.assert_allclose(fitted.scale_, [2.0, 2.0], atol=0.15)
    again = EnergyDetector(SMALL).fit(gaussian(1000, 0), seed=0, feature_names=["a", "b"])
    x = gaussian(50, 1)
    np.testing.assert_array_equal(fitted.score(x), again.score(x))


def test_calibrated_detector_flags_about_alpha_of_fresh_draws(fitted, tmp_path):
    detector = EnergyDetector.load(fitted.save(tmp_path / "copy"))  # a copy: the fixture stays uncalibrated
    detector.calibrate(gaussian(5000, 4), alpha=0.05)
    realised = detector.predict(gaussian(10_000, 5)).mean()
    assert abs(realised - 0.05) < 0.01
    p = detector.p_value(gaussian(10_000, 6))
    assert np.all((p > 0) & (p <= 1))
    assert abs(np.mean(p <= 0.05) - 0.05) < 0.01


def test_bad_fit_arguments_raise_errors_that_say_what_is_wrong(fitted):
    with pytest.raises(TypeError, match="numeric"):
        fitted.score(np.array([["a", "b"]]))
    with pytest.raises(ShapeError, match="3 feature names for 2"):
        EnergyDetector(SMALL).fit(gaussian(10, 0), feature_names=["a", "b", "c"])
    x, y = blobs()
    with pytest.raises(ValueError, match="'jem' needs labels"):
        EnergyDetector(SMALL.with_objective("jem")).fit(x)
    with pytest.raises(ShapeError, match=r"y must have shape \(180,\)"):
        EnergyDetector(SMALL.with_objective("ce")).fit(x, y[:10])
    with pytest.raises(ShapeError, match="outliers"):
        EnergyDetector(SMALL.with_objective("margin")).fit(x, outliers=np.zeros((5, 3)))


def test_cross_entropy_classifies_and_score_temperature_rereads_without_retraining(tmp_path):
    x, y = blobs()
    config = DetectorConfig(
        hidden_dims=(16,), objective=CEConfig(), train=TrainConfig(n_steps=150, batch_size=64, learning_rate=1e-2)
    )
    detector = EnergyDetector(config).fit(x, y, seed=0)
    assert detector.energy_kind_ == "classifier" and detector.classes_ == [0, 1, 2]
    xs = torch.as_tensor(detector._standardize(x), dtype=torch.float32)
    with torch.no_grad():
        logits = detector.energy_.logits(xs)
    assert (logits.argmax(1).numpy() == y).mean() > 0.95
    detector.set_score_temperature(2.0)
    expected = -2.0 * torch.logsumexp(logits / 2.0, dim=1)  # E = -T lse(f / T)
    np.testing.assert_allclose(detector.score(x), expected.double().numpy(), rtol=1e-5, atol=1e-5)
    assert detector.config.score_temperature == 2.0
    loaded = load_detector(detector.save(tmp_path / "ce"))
    np.testing.assert_array_equal(loaded.score(x), detector.score(x))
    with pytest.raises(ValueError, match="temperature"):
        detector.set_score_temperature(0.0)
    with pytest.raises(ValueError, match="classifier"):
        EnergyDetector(replace(config, objective=CDConfig(buffer_capacity=100))).fit(x).set_score_temperature(2.0)


class StopAt:
    """A callback that kills the run at a step, as a crash or a pre-empted worker would."""

    def __init__(self, step):
        self.step = step

    def __call__(self, step, n_steps, metrics):
        if step == self.step:
            raise KeyboardInterrupt(f"killed at step {step}")


def test_a_fit_killed_and_resumed_from_its_checkpoint_dir_ends_as_an_uninterrupted_fit(tmp_path):
    config = replace(SMALL, train=TrainConfig(n_steps=40, batch_size=64, learning_rate=1e-3, checkpoint_every=10))
    x, probe = gaussian(500, 0), gaussian(50, 1)
    uninterrupted = EnergyDetector(config).fit(x, seed=3)

    with pytest.raises(KeyboardInterrupt):  # logged at step 30, killed before its checkpoint
        EnergyDetector(config).fit(x, seed=3, checkpoint_dir=tmp_path, callbacks=(StopAt(30),))
    resumed = EnergyDetector(config).fit(x, seed=3, checkpoint_dir=tmp_path)

    assert resumed.history_.resumed_from == [20]
    assert resumed.history_.steps == uninterrupted.history_.steps
    np.testing.assert_array_equal(resumed.score(probe), uninterrupted.score(probe))
    with pytest.raises(ValueError, match="another fit"):
        EnergyDetector(config).fit(x, seed=4, checkpoint_dir=tmp_path)


def test_a_detector_saved_in_format_1_with_the_flat_config_still_loads(tmp_path):
    config = DetectorConfig(
        hidden_dims=(8,),
        objective=CDConfig(buffer_capacity=100),
        sampler=LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=5),
        train=TrainConfig(n_steps=10, batch_size=32),
    )
    x = gaussian(200, 0)
    detector = EnergyDetector(config).fit(x, feature_names=["a", "b"]).calibrate(gaussian(100, 1), alpha=0.1)
    path = detector.save(tmp_path / "old")
    metadata = json.loads((path / "detector.json").read_text())
    del metadata["kind"]
    metadata["format_version"] = 1
    metadata["config"] = {  # the flat schema, as EnergyDetector wrote it before per-objective configs
        "hidden_dims": [8], "spectral_norm": False,
        "sampler": {"step_size": 0.01, "noise_scale": 0.1, "n_steps": 5, "grad_clip": None, "clamp": None},
        "buffer_capacity": 100, "buffer_reinit_rate": 0.05, "noise_margin": 0.25, "energy_l2": 0.01,
        "min_feature_scale": 0.001, "objective": "cd", "temperature": 1.0, "score_temperature": None,
        "dsm_sigmas": [0.1, 0.3, 1.0], "ssm_projections": 1, "nce_noise_ratio": 4, "nce_noise_scale": 1.5,
        "margin_in": -1.0, "margin_out": 1.0, "train": config.train.to_dict(), "device": "cpu",
    }  # fmt: skip
    (path / "detector.json").write_text(json.dumps(metadata))
    loaded = load_detector(path)
    assert isinstance(loaded, EnergyDetector) and loaded.config == config
    np.testing.assert_array_equal(loaded.score(x), detector.score(x))
    assert loaded.threshold_ == detector.threshold_ and loaded.feature_names_in_ == ["a", "b"]
