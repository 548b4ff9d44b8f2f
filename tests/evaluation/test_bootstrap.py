"""Known answers for the vectorised, stratified, seeded percentile bootstrap (score = energy,
higher = more OOD, OOD positive)."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation.bootstrap import (
    METRICS,
    ConfidenceInterval,
    bootstrap_ci,
    bootstrap_cis,
    paired_bootstrap_diff,
    paired_bootstrap_diffs,
    resampled_metric,
)
from evaluation.extra_metrics import detection_error
from evaluation.metrics import aupr_in, aupr_out, auroc, fpr_at_tpr


def tied_scores(seed, n_in=40, n_ood=30):
    """Scores rounded to one decimal: many ties within and across the two sets."""
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(0.0, 1.0, n_in), 1), np.round(rng.normal(0.8, 1.0, n_ood), 1)


def reference_metric(metric, in_scores, ood_scores):
    """The metric computed the slow, obvious way on one (already resampled) data set."""
    labels = np.r_[np.zeros(in_scores.size), np.ones(ood_scores.size)]
    pooled = np.r_[in_scores, ood_scores]
    if metric == "auroc":
        return roc_auc_score(labels, pooled)
    if metric == "aupr_out":
        return average_precision_score(labels, pooled)
    if metric == "aupr_in":
        return average_precision_score(1 - labels, -pooled)
    if metric == "fpr95":
        return fpr_at_tpr(in_scores, ood_scores, 0.95)
    if metric == "fpr90":
        return fpr_at_tpr(in_scores, ood_scores, 0.90)
    if metric == "detection_error":
        return detection_error(in_scores, ood_scores)
    raise AssertionError(metric)


@pytest.mark.parametrize("metric", [*METRICS, "fpr90"])
@pytest.mark.parametrize("seed", range(3))
def test_vectorised_metric_matches_reference_on_explicit_resamples(metric, seed):
    in_scores, ood_scores = tied_scores(seed)
    rng = np.random.default_rng(100 + seed)
    in_indices = rng.integers(0, in_scores.size, size=(6, in_scores.size))
    ood_indices = rng.integers(0, ood_scores.size, size=(6, ood_scores.size))

    vectorised = resampled_metric(in_scores, ood_scores, in_indices, ood_indices, metric)

    expected = [reference_metric(metric, in_scores[i], ood_scores[o]) for i, o in zip(in_indices, ood_indices)]
    np.testing.assert_allclose(vectorised, expected, rtol=0, atol=1e-12)


def test_resamples_of_other_sizes_are_allowed():
    # m-out-of-n resamples: rows of any length, as long as there is one row per resample on each side.
    in_scores, ood_scores = tied_scores(7)
    in_indices = np.array([[0, 1, 2], [3, 3, 3]])
    ood_indices = np.array([[0, 1], [2, 2]])
    values = resampled_metric(in_scores, ood_scores, in_indices, ood_indices, "auroc")
    assert values[0] == pytest.approx(auroc(in_scores[[0, 1, 2]], ood_scores[[0, 1]]), abs=1e-15)
    assert values[1] == pytest.approx(auroc(in_scores[[3, 3, 3]], ood_scores[[2, 2]]), abs=1e-15)


@pytest.mark.parametrize(
    "metric, function",
    [
        ("auroc", auroc),
        ("aupr_in", aupr_in),
        ("aupr_out", aupr_out),
        ("fpr95", fpr_at_tpr),
        ("detection_error", detection_error),
    ],
)
def test_estimate_is_the_metric_on_the_full_data(metric, function):
    in_scores, ood_scores = tied_scores(3, n_in=100, n_ood=60)
    interval = bootstrap_ci(in_scores, ood_scores, metric, n_resamples=200, seed=1)
    assert interval.estimate == pytest.approx(function(in_scores, ood_scores), abs=1e-12)
    assert interval.low <= interval.estimate <= interval.high
    assert interval.n_resamples == 200 and interval.confidence == 0.95


def test_auroc_interval_width_matches_the_hanley_mcneil_standard_error():
    # For ID ~ N(0,1), OOD ~ N(1,1) and 300 + 200 scores the AUROC standard error is about 0.021
    # (Hanley & McNeil 1982). A percentile interval is about +-1.96 SE: if either side were not
    # resampled, or resampled with the wrong size, the width would be far off.
    rng = np.random.default_rng(0)
    in_scores, ood_scores = rng.normal(0, 1, 300), rng.normal(1, 1, 200)
    a = auroc(in_scores, ood_scores)
    q1, q2 = a / (2 - a), 2 * a**2 / (1 + a)
    n_in, n_ood = in_scores.size, ood_scores.size
    standard_error = math.sqrt((a * (1 - a) + (n_ood - 1) * (q1 - a**2) + (n_in - 1) * (q2 - a**2)) / (n_in * n_ood))

    interval = bootstrap_ci(in_scores, ood_scores, "auroc", n_resamples=1000, seed=0)

    assert interval.width / (2 * 1.96) == pytest.approx(standard_error, rel=0.15)


def test_perfect_separation_gives_a_zero_width_interval():
    # Every stratified resample still has all ID below all OOD.
    interval = bootstrap_ci([0.0, 1.0, 2.0], [5.0, 6.0], "auroc", n_resamples=100, seed=0)
    assert (interval.estimate, interval.low, interval.high) == (1.0, 1.0, 1.0)
    fpr = bootstrap_ci([0.0, 1.0, 2.0], [5.0, 6.0], "fpr95", n_resamples=100, seed=0)
    assert (fpr.estimate, fpr.low, fpr.high) == (0.0, 0.0, 0.0)


def test_same_seed_same_interval_and_other_seed_another():
    in_scores, ood_scores = tied_scores(4, n_in=80, n_ood=80)
    first = bootstrap_ci(in_scores, ood_scores, "auroc", n_resamples=300, seed=5)
    assert bootstrap_ci(in_scores, ood_scores, "auroc", n_resamples=300, seed=5) == first
    assert bootstrap_ci(in_scores, ood_scores, "auroc", n_resamples=300, seed=np.random.default_rng(5)) == first
    assert bootstrap_ci(in_scores, ood_scores, "auroc", n_resamples=300, seed=6) != first


def test_seed_must_be_given_explicitly():
    with pytest.raises(TypeError, match="seed"):
        bootstrap_ci([0.0, 1.0], [2.0], seed=None)


def test_several_metrics_share_one_set_of_resamples():
    in_scores, ood_scores = tied_scores(8, n_in=70, n_ood=50)
    together = bootstrap_cis(in_scores, ood_scores, ("auroc", "fpr95"), n_resamples=200, seed=3)
    assert together["auroc"] == bootstrap_ci(in_scores, ood_scores, "auroc", n_resamples=200, seed=3)
    assert together["fpr95"] == bootstrap_ci(in_scores, ood_scores, "fpr95", n_resamples=200, seed=3)


def test_paired_difference_of_a_detector_with_itself_is_exactly_zero():
    in_scores, ood_scores = tied_scores(1, n_in=120, n_ood=90)
    for metric in METRICS:
        interval = paired_bootstrap_diff(in_scores, ood_scores, in_scores, ood_scores, metric, n_resamples=300)
        assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_paired_differences_of_several_metrics_share_one_set_of_resamples():
    rng = np.random.default_rng(11)
    a_in, a_ood = rng.normal(0, 1, 80), rng.normal(1, 1, 60)
    b_in, b_ood = a_in + rng.normal(0, 0.5, 80), a_ood + rng.normal(0, 0.5, 60)
    together = paired_bootstrap_diffs(a_in, a_ood, b_in, b_ood, ("auroc", "fpr95"), n_resamples=200, seed=4)
    for metric in ("auroc", "fpr95"):
        assert together[metric] == paired_bootstrap_diff(a_in, a_ood, b_in, b_ood, metric, n_resamples=200, seed=4)


def test_paired_difference_uses_the_same_resample_for_both_detectors():
    # exp() keeps the order of every score, so AUROC is identical on ANY common resample; the
    # difference is 0 on every resample only if both detectors see the same one.
    in_scores, ood_scores = tied_scores(2, n_in=120, n_ood=90)
    interval = paired_bootstrap_diff(in_scores, ood_scores, np.exp(in_scores), np.exp(ood_scores), "auroc")
    assert (interval.low, interval.high) == (0.0, 0.0)


def test_paired_difference_is_b_minus_a_and_tighter_than_unpaired():
    rng = np.random.default_rng(0)
    signal_in, signal_ood = rng.normal(0, 1, 400), rng.normal(1.5, 1, 300)
    # B = A with less noise: better on the same inputs.
    a_in, a_ood = signal_in + rng.normal(0, 1, 400), signal_ood + rng.normal(0, 1, 300)
    b_in, b_ood = signal_in + rng.normal(0, 0.3, 400), signal_ood + rng.normal(0, 0.3, 300)

    difference = paired_bootstrap_diff(a_in, a_ood, b_in, b_ood, "auroc", n_resamples=500, seed=0)

    assert difference.estimate == pytest.approx(auroc(b_in, b_ood) - auroc(a_in, a_ood), abs=1e-12)
    assert difference.low > 0.0
    # Pairing removes the shared sampling noise: narrower than the two separate intervals combined.
    a = bootstrap_ci(a_in, a_ood, "auroc", n_resamples=500, seed=0)
    b = bootstrap_ci(b_in, b_ood, "auroc", n_resamples=500, seed=0)
    assert difference.width < math.hypot(a.width, b.width)


def test_paired_difference_needs_the_same_inputs():
    with pytest.raises(ValueError, match="same inputs"):
        paired_bootstrap_diff([0.0, 1.0], [2.0], [0.0], [2.0])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown metric 'recall'"):
        bootstrap_ci([0.0], [1.0], "recall")
    with pytest.raises(ValueError, match="TPR level"):
        bootstrap_ci([0.0], [1.0], "fpr150")
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([0.0], [1.0], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.0], [1.0], confidence=1.0)
    with pytest.raises(ValueError, match="ood_scores"):
        bootstrap_ci([0.0], [np.nan])


def test_confidence_interval_round_trips_through_json():
    interval = bootstrap_ci(*tied_scores(9), "aupr_out", n_resamples=50, seed=0)
    assert ConfidenceInterval.from_dict(json.loads(json.dumps(interval.to_dict()))) == interval
    assert interval.contains(interval.estimate)
    assert interval.width == interval.high - interval.low
