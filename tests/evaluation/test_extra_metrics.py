"""Known answers for the detection error (score = energy, higher = more OOD, OOD positive)."""

import numpy as np
import pytest

from evaluation.extra_metrics import detection_error


def test_detection_error_by_hand():
    # Cuts (flag score > t): t=0 -> FPR 2/3, FNR 0 -> 1/3; t=1 -> FPR 1/3, FNR 0 -> 1/6;
    # t=1.5 -> FPR 1/3, FNR 1/2 -> 5/12; t=2 -> FPR 0, FNR 1/2 -> 1/4; flag all/none -> 1/2.
    assert detection_error([0.0, 1.0, 2.0], [1.5, 3.0]) == pytest.approx(1 / 6, abs=1e-15)


def test_detection_error_extremes():
    assert detection_error([0.0, 1.0], [2.0, 3.0]) == 0.0  # a cut separates them
    assert detection_error([1.0, 1.0], [1.0]) == 0.5  # ties cannot be split
    assert detection_error([2.0, 3.0], [0.0, 1.0]) == 0.5  # reversed: best is flag all / none


@pytest.mark.parametrize("seed", range(10))
def test_detection_error_matches_brute_force_over_thresholds(seed):
    rng = np.random.default_rng(seed)
    in_scores = np.round(rng.normal(0, 1, rng.integers(1, 40)), 1)
    ood_scores = np.round(rng.normal(0.8, 1, rng.integers(1, 40)), 1)
    pooled = np.r_[in_scores, ood_scores]
    thresholds = np.r_[pooled.min() - 1.0, pooled]
    brute_force = min(
        0.5 * (np.mean(in_scores > t) + np.mean(ood_scores <= t)) for t in thresholds
    )
    assert detection_error(in_scores, ood_scores) == pytest.approx(brute_force, abs=1e-15)
