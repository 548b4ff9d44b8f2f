"""ComposedDetector and KernelDensityDetector beyond the shared contract: known answers, how a
composition is saved, and how `fit` hands each member its parameters."""

import json

import numpy as np
import pytest

from ebm_core import (
    ComposedDetector,
    DetectorConfig,
    EnergyDetector,
    KernelDensityDetector,
    MarginConfig,
    NotFittedError,
    TrainConfig,
    load_detector,
)


def blobs(seed=0, n=60, dim=2):
    rng = np.random.default_rng(seed)
    centres = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])[:, :dim]
    y = np.repeat(np.arange(3), n)
    return centres[y] + 0.3 * rng.standard_normal((3 * n, dim)), y


MARGIN = DetectorConfig(hidden_dims=(8,), objective=MarginConfig(), train=TrainConfig(n_steps=20, batch_size=32))


def test_kernel_density_score_is_the_von_mises_fisher_energy_of_the_training_rows():
    reference = np.array([[1.0, 0.0], [0.0, 3.0]])  # directions (1, 0) and (0, 1)
    detector = KernelDensityDetector(temperature=0.5).fit(reference)
    score = detector.score(np.array([[2.0, 0.0], [0.0, -1.0]]))
    expected = [-0.5 * np.log(0.5 * (np.exp(2.0) + np.exp(0.0))), -0.5 * np.log(0.5 * (np.exp(0.0) + np.exp(-2.0)))]
    np.testing.assert_allclose(score, expected, rtol=1e-6)


def test_kernel_density_detector_ranks_unseen_directions_higher_and_saves_its_temperature(tmp_path):
    x, _ = blobs()
    detector = KernelDensityDetector(temperature=0.05).fit(x)
    assert detector.score(np.array([[0.0, -4.0]]))[0] > detector.score(np.array([[4.0, 0.1]]))[0]
    detector.calibrate(x, alpha=0.1)
    assert detector.predict(x).mean() <= 0.1 + 1 / (len(x) + 1)
    detector.save(tmp_path / "kde")
    assert json.loads((tmp_path / "kde" / "detector.json").read_text())["temperature"] == 0.05


def test_composed_score_is_the_weighted_sum_of_its_members_scores():
    x, y = blobs()
    a = KernelDensityDetector(0.05).fit(x)
    b = KernelDensityDetector(0.5).fit(x)
    composed = ComposedDetector([(0.3, a), (2.0, b)])  # fitted members: no fit needed
    np.testing.assert_allclose(composed.score(x), 0.3 * a.score(x) + 2.0 * b.score(x), rtol=1e-12)
    with pytest.raises(ValueError, match="finite"):
        ComposedDetector([(float("nan"), a)])
    with pytest.raises(ValueError, match="at least one"):
        ComposedDetector([])
    with pytest.raises(TypeError, match="Detectors"):
        ComposedDetector([(1.0, a.energy_)])


def test_composed_members_are_saved_in_subfolders_each_loadable_and_weights_in_json(tmp_path):
    x, y = blobs()
    members = [(0.5, KernelDensityDetector(0.1).fit(x)), (1.5, EnergyDetector(MARGIN).fit(x, y))]
    path = ComposedDetector(members).calibrate(x, alpha=0.1).save(tmp_path / "composed")
    metadata = json.loads((path / "detector.json").read_text())
    assert metadata["weights"] == [0.5, 1.5] and metadata["members"] == ["member_0", "member_1"]
    for (_, member), folder in zip(members, metadata["members"]):
        np.testing.assert_array_equal(load_detector(path / folder).score(x), member.score(x))


def test_composed_fit_gives_each_member_the_parameters_it_takes(tmp_path):
    x, y = blobs()
    outliers = blobs(1)[0] * 3.0
    composed = ComposedDetector([(1.0, KernelDensityDetector(0.1)), (1.0, EnergyDetector(MARGIN))])
    composed.fit(x, y, outliers=outliers, seed=2, feature_names=["a", "b"], checkpoint_dir=tmp_path / "ckpt")
    alone = EnergyDetector(MARGIN).fit(x, y, outliers=outliers, seed=2)
    np.testing.assert_array_equal(composed.members[1][1].score(x), alone.score(x))
    assert composed.feature_names_in_ == ["a", "b"]
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["member_1"]  # only the trained member checkpoints


def test_composed_members_must_read_the_same_features():
    x, y = blobs()
    narrow = KernelDensityDetector(0.1).fit(x[:, :1])
    composed = ComposedDetector([(1.0, KernelDensityDetector(0.1).fit(x)), (1.0, narrow)])
    with pytest.raises(ValueError, match="same input_dim"):
        composed.score(x)
    with pytest.raises(NotFittedError, match="fit"):
        ComposedDetector([(1.0, KernelDensityDetector(0.1)), (1.0, narrow)]).score(x)
