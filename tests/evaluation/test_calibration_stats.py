"""Known answers for the threshold statistics (energy, higher = more OOD, flag energy > threshold)."""

import json
import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from ebm_core.calibration import conformal_threshold
from evaluation.calibration_stats import (
    CalibrationPoint,
    RealisedFPR,
    binomial_ci,
    calibration_conditional_order,
    calibration_conditional_threshold,
    calibration_curve,
    realised_fpr_with_ci,
)


def test_clopper_pearson_closed_forms_at_the_edges():
    # k = 0: the upper limit solves (1 - p)^n = 0.025; k = n: the lower limit solves p^n = 0.025.
    assert binomial_ci(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)), abs=1e-12)
    assert binomial_ci(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0), abs=1e-12)
    # 90% interval: one tail of 0.05.
    assert binomial_ci(0, 20, confidence=0.90)[1] == pytest.approx(1 - 0.05 ** (1 / 20), abs=1e-12)


def test_clopper_pearson_table_values():
    # Published values (e.g. Clopper & Pearson tables; R's binom.test(5, 10)$conf.int).
    assert binomial_ci(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    assert binomial_ci(1, 20) == pytest.approx((0.001265, 0.248733), abs=1e-6)


def test_clopper_pearson_limits_are_where_the_binomial_tails_reach_2_5_percent():
    # Definition: at p = high, P(X <= k) = 0.025; at p = low, P(X >= k) = 0.025.
    k, n = 7, 50
    low, high = binomial_ci(k, n)
    assert binom.cdf(k, n, high) == pytest.approx(0.025, abs=1e-9)
    assert binom.sf(k - 1, n, low) == pytest.approx(0.025, abs=1e-9)


def test_clopper_pearson_is_symmetric_in_successes_and_failures():
    low, high = binomial_ci(3, 40)
    mirrored_low, mirrored_high = binomial_ci(37, 40)
    assert (low, high) == pytest.approx((1 - mirrored_high, 1 - mirrored_low), abs=1e-12)


def test_binomial_ci_rejects_impossible_counts():
    for k, n in [(-1, 10), (11, 10), (0, 0), (1.5, 10)]:
        with pytest.raises(ValueError, match="0 <= k <= n"):
            binomial_ci(k, n)


def test_realised_fpr_counts_scores_strictly_above_the_threshold():
    scores = np.arange(1.0, 101.0)  # 1..100
    realised = realised_fpr_with_ci(scores, threshold=95.0)
    assert (realised.n_flagged, realised.n, realised.fpr) == (5, 100, 0.05)  # 96..100; 95 is not flagged
    assert (realised.ci_low, realised.ci_high) == binomial_ci(5, 100)


def test_realised_fpr_round_trips_through_strict_json_even_with_an_infinite_threshold():
    realised = realised_fpr_with_ci([0.0, 1.0, 2.0], threshold=math.inf)
    assert realised.fpr == 0.0
    text = json.dumps(realised.to_dict(), allow_nan=False)
    assert RealisedFPR.from_dict(json.loads(text)) == realised


def test_calibration_conditional_order_needs_enough_calibration_energies():
    # With k = n the guarantee is 1 - (1 - alpha)^n >= 1 - delta, i.e. n >= log(0.1)/log(0.95) = 44.9.
    assert calibration_conditional_order(44, alpha=0.05, delta=0.1) is None
    assert calibration_conditional_order(45, alpha=0.05, delta=0.1) == 45
    assert calibration_conditional_threshold(np.arange(44.0), alpha=0.05, delta=0.1) == math.inf
    assert calibration_conditional_threshold(np.arange(45.0)[::-1], alpha=0.05, delta=0.1) == 44.0


def test_calibration_conditional_order_is_the_smallest_that_gives_the_guarantee():
    n, alpha, delta = 1000, 0.05, 0.1
    k = calibration_conditional_order(n, alpha, delta)
    assert binom.cdf(k - 1, n, 1 - alpha) >= 1 - delta
    assert binom.cdf(k - 2, n, 1 - alpha) < 1 - delta
    # It sits above the split-conformal order ceil((n + 1)(1 - alpha)) = 951.
    assert k > math.ceil((n + 1) * (1 - alpha))


def test_calibration_conditional_threshold_holds_alpha_on_most_calibration_sets():
    # 300 calibration sets of 500 standard-normal energies; the true FPR of threshold t is 1 - Phi(t).
    alpha, delta, n_sets = 0.05, 0.1, 300
    rng = np.random.default_rng(0)
    conditional_ok, conformal_ok = [], []
    for _ in range(n_sets):
        calibration = rng.normal(size=500)
        conditional_ok.append(norm.sf(calibration_conditional_threshold(calibration, alpha, delta)) <= alpha)
        conformal_ok.append(norm.sf(conformal_threshold(calibration, alpha)) <= alpha)
    # Expected share >= 0.9; the binomial standard error over 300 sets is 0.017, margin 3 SE.
    assert np.mean(conditional_ok) >= 1 - delta - 0.05
    # The marginal (split-conformal) threshold only bounds the FPR on average: roughly half of the
    # calibration sets exceed alpha, which is why the conditional variant exists.
    assert np.mean(conformal_ok) < 0.75


def test_calibration_curve_known_answer():
    calibration = np.arange(1.0, 100.0)  # 99 energies; alpha = 0.1 -> k = ceil(100 * 0.9) = 90
    test = np.arange(1.0, 101.0)  # 100 held-out energies; 91..100 exceed 90
    (point,) = calibration_curve(calibration, test, [0.1])
    assert point.threshold == 90.0
    assert (point.n_flagged, point.n, point.realised_fpr) == (10, 100, 0.1)
    assert (point.ci_low, point.ci_high) == binomial_ci(10, 100)


def test_calibration_curve_tracks_alpha_on_exchangeable_data():
    rng = np.random.default_rng(1)
    alphas = [0.01, 0.05, 0.1, 0.2]
    points = calibration_curve(rng.normal(size=2000), rng.normal(size=5000), alphas)
    assert [p.alpha for p in points] == alphas
    for point in points:
        assert point.realised_fpr == pytest.approx(point.alpha, abs=0.02)
        assert point.ci_low <= point.realised_fpr <= point.ci_high


def test_calibration_curve_with_delta_uses_the_conditional_threshold():
    rng = np.random.default_rng(2)
    calibration = rng.normal(size=300)
    (point,) = calibration_curve(calibration, rng.normal(size=100), [0.05], delta=0.1)
    assert point.threshold == calibration_conditional_threshold(calibration, 0.05, 0.1)


def test_calibration_point_round_trips_through_strict_json():
    # alpha = 0.001 needs more than 9 calibration energies: the threshold is +inf.
    (point,) = calibration_curve(np.arange(9.0), np.arange(20.0), [0.001])
    assert point.threshold == math.inf
    text = json.dumps(point.to_dict(), allow_nan=False)
    assert CalibrationPoint.from_dict(json.loads(text)) == point
