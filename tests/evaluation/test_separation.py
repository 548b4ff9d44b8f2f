"""Known answers for the energy separation statistics."""

import json

import numpy as np
import pytest

from evaluation.separation import SeparationStats, histogram_overlap, separation_by_split, separation_stats


def test_identical_samples_overlap_fully_and_are_zero_apart():
    scores = np.random.default_rng(0).normal(size=500)
    stats = separation_stats(scores, scores.copy())
    assert stats.histogram_overlap == 1.0
    assert stats.wasserstein == 0.0
    assert stats.ks_statistic == 0.0
    assert stats.ks_pvalue == 1.0


def test_a_constant_shift_moves_every_unit_of_mass_by_the_shift():
    scores = np.random.default_rng(1).normal(size=400)
    stats = separation_stats(scores, scores + 2.5)
    assert stats.wasserstein == pytest.approx(2.5, abs=1e-12)


def test_far_apart_sets_do_not_overlap():
    rng = np.random.default_rng(2)
    stats = separation_stats(rng.uniform(0, 1, 300), rng.uniform(10, 11, 200))
    assert stats.histogram_overlap == 0.0
    assert stats.ks_statistic == 1.0
    assert stats.ks_pvalue < 1e-12
    assert (stats.n_in, stats.n_ood) == (300, 200)


def test_small_example_by_hand():
    # Two bins [0, 0.5), [0.5, 1]: ID masses (1/2, 1/2), OOD masses (0, 1) -> overlap 1/2.
    # Moving ID's half at 0 to 1 costs 1/2 * 1; the CDFs differ by 1/2 on [0, 1).
    stats = separation_stats([0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], bins=2)
    assert stats.histogram_overlap == 0.5
    assert stats.wasserstein == pytest.approx(0.5, abs=1e-15)
    assert stats.ks_statistic == pytest.approx(0.5, abs=1e-15)


def test_overlap_uses_shared_bins_and_unequal_sizes():
    # 10 bins of width 0.95 on the pooled range [0.5, 10]. ID (0.5, 1.5, ..., 9.5): one score per
    # bin, mass 0.1 each; OOD: all three in the last bin [9.05, 10] -> overlap = min(0.1, 1) = 0.1.
    in_scores = np.arange(10.0) + 0.5
    assert histogram_overlap(in_scores, [10.0, 9.9, 9.6], bins=10) == pytest.approx(0.1, abs=1e-15)


def test_separation_by_split_measures_each_ood_split_against_the_in_distribution_split():
    rng = np.random.default_rng(3)
    splits = {"test": rng.normal(0, 1, 300), "near": rng.normal(1, 1, 300), "far": rng.normal(8, 1, 300)}
    stats = separation_by_split(splits, "test", ["near", "far"])
    assert list(stats) == ["near", "far"]
    assert stats["near"] == separation_stats(splits["test"], splits["near"])
    assert stats["far"].histogram_overlap < stats["near"].histogram_overlap
    assert stats["far"].wasserstein > stats["near"].wasserstein
    with pytest.raises(ValueError, match="missing"):
        separation_by_split(splits, "test", ["missing"])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="bins"):
        histogram_overlap([0.0], [1.0], bins=0)
    with pytest.raises(ValueError, match="ood_scores"):
        separation_stats([0.0], [np.inf])


def test_separation_stats_round_trip_through_json():
    rng = np.random.default_rng(4)
    stats = separation_stats(rng.normal(size=50), rng.normal(1, 1, 40))
    assert SeparationStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
