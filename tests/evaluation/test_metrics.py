"""Known answers for the OOD metrics (score = energy, higher = more OOD, OOD positive)."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation.metrics import (
    EnergyStats,
    OODMetrics,
    aupr_in,
    aupr_out,
    auroc,
    energy_stats,
    fpr_at_tpr,
    ood_metrics,
    precision_recall_curve,
    realised_fpr,
    roc_curve,
)

# A tiny example with one tie (0.4 appears in both splits), worked by hand below.
IN_SCORES = [0.1, 0.4, 0.35]
OOD_SCORES = [0.8, 0.4]


def test_auroc_by_hand_with_a_tie():
    # Pairs (ood, in): 0.8 beats all three -> 3; 0.4 beats 0.1 and 0.35 and ties 0.4 -> 2.5.
    assert auroc(IN_SCORES, OOD_SCORES) == pytest.approx(5.5 / 6, abs=1e-15)


def test_auroc_extremes_and_direction():
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 0.0  # OOD with LOWER energy is the worst case
    assert auroc([1.0, 1.0], [1.0]) == 0.5


def test_aupr_out_by_hand_with_a_tie():
    # Descending: 0.8 (ood) -> P=1, R=1/2; the tie at 0.4 (ood + in) enters together -> P=2/3, R=1.
    # AP = 1/2 * 1 + 1/2 * 2/3.
    assert aupr_out(IN_SCORES, OOD_SCORES) == pytest.approx(0.5 + 1 / 3, abs=1e-15)


def test_aupr_in_by_hand_with_a_tie():
    # ID positive, ranked by -score: 0.1 -> P=1, R=1/3; 0.35 -> P=1, R=2/3;
    # tie at 0.4 (in + ood) -> P=3/4, R=1.  AP = 1/3 + 1/3 + 1/3 * 3/4 = 11/12.
    assert aupr_in(IN_SCORES, OOD_SCORES) == pytest.approx(11 / 12, abs=1e-15)


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_sklearn_on_random_scores_with_ties(seed):
    rng = np.random.default_rng(seed)
    # Rounding to one decimal makes many ties, within and across the splits.
    in_scores = np.round(rng.normal(0.0, 1.0, size=rng.integers(1, 60)), 1)
    ood_scores = np.round(rng.normal(0.7, 1.2, size=rng.integers(1, 60)), 1)
    labels = np.r_[np.zeros(in_scores.size), np.ones(ood_scores.size)]
    scores = np.r_[in_scores, ood_scores]

    assert auroc(in_scores, ood_scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert aupr_out(in_scores, ood_scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert aupr_in(in_scores, ood_scores) == pytest.approx(average_precision_score(1 - labels, -scores), abs=1e-9)


def test_roc_curve_steps_over_tied_groups():
    fpr, tpr = roc_curve(IN_SCORES, OOD_SCORES)
    # thresholds 0.8, 0.4 (tie: one ood + one in), 0.35, 0.1
    np.testing.assert_allclose(fpr, [0.0, 0.0, 1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0, 1.0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(IN_SCORES, OOD_SCORES))


def test_fpr_at_tpr_by_hand():
    in_scores = np.arange(1.0, 21.0)  # 1..20: t = 19 accepts 19/20 = 95% of them
    ood_scores = [18.5, 19.0, 19.5, 25.0]  # accepted (<= 19): 18.5 and 19.0
    assert fpr_at_tpr(in_scores, ood_scores) == 0.5


def test_fpr_at_tpr_is_not_fooled_by_floating_point():
    # 0.95 * 100 == 95.00000000000001; a ceil() on it would pick t = 95 instead of 94.
    in_scores = np.arange(100.0)  # 0..99, t = 94 accepts exactly 95 of them
    assert fpr_at_tpr(in_scores, [94.0, 94.5]) == 0.5


def test_fpr_at_tpr_with_tied_in_distribution_scores():
    # Share of ID <= 1 is 1/4 < 1/2, share <= 2 is 1: the smallest valid threshold is 2.
    assert fpr_at_tpr([1.0, 2.0, 2.0, 2.0], [1.5, 2.0, 2.5], tpr=0.5) == pytest.approx(2 / 3)


def test_fpr_at_tpr_rejects_bad_tpr():
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([1.0], [2.0], tpr=0.0)
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([1.0], [2.0], tpr=1.5)


def test_realised_fpr_counts_strictly_above_threshold():
    assert realised_fpr([1.0, 2.0, 3.0, 4.0], 3.0) == 0.25  # 3.0 itself is accepted
    assert realised_fpr([1.0, 2.0, 3.0, 4.0], 0.0) == 1.0
    assert realised_fpr([1.0, 2.0, 3.0, 4.0], math.inf) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        realised_fpr([1.0], math.nan)


@pytest.mark.parametrize(
    "bad, message",
    [
        ([0.1, float("nan")], "NaN or infinite"),
        ([0.1, float("inf")], "NaN or infinite"),
        ([], "empty"),
        ([[0.1, 0.2], [0.3, 0.4]], "1-D"),
    ],
)
@pytest.mark.parametrize("function", [auroc, aupr_in, aupr_out, fpr_at_tpr, ood_metrics])
def test_bad_input_raises_naming_the_argument(function, bad, message):
    with pytest.raises(ValueError, match=f"in_scores.*{message}"):
        function(bad, [1.0, 2.0])
    with pytest.raises(ValueError, match=f"ood_scores.*{message}"):
        function([1.0, 2.0], bad)


def test_energy_stats_rejects_bad_input():
    with pytest.raises(ValueError, match="scores"):
        energy_stats([1.0, float("nan")])
    with pytest.raises(ValueError, match="scores"):
        energy_stats(np.zeros((2, 2)))


def test_ood_metrics_collects_the_hand_computed_values():
    metrics = ood_metrics(IN_SCORES, OOD_SCORES)
    assert metrics.auroc == pytest.approx(5.5 / 6)
    assert metrics.aupr_out == pytest.approx(5 / 6)
    assert metrics.aupr_in == pytest.approx(11 / 12)
    # n=3: only t = 0.4 (the largest ID score) accepts >= 95% of ID; of the OOD scores only 0.4 <= t.
    assert metrics.fpr95 == 0.5
    assert (metrics.n_in, metrics.n_ood) == (3, 2)
    assert OODMetrics.from_dict(metrics.to_dict()) == metrics


def test_energy_stats_known_values():
    stats = energy_stats([0.0, 1.0, 2.0, 3.0])
    assert stats.n == 4
    assert stats.mean == 1.5
    assert stats.std == pytest.approx(math.sqrt(1.25))  # population std
    assert (stats.min, stats.max) == (0.0, 3.0)
    # linear interpolation: position q * (n - 1)
    assert stats.q05 == pytest.approx(0.15)
    assert stats.q50 == pytest.approx(1.5)
    assert stats.q95 == pytest.approx(2.85)
    assert EnergyStats.from_dict(stats.to_dict()) == stats
    assert type(stats.to_dict()["n"]) is int and type(stats.to_dict()["mean"]) is float


def test_precision_recall_curve_integrates_to_aupr_out():
    rng = np.random.default_rng(1)
    in_scores = np.round(rng.normal(size=80), 1)
    ood_scores = np.round(rng.normal(1.0, size=50), 1)
    recall, precision = precision_recall_curve(in_scores, ood_scores)
    assert recall[-1] == 1.0 and np.all(np.diff(recall) >= 0)
    assert np.sum(np.diff(np.r_[0.0, recall]) * precision) == pytest.approx(aupr_out(in_scores, ood_scores), abs=1e-12)
