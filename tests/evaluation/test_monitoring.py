"""Known answers for the monitoring statistics (evaluation/monitoring.py)."""

import json
import math

import numpy as np
import pytest
from scipy.stats import beta

from evaluation.monitoring import (
    BatchRecord,
    FeedbackStats,
    PostLaunchSummary,
    SequentialDetector,
    batch_log_likelihood_ratio,
    batch_stats,
    binomial_ci,
    conformal_p_values,
    feedback_counts,
    feedback_stats,
    feedback_stats_from_counts,
    flag_rate_test,
    run_length,
    simulate_run_lengths,
)


def test_feedback_rates_on_hand_counted_rows():
    # 10 rows: 4 flagged, 6 accepted; feedback missing (NaN/None) on 3 of them.
    flagged = np.array([True, True, True, True, False, False, False, False, False, False])
    feedback = [1, 1, 0, None, 1, 0, 0, 0, np.nan, None]
    # flagged with feedback: rows 0, 1, 2 -> 2 problems of 3 (precision 2/3)
    # accepted with feedback: rows 4, 5, 6, 7 -> 1 problem of 4 (missed 1/4)
    stats = feedback_stats(flagged, feedback)
    assert stats.n_rows == 10 and stats.n_with_feedback == 7
    assert (stats.flagged.problems, stats.flagged.n, stats.flagged.rate) == (2, 3, 2 / 3)
    assert (stats.accepted.problems, stats.accepted.n, stats.accepted.rate) == (1, 4, 0.25)
    # Clopper-Pearson by its Beta-quantile definition
    assert stats.accepted.ci_low == pytest.approx(beta.ppf(0.025, 1, 4))
    assert stats.accepted.ci_high == pytest.approx(beta.ppf(0.975, 2, 3))
    assert FeedbackStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats


def test_feedback_without_any_feedback_has_no_rates_and_bad_values_are_named():
    stats = feedback_stats(np.array([True, False]), [None, np.nan])
    assert stats.n_with_feedback == 0 and stats.accepted.rate is None and stats.flagged.ci_low is None
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        feedback_counts(np.array([True, False]), [1, 2])
    # counts add up over batches
    a = feedback_counts(np.array([True, False]), [1, 0])
    b = feedback_counts(np.array([False, False]), [1, None])
    total = {k: a[k] + b[k] for k in a}
    combined = feedback_stats_from_counts(total)
    assert (combined.accepted.problems, combined.accepted.n) == (1, 2)
    assert (combined.flagged.problems, combined.flagged.n) == (1, 1)


def test_flag_rate_binomial_test_against_known_values():
    # P(X >= 12 | n = 100, p = 0.05) = 1 - BinomCDF(11)
    from scipy.stats import binom

    test = flag_rate_test(12, 100, 0.05)
    assert test.rate == 0.12
    assert test.p_value == pytest.approx(binom.sf(11, 100, 0.05), rel=1e-9)
    assert test.p_value == pytest.approx(0.004274, abs=2e-6)
    # k = 0: one-sided p-value is 1; CI low is 0 and high is 1 - 0.025 ** (1/n)
    zero = flag_rate_test(0, 20, 0.05)
    assert zero.p_value == 1.0 and zero.ci_low == 0.0
    assert zero.ci_high == pytest.approx(1 - 0.025 ** (1 / 20))
    assert binomial_ci(5, 5) == (pytest.approx(0.025 ** (1 / 5)), 1.0)
    two = flag_rate_test(5, 100, 0.05, alternative="two-sided")
    assert two.p_value == pytest.approx(1.0)


def test_p_values_and_intervals_are_the_shared_ones():
    """One copy each: the conformal p-value of ebm_core.calibration, the interval of calibration_stats."""
    import ebm_core.calibration
    import evaluation.calibration_stats
    import evaluation.monitoring

    assert evaluation.monitoring.conformal_p_values is ebm_core.calibration.conformal_p_values
    assert evaluation.monitoring.binomial_ci is evaluation.calibration_stats.binomial_ci
    assert not hasattr(evaluation.monitoring, "clopper_pearson")


def test_batch_stats_known_answers():
    cal = np.arange(1.0, 101.0)  # 1..100
    same = batch_stats(cal, cal, threshold=95.0, alpha=0.05)
    assert same.ks_statistic == 0.0 and same.wasserstein == 0.0
    assert same.flag_rate.k == 5
    # mean p-value of the calibration set against itself: mean over i of (1 + 101 - i) / 101
    assert same.mean_p_value == pytest.approx(np.mean((102 - cal) / 101))
    shifted = batch_stats(cal + 10.0, cal, threshold=95.0, alpha=0.05)
    assert shifted.wasserstein == pytest.approx(10.0)
    assert shifted.ks_statistic == pytest.approx(0.10)
    assert shifted.flag_rate.k == 15
    assert conformal_p_values(cal, np.array([1000.0, 0.0])).tolist() == [1 / 101, 1.0]


def test_likelihood_ratio_has_expectation_at_most_one_under_uniform_p_values():
    # One p-value: E[mean_eps (1 - eps) + eps * g(U)] = 1 exactly for uniform U (g is a density).
    from scipy.integrate import quad

    expectation, _ = quad(lambda x: math.exp(batch_log_likelihood_ratio([x])), 0.0, 1.0, limit=200)
    assert expectation == pytest.approx(1.0, abs=1e-3)
    assert batch_log_likelihood_ratio([]) == 0.0
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        batch_log_likelihood_ratio([0.0, 0.5])


def test_seeded_stream_alarms_after_the_shift_and_not_before():
    rng = np.random.default_rng(7)
    detector = SequentialDetector(expected_run_length=150)
    alarms = []
    for b in range(80):
        p = rng.uniform(size=100)
        if b >= 60:  # shift: 20% of the batch gets small p-values
            p[:20] = rng.uniform(0, 0.01, size=20)
        if detector.update(np.maximum(p, 1e-12)):
            alarms.append(b)
    assert alarms, "no alarm after the shift"
    assert min(alarms) >= 60
    assert min(alarms) <= 62
    assert detector.alarms == alarms


def test_state_round_trips_through_json_and_resumes_identically():
    rng = np.random.default_rng(3)
    batches = [np.maximum(rng.uniform(size=50), 1e-12) ** 1.5 for _ in range(30)]
    whole = SequentialDetector(expected_run_length=20)
    alarms_whole = [whole.update(b) for b in batches]
    first = SequentialDetector(expected_run_length=20)
    alarms = [first.update(b) for b in batches[:13]]
    resumed = SequentialDetector.from_state(json.loads(json.dumps(first.state_dict())))
    alarms += [resumed.update(b) for b in batches[13:]]
    assert alarms == alarms_whole and any(alarms)
    assert resumed.state_dict() == whole.state_dict()


def test_null_run_length_is_at_least_the_target():
    lengths = simulate_run_lengths(expected_run_length=30, batch_size=100, n_runs=150, max_batches=300, seed=0)
    # censored runs count as 300, so the mean is a lower bound; theory: E[T] >= 30.
    assert lengths.mean() >= 30
    assert np.median(lengths) >= 30
    # the vectorised simulation equals the detector run one batch at a time
    rng = np.random.default_rng(11)
    short = simulate_run_lengths(expected_run_length=5, batch_size=10, n_runs=3, max_batches=200, seed=11)
    p = np.maximum(rng.uniform(size=(200, 3, 10)), np.finfo(float).tiny)
    assert short.tolist() == [run_length(SequentialDetector(5), p[:, r]) or 200 for r in range(3)]


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="expected_run_length"):
        SequentialDetector(expected_run_length=1)
    with pytest.raises(ValueError, match="kappa"):
        SequentialDetector(kappa=1.5)
    with pytest.raises(ValueError, match="alpha"):
        flag_rate_test(1, 10, 0.0)


def test_post_launch_summary_round_trips():
    cal = np.linspace(0, 1, 50)
    stats = batch_stats(cal[:20] + 0.1, cal, 0.95, 0.05)
    fb = feedback_stats(np.array([True, False]), [1, None])
    record = BatchRecord(0, "b0.csv", stats, stats, 1, fb, 0.5, False, "2024-01-01T00:00:00+00:00", None)
    summary = PostLaunchSummary(
        model_name="m", model_version="1", alpha=0.05, threshold=math.inf, n_calibration=50, n_batches=1,
        n_inputs=20, overall_flag_rate=stats.flag_rate, overall_feedback=fb, expected_run_length=150.0,
        sequential=SequentialDetector().state_dict(), alarms=[], new_batches=[record], mlflow_run_id="abc",
    )
    text = json.dumps(summary.to_dict(), allow_nan=False)
    assert PostLaunchSummary.from_dict(json.loads(text)) == summary
