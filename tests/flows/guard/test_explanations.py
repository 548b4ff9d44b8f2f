"""The neighbour bank (flows/guard/explanations.py): known nearest neighbours, the distance rule, the
stored subsample, save/load round trip, damaged banks; and the Langevin pictures of an image energy."""

import json
import math

import numpy as np
import pytest
import torch

from ebm_core import ComposedDetector, DetectorConfig, EnergyDetector, KernelDensityDetector, TrainConfig
from ebm_core.detectors.base import DETECTOR_KINDS, Detector
from flows.guard import explanations
from flows.guard.explanations import (
    NeighbourBank,
    NeighbourBankError,
    image_shape,
    langevin_pictures,
    raw_space_energy,
    save_neighbour_bank,
)


@pytest.fixture
def detector_dir(tmp_path):
    folder = tmp_path / "detector"
    folder.mkdir()
    return folder


def test_no_bank_loads_as_none(detector_dir):
    assert NeighbourBank.load(detector_dir) is None


def test_euclidean_neighbours_on_a_line_with_known_distances(detector_dir):
    # one feature: rows 0, 1, 2, 10; standardised by the training rows' std
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    std = x[:, 0].std()
    save_neighbour_bank(detector_dir, x, labels=["a", "b", "c", "d"])
    bank = NeighbourBank.load(detector_dir)
    assert bank.metric == explanations.EUCLIDEAN
    (found,) = bank.nearest(np.array([[1.2]]), k=3)
    assert [n["row"] for n in found] == [1, 2, 0]
    assert [n["label"] for n in found] == ["b", "c", "a"]
    assert [n["rank"] for n in found] == [1, 2, 3]
    assert [n["text"] for n in found] == [None, None, None]
    np.testing.assert_allclose([n["distance"] for n in found], np.array([0.2, 0.8, 1.2]) / std, rtol=1e-6)
    # a query on a stored row is at distance 0 from it; k larger than the bank gives every row
    (on_row,) = bank.nearest(np.array([[10.0]]), k=10)
    assert len(on_row) == 4 and on_row[0]["row"] == 3 and on_row[0]["distance"] == pytest.approx(0.0, abs=1e-9)


def test_standardisation_is_the_energy_detectors(detector_dir):
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(0, 100, 200), rng.normal(5, 0.01, 200), np.zeros(200)])
    # the second feature's scale is 100x smaller: unstandardised, it would not count at all
    save_neighbour_bank(detector_dir, x)
    bank = NeighbourBank.load(detector_dir)
    detector = EnergyDetector(
        DetectorConfig.from_dict({"hidden_dims": [4], "train": {"n_steps": 1, "batch_size": 32}})
    ).fit(x)
    np.testing.assert_allclose(bank.mean, detector.mean_)
    np.testing.assert_allclose(bank.scale, detector.scale_)
    assert bank.scale[2] == 1.0  # a constant feature is not rescaled
    # feature 0 has std 100, feature 1 std 0.01: standardised, 0.02 in feature 1 is 2 stds, farther than
    # 140 in feature 0 (1.4 stds); raw Euclidean would rank the rows 0, 2, 1 instead
    square = np.array([[0.0, 0.0], [200.0, 0.0], [0.0, 0.02], [200.0, 0.02]])
    save_neighbour_bank(detector_dir, square)
    (found,) = NeighbourBank.load(detector_dir).nearest(np.array([[60.0, 0.0]]), k=3)
    assert [n["row"] for n in found] == [0, 1, 2]
    np.testing.assert_allclose([n["distance"] for n in found], [0.6, 1.4, math.hypot(0.6, 2.0)], rtol=1e-6)


def test_cosine_neighbours_for_text_with_labels_and_texts(detector_dir):
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]])
    texts = ["east", "north", "west", "north-east"]
    save_neighbour_bank(detector_dir, x, labels=["e", "n", "w", "ne"], texts=texts)
    bank = NeighbourBank.load(detector_dir)
    assert bank.metric == explanations.COSINE
    # direction only: a long vector pointing east-north-east
    (found,) = bank.nearest(np.array([[20.0, 2.0]]), k=4)
    assert [n["text"] for n in found] == ["east", "north-east", "north", "west"]
    cos = np.array([20, 22 / math.sqrt(2), 2, -20]) / math.hypot(20, 2)
    np.testing.assert_allclose([n["distance"] for n in found], 1.0 - cos, atol=1e-7)
    assert [n["label"] for n in found] == ["e", "ne", "n", "w"]


def test_ties_go_to_the_earlier_stored_row(detector_dir):
    x = np.array([[0.0, 0.0], [0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # both features: mean 0, same std
    save_neighbour_bank(detector_dir, x)
    bank = NeighbourBank.load(detector_dir)
    (found,) = bank.nearest(np.array([[0.0, 0.0]]), k=5)
    assert [n["row"] for n in found] == [0, 1, 2, 3, 4]  # rows 1-4 are equally far
    assert len({n["distance"] for n in found[1:]}) == 1


def test_chunked_search_matches_brute_force(detector_dir, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5)) * np.array([1, 10, 0.1, 5, 1])
    save_neighbour_bank(detector_dir, x, labels=list(range(300)))
    bank = NeighbourBank.load(detector_dir)
    queries = rng.normal(size=(97, 5)) * np.array([1, 10, 0.1, 5, 1])
    monkeypatch.setattr(explanations, "NEAREST_CHUNK_VALUES", 1000)  # blocks of 1-3 query rows
    found = bank.nearest(queries, k=5)
    z_bank = (bank.vectors - bank.mean) / bank.scale
    z_query = (queries - bank.mean) / bank.scale
    distances = np.linalg.norm(z_query[:, None, :] - z_bank[None, :, :], axis=2)
    expected = np.argsort(distances, axis=1, kind="stable")[:, :5]
    assert [[n["row"] for n in row] for row in found] == expected.tolist()
    np.testing.assert_allclose(
        [[n["distance"] for n in row] for row in found], np.take_along_axis(distances, expected, axis=1), rtol=1e-9
    )
    assert all(n["label"] == n["row"] for row in found for n in row)  # labels were row numbers


def test_subsample_is_seeded_and_keeps_labels_and_texts_aligned(detector_dir):
    x = np.arange(100, dtype=float)[:, None] * np.ones((1, 3))
    labels = [f"label-{i}" for i in range(100)]
    texts = [f"query {i}" for i in range(100)]
    save_neighbour_bank(detector_dir, x, labels=labels, texts=texts, max_rows=10, seed=7)
    bank = NeighbourBank.load(detector_dir)
    kept = np.sort(np.random.default_rng(7).choice(100, size=10, replace=False))
    assert bank.n_rows == 10 and bank.training_rows == kept.tolist()
    assert bank.labels == [f"label-{i}" for i in kept] and bank.texts == [f"query {i}" for i in kept]
    np.testing.assert_array_equal(bank.vectors[:, 0], kept)
    meta = json.loads((detector_dir / "neighbours" / "neighbours.json").read_text())
    assert meta["n_training_rows"] == 100 and meta["seed"] == 7
    save_neighbour_bank(detector_dir, x, max_rows=10, seed=8)  # another seed, another sample, replaced
    assert NeighbourBank.load(detector_dir).training_rows != kept.tolist()
    assert not list(detector_dir.parent.glob(".detector.neighbours.*"))  # no staging folder left behind


def test_round_trip_gives_the_same_answers_and_plain_json_labels(detector_dir):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4)).astype(np.float32)  # float32 rows are stored exactly
    labels = np.arange(50) % 3  # numpy integers become JSON numbers
    save_neighbour_bank(detector_dir, x, labels=labels)
    bank = NeighbourBank.load(detector_dir)
    np.testing.assert_array_equal(bank.vectors, x)
    assert bank.labels == [int(v) for v in labels] and all(type(v) is int for v in bank.labels)
    again = NeighbourBank.load(detector_dir)
    queries = rng.normal(size=(7, 4))
    assert bank.nearest(queries, k=3) == again.nearest(queries, k=3)
    assert (detector_dir / "neighbours" / "vectors.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # no pickle


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda folder: (folder / "neighbours.json").write_text("{not json"), "neighbours.json"),
        (lambda folder: (folder / "neighbours.json").unlink(), "neighbours.json"),
        (lambda folder: (folder / "vectors.safetensors").write_bytes(b"\x00" * 20), "vectors.safetensors"),
        (lambda folder: _edit_json(folder, labels=["only one"]), "labels has 1 entries for 3 stored rows"),
        (lambda folder: _edit_json(folder, metric="manhattan"), "unknown metric"),
        (lambda folder: _edit_json(folder, n_rows=4), "vectors.safetensors"),
        (lambda folder: _edit_json(folder, format_version=99), "format_version 99"),
    ],
)
def test_a_damaged_bank_is_a_clear_error_naming_the_file(detector_dir, damage, named):
    save_neighbour_bank(detector_dir, np.eye(3), labels=[1, 2, 3])
    damage(detector_dir / "neighbours")
    with pytest.raises(NeighbourBankError, match=named.replace("(", r"\(")) as error:
        NeighbourBank.load(detector_dir)
    assert "neighbours" in str(error.value)


def _edit_json(folder, **changes):
    path = folder / "neighbours.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_shape_and_argument_errors_say_what_was_expected(detector_dir):
    with pytest.raises(ValueError, match=r"labels must have one entry per row of x \(3\), got 2"):
        save_neighbour_bank(detector_dir, np.eye(3), labels=[1, 2])
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\), got \(3,\)"):
        save_neighbour_bank(detector_dir, np.ones(3))
    with pytest.raises(TypeError, match=r"texts must be strings; rows \[1\]"):
        save_neighbour_bank(detector_dir, np.eye(2), texts=["a", None])
    with pytest.raises(ValueError, match="NaN or infinite"):
        save_neighbour_bank(detector_dir, np.array([[0.0, np.nan]]))
    with pytest.raises(FileNotFoundError, match="detector folder not found"):
        save_neighbour_bank(detector_dir / "missing", np.eye(2))
    save_neighbour_bank(detector_dir, np.eye(3))
    bank = NeighbourBank.load(detector_dir)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\) \(the bank's 3 features\), got \(2, 4\)"):
        bank.nearest(np.ones((2, 4)))
    with pytest.raises(ValueError, match="k must be a whole number >= 1"):
        bank.nearest(np.ones((1, 3)), k=0)
    assert bank.nearest(np.zeros((0, 3))) == []


# --- Langevin pictures ---------------------------------------------------------------------------------


def test_image_shape_only_for_square_pixel_features():
    assert image_shape([f"pixel_{i}" for i in range(64)]) == (8, 8)
    assert image_shape([f"pixel_{i}" for i in range(63)]) is None
    assert image_shape([f"emb_{i}" for i in range(64)]) is None
    assert image_shape(None) is None


def small_images(n=120, side=4, seed=0):
    """Bright left half or bright top half, pixels 0..16 (two kinds of 4x4 images)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, side, side))
    images[: n // 2, :, : side // 2] = 16
    images[n // 2 :, : side // 2, :] = 16
    images += rng.uniform(0, 2, images.shape)
    return np.clip(images, 0, 16).reshape(n, -1), [f"pixel_{i}" for i in range(side * side)]


def test_raw_space_energy_matches_score_for_each_differentiable_kind():
    x, names = small_images()
    energy = EnergyDetector(
        DetectorConfig.from_dict({"hidden_dims": [16], "train": {"n_steps": 20, "batch_size": 32}})
    ).fit(x, feature_names=names)
    density = KernelDensityDetector(0.1).fit(x, feature_names=names)
    composed = ComposedDetector([(0.3, energy), (0.7, density)])
    rows = torch.as_tensor(x[:10], dtype=torch.float32)
    for detector in (energy, density, composed):
        got = raw_space_energy(detector)(rows).detach().double().numpy()
        np.testing.assert_allclose(got, detector.score(x[:10]), rtol=1e-4, atol=1e-5)


class _RankDetector(Detector):
    """A real (if odd) detector kind whose energy is computed in numpy: no gradient to follow."""

    kind = "test_rank_no_gradient"

    def fit(self, x, y=None, **kwargs):
        self.center_ = x.mean(axis=0)
        self.n_features_in_, self.feature_names_in_ = x.shape[1], kwargs.get("feature_names")
        return self

    def _is_fitted(self):
        return "center_" in vars(self)

    def _energies(self, x):
        return np.abs(x - self.center_).sum(axis=1)

    def _saved_state(self, folder):
        return {}, {"center": torch.as_tensor(self.center_)}

    @classmethod
    def _from_saved(cls, folder, metadata, tensors, device):
        raise NotImplementedError


# Defining a kind registers it process-wide; this one is only for the test below, so it must not show up
# as a kind of the package (tests/ebm_core/test_detector_contract.py checks every registered kind).
DETECTOR_KINDS.pop(_RankDetector.kind)


def test_langevin_pictures_lower_the_energy_and_are_seeded():
    x, names = small_images()
    detector = EnergyDetector(
        DetectorConfig.from_dict(
            {"hidden_dims": [32], "objective": {"name": "dsm", "sigmas": [1.0]},
             "train": {"n_steps": 300, "batch_size": 64, "learning_rate": 0.003}}
        )
    ).fit(x, feature_names=names)
    pictures = langevin_pictures(detector, x, names, n_samples=6, seed=3, n_steps=100, value_range=(0.0, 16.0))
    assert pictures["image_shape"] == [4, 4] and pictures["value_range"] == [0.0, 16.0]
    assert np.shape(pictures["samples"]) == (6, 16) and np.shape(pictures["training_examples"]) == (6, 16)
    assert pictures["note"] is None and pictures["sampler"]["n_steps"] == 100
    # the chains started from uniform noise and went downhill: lower energy than noise
    noise = np.random.default_rng(0).uniform(0, 16, (200, 16))
    assert np.mean(pictures["sample_energies"]) < np.mean(detector.score(noise))
    np.testing.assert_allclose(pictures["sample_energies"], detector.score(np.array(pictures["samples"])))
    again = langevin_pictures(detector, x, names, n_samples=6, seed=3, n_steps=100, value_range=(0.0, 16.0))
    assert again == pictures
    other = langevin_pictures(detector, x, names, n_samples=6, seed=4, n_steps=100, value_range=(0.0, 16.0))
    assert other["samples"] != pictures["samples"]


def test_langevin_pictures_skip_what_cannot_be_drawn_or_sampled():
    x, names = small_images()
    assert langevin_pictures(KernelDensityDetector().fit(x), x, [f"emb_{i}" for i in range(16)]) is None
    rank = _RankDetector().fit(x, feature_names=names)
    pictures = langevin_pictures(rank, x, names, n_samples=4)
    assert pictures["samples"] == [] and "no differentiable energy" in pictures["note"]
    assert len(pictures["training_examples"]) == 4  # the training images are still shown
    composed = ComposedDetector([(0.5, rank), (0.5, KernelDensityDetector().fit(x, feature_names=names))])
    assert "no differentiable energy" in langevin_pictures(composed, x, names, n_samples=2)["note"]
