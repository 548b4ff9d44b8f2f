import math

import numpy as np
import pytest

from ebm_core import conformal_p_values, conformal_threshold


def test_conformal_threshold_is_the_ceil_n_plus_one_quantile():
    energies = np.arange(1.0, 20.0)  # n = 19
    # k = ceil(20 * 0.9) = 18 -> the 18th smallest energy
    assert conformal_threshold(energies[::-1], alpha=0.1) == 18.0
    # k = ceil(20 * 0.95) = 19 -> the largest
    assert conformal_threshold(energies, alpha=0.05) == 19.0
    # k = ceil(20 * 0.99) = 20 > n: no finite threshold achieves alpha
    assert conformal_threshold(energies, alpha=0.01) == math.inf


def test_p_values_count_calibration_energies_at_or_above():
    calibration = np.array([1.0, 2.0, 2.0, 3.0])
    p = conformal_p_values(calibration, np.array([0.0, 2.0, 2.5, 3.0, 10.0]))
    np.testing.assert_allclose(p, np.array([5, 4, 2, 2, 1]) / 5.0)


def test_fresh_exchangeable_draws_are_flagged_at_about_alpha():
    rng = np.random.default_rng(0)
    alpha = 0.05
    threshold = conformal_threshold(rng.standard_normal(5000), alpha)
    realised = np.mean(rng.standard_normal(10_000) > threshold)
    assert abs(realised - alpha) < 0.01


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="alpha"):
        conformal_threshold(np.ones(10), alpha=1.5)
    with pytest.raises(ValueError, match="NaN"):
        conformal_threshold(np.array([1.0, np.nan]), alpha=0.1)
    with pytest.raises(ValueError, match="non-empty"):
        conformal_p_values(np.array([]), np.array([1.0]))
