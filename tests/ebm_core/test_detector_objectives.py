"""Every objective trains through EnergyDetector and survives a save/load round trip."""

from dataclasses import replace

import numpy as np
import pytest

from ebm_core import OBJECTIVES, DetectorConfig, EnergyDetector, LangevinSampler, TrainConfig

TINY = DetectorConfig(
    hidden_dims=(16,),
    sampler=LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=5),
    buffer_capacity=200,
    train=TrainConfig(n_steps=30, batch_size=32, learning_rate=1e-3),
)


def labelled_blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    return centres[y] + rng.normal(scale=0.5, size=(n, 3)), np.array(["a", "b", "c"])[y]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_fits_calibrates_and_round_trips(objective, tmp_path):
    x, y = labelled_blobs()
    detector = EnergyDetector(replace(TINY, objective=objective)).fit(x, y_train=y, seed=0)
    detector.calibrate(labelled_blobs(200, seed=1)[0], alpha=0.1)
    detector.save(tmp_path / objective)
    loaded = EnergyDetector.load(tmp_path / objective)
    probe = labelled_blobs(50, seed=2)[0]
    np.testing.assert_array_equal(detector.score(probe), loaded.score(probe))
    assert loaded.energy_kind_ == detector.energy_kind_
    expected_kind = "classifier" if objective in ("ce", "jem", "margin") else "mlp"
    assert loaded.energy_kind_ == expected_kind
    if expected_kind == "classifier":
        assert loaded.classes_ == ["a", "b", "c"]
    assert len(loaded.history_.steps) > 0


def test_jem_without_labels_is_refused():
    x, _ = labelled_blobs()
    with pytest.raises(ValueError, match="needs labels"):
        EnergyDetector(replace(TINY, objective="jem")).fit(x)


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="unknown objective 'gan'"):
        replace(TINY, objective="gan")
