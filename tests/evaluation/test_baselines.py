"""Known answers for the baseline OOD scorers (higher = more OOD)."""

import json

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from ebm_core.errors import NonFiniteError, NotFittedError, ShapeError
from evaluation.baselines import (
    BaselineResults,
    CosineKNNBaseline,
    GaussianDensityBaseline,
    LogitEnergyBaseline,
    MahalanobisBaseline,
    MaxSoftmaxBaseline,
    default_baselines,
    rank_detectors,
    run_baselines,
)
from evaluation.metrics import OODMetrics, auroc

BASELINE_NAMES = ["max_softmax", "logit_energy", "mahalanobis", "cosine_knn", "gaussian_density"]


def three_class_toy(seed=0, n_train=300, n_test=200):
    """Three Gaussian classes on a ring of radius 6 in the (x1, x2) plane, flat in x3 (std 0.5).

    Two OOD sets:
    - "axis": around (0, 0, 6), off the plane and equally far from every class. Each score family
      sees it: the classifier is maximally unsure there (its logits do not depend on x3, in which
      the classes never differ) and it is far from every class and from the one pooled Gaussian.
      (Three dimensions, not two: in 2-D the region where the classifier is unsure, the middle of
      the ring, is where one pooled Gaussian is densest.)
    - "along_class": three times as far out as the class centres, along the class directions.
    """
    rng = np.random.default_rng(seed)
    angles = np.deg2rad([90, 210, 330])
    centres = np.stack([6 * np.cos(angles), 6 * np.sin(angles), np.zeros(3)], axis=1)

    def sample(n):
        labels = rng.integers(0, 3, n)
        return centres[labels] + 0.5 * rng.normal(size=(n, 3)), labels

    x_train, y_train = sample(n_train)
    x_test, _ = sample(n_test)
    splits = {
        "test": x_test,
        "axis": np.array([0.0, 0.0, 6.0]) + 0.5 * rng.normal(size=(n_test, 3)),
        "along_class": 3 * centres[rng.integers(0, 3, n_test)] + 0.5 * rng.normal(size=(n_test, 3)),
    }
    return x_train, y_train, splits


def exact_gaussian_sample(mean, covariance, n, seed):
    """n rows whose sample mean is exactly `mean` and whose maximum-likelihood covariance is exactly
    `covariance` (centred, orthonormalised columns scaled by sqrt(n), then coloured)."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, len(mean)))
    orthonormal, _ = np.linalg.qr(raw - raw.mean(axis=0))
    return np.sqrt(n) * orthonormal @ np.linalg.cholesky(covariance).T + mean


COVARIANCE = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])


def test_every_baseline_separates_ood_that_sits_off_the_class_plane():
    x_train, y_train, splits = three_class_toy()
    results = run_baselines(x_train, y_train, splits, "test", ["axis"])
    assert list(results.metrics) == BASELINE_NAMES
    for name in BASELINE_NAMES:
        assert results.metrics[name]["axis"].auroc > 0.95, name


def test_classifier_scores_miss_inputs_far_out_along_a_class_direction():
    # The documented caveat: a linear classifier is MORE confident far from the data (and cosine
    # similarity ignores the norm), while distance and density scores flag these inputs.
    x_train, y_train, splits = three_class_toy()
    results = run_baselines(x_train, y_train, splits, "test", ["along_class"])
    for name in ["max_softmax", "logit_energy"]:
        assert results.metrics[name]["along_class"].auroc < 0.05, name
    for name in ["mahalanobis", "gaussian_density"]:
        assert results.metrics[name]["along_class"].auroc > 0.95, name


def test_mahalanobis_on_one_gaussian_is_the_analytic_squared_distance():
    mean = np.array([1.0, -2.0, 0.5])
    x_train = exact_gaussian_sample(mean, COVARIANCE, n=50, seed=0)
    queries = np.random.default_rng(1).normal(size=(7, 3)) * 3

    scores = MahalanobisBaseline(reg=0.0).fit(x_train).score(queries)

    offsets = queries - mean
    expected = np.einsum("nd,nd->n", offsets, np.linalg.solve(COVARIANCE, offsets.T).T)
    np.testing.assert_allclose(scores, expected, rtol=1e-9)
    assert MahalanobisBaseline(reg=0.0).fit(x_train).score(mean[None, :])[0] == pytest.approx(0.0, abs=1e-9)


def test_mahalanobis_with_labels_takes_the_nearest_class_under_the_shared_covariance():
    # Both classes have exactly COVARIANCE as their own covariance, so the pooled one is COVARIANCE.
    means = [np.array([0.0, 0.0, 0.0]), np.array([5.0, 1.0, -1.0])]
    x_train = np.vstack([exact_gaussian_sample(m, COVARIANCE, n=40, seed=i) for i, m in enumerate(means)])
    y_train = np.repeat(["a", "b"], 40)
    queries = np.array([[0.5, 0.0, 0.0], [4.0, 1.0, -1.0], [2.5, 0.5, -0.5]])

    baseline = MahalanobisBaseline(reg=0.0).fit(x_train, y_train)

    def squared(x, m):
        return (x - m) @ np.linalg.solve(COVARIANCE, x - m)

    expected = [min(squared(x, m) for m in means) for x in queries]
    np.testing.assert_allclose(baseline.score(queries), expected, rtol=1e-9)
    assert baseline.class_conditional_ and list(baseline.classes_) == ["a", "b"]


def test_mahalanobis_regularisation_flags_directions_the_training_data_never_varied_in():
    rng = np.random.default_rng(0)
    x_train = np.c_[rng.normal(size=(100, 2)), np.zeros(100)]  # third feature always 0
    baseline = MahalanobisBaseline().fit(x_train)
    typical, off = baseline.score(np.array([[0.5, -0.5, 0.0], [0.5, -0.5, 0.1]]))
    assert off > 1e3 * typical
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        MahalanobisBaseline(reg=0.0).fit(x_train)


def test_gaussian_density_is_the_negative_log_density():
    mean = np.array([0.3, 0.0, -1.0])
    x_train = exact_gaussian_sample(mean, COVARIANCE, n=60, seed=2)
    queries = np.random.default_rng(3).normal(size=(5, 3))

    baseline = GaussianDensityBaseline(shrinkage=0.0).fit(x_train)

    expected = -multivariate_normal(mean, COVARIANCE).logpdf(queries)
    np.testing.assert_allclose(baseline.score(queries), expected, rtol=1e-9)


def test_gaussian_density_shrinks_towards_a_scaled_identity():
    x_train = exact_gaussian_sample(np.zeros(3), COVARIANCE, n=60, seed=4)
    baseline = GaussianDensityBaseline(shrinkage=0.5).fit(x_train)
    expected = 0.5 * COVARIANCE + 0.5 * np.trace(COVARIANCE) / 3 * np.eye(3)
    np.testing.assert_allclose(baseline.covariance_, expected, atol=1e-12)
    learned = GaussianDensityBaseline().fit(x_train)  # Ledoit-Wolf picks the amount
    assert 0.0 <= learned.shrinkage_ <= 1.0


def test_cosine_knn_known_answers():
    x_train = np.array([[1.0, 0.0], [0.0, 1.0]])
    nearest = CosineKNNBaseline(k=1).fit(x_train)
    # A training row scores 0 (also scaled: cosine ignores the norm); the diagonal is 45 degrees away.
    np.testing.assert_allclose(nearest.score([[1.0, 0.0], [5.0, 0.0]]), [0.0, 0.0], atol=1e-15)
    assert nearest.score([[1.0, 1.0]])[0] == pytest.approx(1 - 1 / np.sqrt(2), abs=1e-15)
    # k = 2: the second most similar row of [1, 0] is [0, 1], at similarity 0.
    assert CosineKNNBaseline(k=2).fit(x_train).score([[1.0, 0.0]])[0] == pytest.approx(1.0, abs=1e-15)


def test_cosine_knn_scores_training_rows_about_zero_across_batches():
    x_train = np.random.default_rng(5).normal(size=(50, 8))
    scores = CosineKNNBaseline(k=1, batch_size=7).fit(x_train).score(x_train)
    np.testing.assert_allclose(scores, 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="k must be"):
        CosineKNNBaseline(k=51).fit(x_train)


def test_classifier_scores_agree_with_the_fitted_classifier():
    x_train, y_train, splits = three_class_toy(n_train=150, n_test=20)
    msp = MaxSoftmaxBaseline().fit(x_train, y_train)
    energy = LogitEnergyBaseline().fit(x_train, y_train)
    x = splits["test"]
    probabilities = msp.classifier_.predict_proba(x)
    np.testing.assert_allclose(msp.score(x), -probabilities.max(axis=1), atol=1e-12)
    np.testing.assert_allclose(energy.score(x), -logsumexp(energy.classifier_.decision_function(x), axis=1), atol=1e-12)


def test_two_class_logits_are_the_symmetric_pair():
    rng = np.random.default_rng(6)
    x_train = np.r_[rng.normal(-2, 1, (40, 2)), rng.normal(2, 1, (40, 2))]
    y_train = np.repeat([0, 1], 40)
    msp = MaxSoftmaxBaseline().fit(x_train, y_train)
    logits = msp.logits(x_train)
    np.testing.assert_allclose(logits.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(msp.score(x_train), -msp.classifier_.predict_proba(x_train).max(axis=1), atol=1e-12)


def test_fitted_state_and_input_errors_are_named():
    with pytest.raises(NotFittedError, match="MahalanobisBaseline is not fitted"):
        MahalanobisBaseline().score(np.zeros((2, 3)))
    baseline = CosineKNNBaseline().fit(np.eye(3))
    with pytest.raises(ShapeError, match="4 features; the baseline was fitted on 3"):
        baseline.score(np.zeros((2, 4)))
    with pytest.raises(ShapeError, match="2-D"):
        baseline.score(np.zeros(3))
    with pytest.raises(NonFiniteError, match="NaN"):
        baseline.score([[np.nan, 0.0, 0.0]])
    with pytest.raises(ValueError, match="needs class labels"):
        LogitEnergyBaseline().fit(np.eye(3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        MaxSoftmaxBaseline().fit(np.eye(3), [1, 1, 1])
    assert repr(MaxSoftmaxBaseline(C=2.0)) == "MaxSoftmaxBaseline(C=2.0, max_iter=1000, standardize=True)"


def test_without_labels_the_classifier_baselines_are_skipped_not_faked():
    x_train, _, splits = three_class_toy(n_train=150, n_test=50)
    baselines = default_baselines()
    results = run_baselines(x_train, None, splits, "test", ["axis"], baselines)
    assert set(results.skipped) == {"max_softmax", "logit_energy"}
    assert "labels" in results.skipped["max_softmax"]
    assert list(results.metrics) == ["mahalanobis", "cosine_knn", "gaussian_density"]
    assert not baselines["mahalanobis"].class_conditional_  # one Gaussian


def test_run_baselines_fits_the_logistic_regression_once_and_keeps_scores_per_split():
    x_train, y_train, splits = three_class_toy(n_train=150, n_test=50)
    baselines = default_baselines()
    results = run_baselines(x_train, y_train, splits, "test", ["axis", "along_class"], baselines)
    assert baselines["logit_energy"].classifier_ is baselines["max_softmax"].classifier_
    assert set(results.scores["cosine_knn"]) == {"test", "axis", "along_class"}
    np.testing.assert_array_equal(
        results.scores["logit_energy"]["axis"], baselines["logit_energy"].score(splits["axis"])
    )
    metrics = results.metrics["mahalanobis"]["axis"]
    assert metrics.auroc == auroc(results.scores["mahalanobis"]["test"], results.scores["mahalanobis"]["axis"])
    assert set(results.seconds) == set(BASELINE_NAMES)


def test_run_baselines_checks_the_splits():
    x_train, y_train, splits = three_class_toy(n_train=60, n_test=10)
    with pytest.raises(ValueError, match="'nope' is not in splits"):
        run_baselines(x_train, y_train, splits, "test", ["nope"])
    with pytest.raises(ValueError, match="both"):
        run_baselines(x_train, y_train, splits, "test", ["test"])
    with pytest.raises(ShapeError, match="splits\\['axis'\\]"):
        run_baselines(x_train, y_train, {**splits, "axis": np.zeros((4, 2))}, "test", ["axis"])


def test_baseline_results_round_trip_through_json_exactly():
    x_train, y_train, splits = three_class_toy(n_train=90, n_test=20)
    results = run_baselines(x_train, y_train, splits, "test", ["axis"])
    assert BaselineResults.from_dict(json.loads(json.dumps(results.to_dict()))) == results


def test_rank_detectors_orders_best_first():
    def metrics(auroc_value, fpr95):
        return OODMetrics(auroc=auroc_value, aupr_in=0.5, aupr_out=0.5, fpr95=fpr95, n_in=1, n_ood=1)

    detectors = {"ebm": metrics(0.9, 0.3), "knn": metrics(0.95, 0.2), "msp": metrics(0.8, 0.5)}
    assert [name for name, _ in rank_detectors(detectors, "auroc")] == ["knn", "ebm", "msp"]
    assert [name for name, _ in rank_detectors(detectors, "fpr95")] == ["knn", "ebm", "msp"]
