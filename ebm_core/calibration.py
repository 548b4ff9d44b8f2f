"""Split-conformal threshold and p-values on in-distribution calibration energies.

Higher energy = more OOD. With n calibration energies, the threshold is the k-th smallest,
k = ceil((n + 1)(1 - alpha)); a fresh exchangeable in-distribution input exceeds it with probability
at most alpha. When k > n no finite threshold achieves alpha, so the threshold is +inf (never flag).
"""

from __future__ import annotations

import math

import numpy as np


def conformal_threshold(calibration_energies: np.ndarray, alpha: float) -> float:
    energies = _check_energies(calibration_energies, "calibration_energies")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = energies.shape[0]
    k = math.ceil((n + 1) * (1.0 - alpha))
    if k > n:
        return math.inf
    return float(np.sort(energies)[k - 1])


def conformal_p_values(calibration_energies: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """p(e) = (1 + #{calibration energies >= e}) / (n + 1); small p = unusually high energy."""
    reference = np.sort(_check_energies(calibration_energies, "calibration_energies"))
    energies = np.asarray(energies, dtype=np.float64)
    n_at_least = reference.shape[0] - np.searchsorted(reference, energies, side="left")
    return (1.0 + n_at_least) / (reference.shape[0] + 1.0)


def _check_energies(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return values
