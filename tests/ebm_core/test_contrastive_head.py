"""The contrastive head: the supervised contrastive loss against a hand computation, the energy read
in the head's space against its formula, and the detector on labelled blobs (ranking, errors, save and
reload)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ebm_core import (
    ContrastiveHeadConfig,
    ContrastiveHeadDetector,
    LabelledBatch,
    NotFittedError,
    ShapeError,
    TrainConfig,
    load_detector,
)
from ebm_core.energies.contrastive_head import ContrastiveHeadEnergy
from ebm_core.objectives.supervised_contrastive import SupervisedContrastive
from evaluation.metrics import auroc


# ---- the loss ---------------------------------------------------------------------------------------
class UnitRows:
    """A 'model' whose features are its inputs normalised to the unit sphere."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


def supcon_by_hand(z: list[list[float]], y: list[int], tau: float) -> float:
    """Khosla et al.'s L_out written as loops: for each anchor i with positives P(i),
    -1/|P(i)| sum_p log( exp(z_i.z_p/tau) / sum_{a != i} exp(z_i.z_a/tau) ), averaged over anchors."""
    n = len(z)
    units = [[v / math.sqrt(sum(c * c for c in row)) for v in row] for row in z]

    def dot(a, b):
        return sum(p * q for p, q in zip(a, b))

    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and y[p] == y[i]]
        if not positives:
            continue
        denominator = sum(math.exp(dot(units[i], units[a]) / tau) for a in range(n) if a != i)
        terms = [math.log(math.exp(dot(units[i], units[p]) / tau) / denominator) for p in positives]
        per_anchor.append(-sum(terms) / len(positives))
    return sum(per_anchor) / len(per_anchor)


Z = [[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [-0.6, 0.8]]  # rows 0, 1 near one direction; 2, 3 another


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_supcon_loss_matches_the_hand_computation(tau):
    y = [0, 0, 1, 1]
    out = SupervisedContrastive(tau)(UnitRows(), LabelledBatch(torch.tensor(Z, dtype=torch.float64), torch.tensor(y)), None)
    assert out.loss.shape == ()
    assert out.loss.item() == pytest.approx(supcon_by_hand(Z, y, tau), rel=1e-10)
    assert out.stats["supcon_loss"] == pytest.approx(out.loss.item())
    assert out.stats["anchors"] == 1.0


def test_supcon_averages_only_over_anchors_with_a_positive():
    # Rows 0 and 2 share class 0 and 1 and 3 class 2; row 1 (class 1) is alone: not an anchor, only a negative.
    z = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.1, 0.2], [0.0, 0.3, 1.0], [0.1, -0.2, 0.9]]
    y = [0, 1, 0, 2, 2]
    out = SupervisedContrastive(0.2)(UnitRows(), (torch.tensor(z, dtype=torch.float64), torch.tensor(y)), None)
    assert out.loss.item() == pytest.approx(supcon_by_hand(z, y, 0.2), rel=1e-10)
    assert out.stats["anchors"] == pytest.approx(4 / 5)


def test_supcon_is_lower_when_classes_are_tight_and_apart():
    y = torch.tensor([0, 0, 1, 1])
    tight = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]])
    mixed = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.01], [-1.0, 0.01]])
    objective = SupervisedContrastive(0.1)
    assert objective(UnitRows(), LabelledBatch(tight, y), None).loss < objective(UnitRows(), LabelledBatch(mixed, y), None).loss


def test_supcon_errors():
    x = torch.tensor(Z)
    with pytest.raises(ValueError, match="no two rows of this batch share a label"):
        SupervisedContrastive()(UnitRows(), LabelledBatch(x, torch.tensor([0, 1, 2, 3])), None)
    with pytest.raises(ValueError, match="needs labelled batches"):
        SupervisedContrastive()(UnitRows(), x, None)
    with pytest.raises(TypeError, match="features"):
        SupervisedContrastive()(object(), LabelledBatch(x, torch.tensor([0, 0, 1, 1])), None)
    with pytest.raises(ShapeError):
        SupervisedContrastive()(UnitRows(), LabelledBatch(x, torch.tensor([0, 0, 1])), None)
    for tau in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            SupervisedContrastive(tau)


# ---- the energy -------------------------------------------------------------------------------------
def test_contrastive_head_energy_is_the_kernel_density_of_the_reference_features():
    torch.manual_seed(0)
    energy = ContrastiveHeadEnergy(input_dim=3, hidden_dims=(5,), feature_dim=4, temperature=0.2)
    reference = torch.randn(7, 3)
    query = torch.randn(6, 3)
    with pytest.raises(RuntimeError, match="set_reference"):
        energy(query)
    energy.set_reference(reference, batch_size=3)  # blocks of 3: the reference is assembled from parts
    with torch.no_grad():
        got = energy(query)

        def feats(x):  # the head, then onto the unit sphere
            h = energy.head(x)
            return h / h.norm(dim=1, keepdim=True)

        f, r = feats(query).double(), feats(reference).double()
        expected = torch.tensor(
            [-0.2 * (math.log(sum(math.exp(float(f[b] @ r[i]) / 0.2) for i in range(7))) - math.log(7)) for b in range(6)],
            dtype=torch.float64,
        )
    assert got.shape == (6,)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(energy.features(query).norm(dim=1), torch.ones(6))
    with pytest.raises(ShapeError, match=r"\(B, 3\)"):
        energy(torch.randn(2, 4))


def test_contrastive_head_energy_rejects_a_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveHeadEnergy(3, temperature=0.0)


# ---- the detector -------------------------------------------------------------------------------------
def blobs(seed=0, n=60, dim=8):
    """Three labelled blobs around 4 * e_k (k = 0, 1, 2) and an unseen blob around 4 * e_3."""
    rng = np.random.default_rng(seed)
    centres = 4.0 * np.eye(dim)[:4]
    y = np.repeat(np.arange(3), n)
    x = centres[y] + 0.5 * rng.standard_normal((3 * n, dim))
    unseen = centres[3] + 0.5 * rng.standard_normal((n, dim))
    return x, y, unseen


CONFIG = ContrastiveHeadConfig(
    hidden_dims=(32,), feature_dim=8, density_temperature=0.1,
    train=TrainConfig(n_steps=100, batch_size=64, learning_rate=1e-2),
)


@pytest.fixture(scope="module")
def fitted():
    x, y, unseen = blobs()
    train, held = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    detector = ContrastiveHeadDetector(CONFIG).fit(x[train], y[train], seed=0, feature_names=[f"f{i}" for i in range(8)])
    return detector, x[held], unseen


def test_detector_ranks_an_unseen_blob_above_held_out_in_distribution_rows(fitted):
    detector, held, unseen = fitted
    assert auroc(detector.score(held), detector.score(unseen)) > 0.9
    assert detector.classes_ == [0, 1, 2]
    assert detector.n_features_in_ == 8
    losses = detector.history_.loss
    assert np.mean(losses[-3:]) < np.mean(losses[:3])  # the head learnt something


def test_detector_is_a_function_of_its_seed():
    x, y, unseen = blobs(n=20)
    a = ContrastiveHeadDetector(CONFIG).fit(x, y, seed=3).score(unseen)
    b = ContrastiveHeadDetector(CONFIG).fit(x, y, seed=3).score(unseen)
    np.testing.assert_array_equal(a, b)


def test_detector_fit_errors():
    x, y, _ = blobs(n=10)
    with pytest.raises(NotFittedError):
        ContrastiveHeadDetector(CONFIG).score(x)
    with pytest.raises(ValueError, match="needs labels"):
        ContrastiveHeadDetector(CONFIG).fit(x)
    with pytest.raises(ValueError, match="at least 2 classes, got 1"):
        ContrastiveHeadDetector(CONFIG).fit(x, np.zeros(len(x), dtype=int))
    with pytest.raises(ShapeError, match=r"y must have shape \(30,\)"):
        ContrastiveHeadDetector(CONFIG).fit(x, y[:-1])


def test_detector_accepts_string_labels():
    # The selection stage's folds store labels as strings.
    x, y, _ = blobs(n=10)
    detector = ContrastiveHeadDetector(
        ContrastiveHeadConfig(hidden_dims=(8,), feature_dim=4, train=TrainConfig(n_steps=3, batch_size=30))
    ).fit(x, np.array(["b", "a", "c"])[y])
    assert detector.classes_ == ["a", "b", "c"]


def test_detector_saved_and_reloaded_scores_identically(fitted, tmp_path):
    detector, held, unseen = fitted
    detector.calibrate(held, alpha=0.1)
    path = detector.save(tmp_path / "head")
    assert json.loads((path / "detector.json").read_text())["kind"] == "contrastive_head"
    loaded = load_detector(path)
    assert isinstance(loaded, ContrastiveHeadDetector)
    probe = np.vstack([held, unseen])
    np.testing.assert_array_equal(loaded.score(probe), detector.score(probe))
    assert loaded.threshold_ == detector.threshold_ and loaded.alpha_ == 0.1
    np.testing.assert_array_equal(loaded.predict(probe), detector.predict(probe))
    assert loaded.config == detector.config
    assert loaded.classes_ == [0, 1, 2] and loaded.feature_names_in_ == [f"f{i}" for i in range(8)]
    assert loaded.history_.loss == detector.history_.loss


# ---- label-free: pseudo-labels from spherical k-means -----------------------------------------------------
def test_spherical_kmeans_recovers_well_separated_directions():
    from ebm_core.clustering import auto_n_clusters, spherical_kmeans

    rng = np.random.default_rng(0)
    directions = np.eye(6)[:3] * 5.0
    truth = rng.integers(0, 3, 300)
    x = directions[truth] + rng.normal(scale=0.3, size=(300, 6))
    found = spherical_kmeans(x, 3, seed=1)
    # the same partition up to renaming: each found cluster is exactly one true cluster
    pairs = set(zip(found.tolist(), truth.tolist()))
    assert len(pairs) == 3 and len({f for f, _ in pairs}) == 3
    np.testing.assert_array_equal(spherical_kmeans(x, 3, seed=1), found)  # seeded: reproducible
    assert auto_n_clusters(15000) == 87 and auto_n_clusters(3) == 2 and auto_n_clusters(10**7) == 200
    with pytest.raises(ValueError, match="n_clusters"):
        spherical_kmeans(x[:2], 3)


def test_without_labels_the_head_learns_from_clusters_and_flags_an_unseen_direction():
    from ebm_core import ContrastiveHeadConfig, ContrastiveHeadDetector
    from evaluation.metrics import auroc

    rng = np.random.default_rng(0)
    directions = np.eye(8)[:4] * 4.0
    x = directions[rng.integers(0, 4, 400)] + rng.normal(scale=0.4, size=(400, 8))
    held_in = directions[rng.integers(0, 4, 100)] + rng.normal(scale=0.4, size=(100, 8))
    unseen = np.eye(8)[6] * 4.0 + rng.normal(scale=0.4, size=(100, 8))
    config = ContrastiveHeadConfig(
        hidden_dims=(32,), feature_dim=8, pseudo_label_clusters=4,
        train=TrainConfig(n_steps=60, batch_size=128, learning_rate=1e-2),
    )
    detector = ContrastiveHeadDetector(config).fit(x, None, seed=0)
    assert auroc(detector.score(held_in), detector.score(unseen)) > 0.9
    with pytest.raises(ValueError, match="pseudo_label_clusters"):
        ContrastiveHeadDetector(ContrastiveHeadConfig()).fit(x, None)
