"""Statistics of the calibrated threshold: how often it flags in-distribution inputs, and with what
certainty.

Convention: the score is the energy, higher = more OOD; an input is flagged when its energy is
strictly above the threshold. The split-conformal threshold and p-values themselves live in
`ebm_core.calibration` (`conformal_threshold`, `conformal_p_values`); this module measures them.

- `binomial_ci`: exact (Clopper-Pearson) interval of a proportion k / n.
- `realised_fpr_with_ci`: the share of held-out in-distribution inputs flagged, with that interval.
- `calibration_conditional_threshold`: a threshold whose false-positive rate is <= alpha with
  probability >= 1 - delta over the draw of the calibration set (the plain conformal threshold only
  bounds the FPR on average over calibration sets, so about half of all calibration sets give an
  FPR above alpha).
- `calibration_curve`: target alpha against realised FPR (with interval) over a grid of alphas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta, binom

from ebm_core.calibration import conformal_threshold
from evaluation.metrics import check_scores


def binomial_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval for a proportion after k successes in n trials.

    low = Beta((1 - c)/2; k, n - k + 1) quantile (0 when k = 0),
    high = Beta((1 + c)/2; k + 1, n - k) quantile (1 when k = n).
    It is exact in the conservative sense: it covers the true proportion with probability at least
    `confidence` for every true proportion.
    """
    if int(k) != k or int(n) != n or n < 1 or not 0 <= k <= n:
        raise ValueError(f"need integers 0 <= k <= n with n >= 1, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    k, n = int(k), int(n)
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


@dataclass(frozen=True)
class RealisedFPR:
    """Share of held-out in-distribution inputs flagged (energy > threshold), with its exact
    binomial interval."""

    threshold: float
    fpr: float
    ci_low: float
    ci_high: float
    n_flagged: int
    n: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        # A threshold can be +inf (alpha too small for the calibration set); strict JSON has no
        # infinity, so it is written as the string "inf", which float() reads back.
        return {
            "threshold": _encode_float(self.threshold),
            "fpr": self.fpr,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_flagged": self.n_flagged,
            "n": self.n,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RealisedFPR:
        return cls(
            threshold=float(d["threshold"]),
            fpr=float(d["fpr"]),
            ci_low=float(d["ci_low"]),
            ci_high=float(d["ci_high"]),
            n_flagged=int(d["n_flagged"]),
            n=int(d["n"]),
            confidence=float(d["confidence"]),
        )


def realised_fpr_with_ci(in_test_scores: Any, threshold: float, confidence: float = 0.95) -> RealisedFPR:
    """Realised FPR of `threshold` on held-out in-distribution scores (never the calibration
    scores: there it is <= alpha by construction) and its Clopper-Pearson interval."""
    scores = check_scores(in_test_scores, "in_test_scores")
    if math.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    n_flagged = int(np.count_nonzero(scores > threshold))
    low, high = binomial_ci(n_flagged, scores.size, confidence)
    return RealisedFPR(
        threshold=float(threshold),
        fpr=n_flagged / scores.size,
        ci_low=low,
        ci_high=high,
        n_flagged=n_flagged,
        n=int(scores.size),
        confidence=float(confidence),
    )


def calibration_conditional_order(n: int, alpha: float, delta: float) -> int | None:
    """The order k (1-based) of the calibration-conditional threshold, or None if no k <= n works.

    Let S_(k) be the k-th smallest of n exchangeable calibration energies with a continuous
    distribution F, and flag energies > S_(k). Then the FPR is 1 - F(S_(k)), and F(S_(k)) is the k-th
    smallest of n uniforms, so

        P(FPR <= alpha) = P(U_(k) >= 1 - alpha) = P(fewer than k of n uniforms fall below 1 - alpha)
                        = BinomCDF(k - 1; n, 1 - alpha).

    k is the smallest order with BinomCDF(k - 1; n, 1 - alpha) >= 1 - delta. (With ties in F the FPR
    can only be smaller, so the guarantee still holds.) A solution exists iff
    (1 - alpha)^n <= delta, i.e. n >= log(delta) / log(1 - alpha).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    # probability_fpr_ok[k - 1] = P(FPR <= alpha) when the threshold is the k-th order statistic.
    probability_fpr_ok = binom.cdf(np.arange(int(n)), int(n), 1.0 - alpha)
    reaching = np.flatnonzero(probability_fpr_ok >= 1.0 - delta)
    return None if reaching.size == 0 else int(reaching[0]) + 1


def calibration_conditional_threshold(cal_energies: Any, alpha: float, delta: float = 0.1) -> float:
    """Threshold with P(FPR <= alpha) >= 1 - delta over the draw of the calibration set.

    The k-th smallest calibration energy, k from `calibration_conditional_order`; +inf (never flag)
    when even the largest calibration energy does not give the guarantee (too few energies).
    For the usual small delta it sits above the split-conformal threshold at the same alpha: the
    price of holding alpha on (almost) every calibration set rather than on average.
    """
    energies = check_scores(cal_energies, "cal_energies")
    order = calibration_conditional_order(energies.size, alpha, delta)
    if order is None:
        return math.inf
    return float(np.sort(energies)[order - 1])


@dataclass(frozen=True)
class CalibrationPoint:
    """One point of a calibration curve: the target rate and what the threshold realised."""

    alpha: float
    threshold: float
    realised_fpr: float
    ci_low: float
    ci_high: float
    n_flagged: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "threshold": _encode_float(self.threshold),
            "realised_fpr": self.realised_fpr,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_flagged": self.n_flagged,
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationPoint:
        return cls(
            alpha=float(d["alpha"]),
            threshold=float(d["threshold"]),
            realised_fpr=float(d["realised_fpr"]),
            ci_low=float(d["ci_low"]),
            ci_high=float(d["ci_high"]),
            n_flagged=int(d["n_flagged"]),
            n=int(d["n"]),
        )


def calibration_curve(
    cal_energies: Any,
    test_in_energies: Any,
    alphas: Any,
    confidence: float = 0.95,
    delta: float | None = None,
) -> list[CalibrationPoint]:
    """For each target alpha: calibrate on `cal_energies`, measure on held-out `test_in_energies`.

    The threshold is the split-conformal one (`ebm_core.calibration.conformal_threshold`, the same
    function the detector uses), or the calibration-conditional one when `delta` is given. A
    well-calibrated guard has realised FPR close to alpha (split-conformal: at most alpha on
    average, within its binomial interval for most alphas).
    """
    cal = check_scores(cal_energies, "cal_energies")
    test = check_scores(test_in_energies, "test_in_energies")
    points = []
    for alpha in np.atleast_1d(np.asarray(alphas, dtype=np.float64)):
        if delta is None:
            threshold = conformal_threshold(cal, float(alpha))
        else:
            threshold = calibration_conditional_threshold(cal, float(alpha), delta)
        realised = realised_fpr_with_ci(test, threshold, confidence)
        points.append(
            CalibrationPoint(
                alpha=float(alpha),
                threshold=realised.threshold,
                realised_fpr=realised.fpr,
                ci_low=realised.ci_low,
                ci_high=realised.ci_high,
                n_flagged=realised.n_flagged,
                n=realised.n,
            )
        )
    return points


def _encode_float(value: float) -> float | str:
    """Finite floats stay floats; +-inf become "inf"/"-inf" (float() parses them back)."""
    return value if math.isfinite(value) else repr(float(value))
