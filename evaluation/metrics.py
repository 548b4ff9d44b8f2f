"""OOD detection metrics on energy scores.

Conventions (the same everywhere in ebmops): the score is the energy, HIGHER = more OOD, and OOD is
the positive class. Every function takes the in-distribution scores first and the OOD scores second.

Pure numpy/scipy on purpose: the values must agree with scikit-learn (the tests check that), but the
tie handling is written out here so a reader can see exactly what is computed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata


def check_scores(values: Any, name: str) -> np.ndarray:
    """Return `values` as a 1-D float64 array; raise ValueError naming `name` if it is not
    non-empty, one-dimensional and finite."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of scores, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(array).all():
        n_bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s)")
    return array


def auroc(in_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve = P(OOD score > ID score) + 0.5 * P(tie).

    Computed as the Mann-Whitney U statistic from average ranks, which counts a tie as half a win.
    """
    in_scores = check_scores(in_scores, "in_scores")
    ood_scores = check_scores(ood_scores, "ood_scores")
    n_in, n_ood = in_scores.shape[0], ood_scores.shape[0]
    ranks = rankdata(np.concatenate([in_scores, ood_scores]), method="average")
    u_ood = ranks[n_in:].sum() - n_ood * (n_ood + 1) / 2.0
    return float(u_ood / (n_in * n_ood))


def roc_curve(in_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct score used as a threshold
    (flag score >= t), from the strictest to the most lenient, starting at (0, 0)."""
    in_scores = check_scores(in_scores, "in_scores")
    ood_scores = check_scores(ood_scores, "ood_scores")
    labels = np.concatenate([np.zeros(in_scores.shape[0]), np.ones(ood_scores.shape[0])])
    true_positives, false_positives = _cumulative_counts(labels, np.concatenate([in_scores, ood_scores]))
    fpr = np.concatenate([[0.0], false_positives / in_scores.shape[0]])
    tpr = np.concatenate([[0.0], true_positives / ood_scores.shape[0]])
    return fpr, tpr


def precision_recall_curve(in_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) with OOD positive, flagging score >= t at every distinct score from the
    strictest to the most lenient; tied scores enter together. The area under the step curve is
    AUPR-out (average precision)."""
    in_scores = check_scores(in_scores, "in_scores")
    ood_scores = check_scores(ood_scores, "ood_scores")
    scores = np.concatenate([in_scores, ood_scores])
    labels = np.concatenate([np.zeros(in_scores.size), np.ones(ood_scores.size)])
    order = np.argsort(scores, kind="mergesort")[::-1]
    sorted_scores, sorted_labels = scores[order], labels[order]
    group_ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_labels.size - 1]
    true_positives = np.cumsum(sorted_labels)[group_ends]
    flagged = group_ends + 1
    return true_positives / ood_scores.size, true_positives / flagged


def aupr_out(in_scores: Any, ood_scores: Any) -> float:
    """Average precision with OOD as the positive class and the score as is."""
    in_scores = check_scores(in_scores, "in_scores")
    ood_scores = check_scores(ood_scores, "ood_scores")
    labels = np.concatenate([np.zeros(in_scores.shape[0]), np.ones(ood_scores.shape[0])])
    return _average_precision(labels, np.concatenate([in_scores, ood_scores]))


def aupr_in(in_scores: Any, ood_scores: Any) -> float:
    """Average precision with in-distribution as the positive class, ranking by -score."""
    in_scores = check_scores(in_scores, "in_scores")
    ood_scores = check_scores(ood_scores, "ood_scores")
    labels = np.concatenate([np.ones(in_scores.shape[0]), np.zeros(ood_scores.shape[0])])
    return _average_precision(labels, -np.concatenate([in_scores, ood_scores]))


def fpr_at_tpr(in_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """Share of OOD inputs accepted (score <= t) at the threshold t that accepts `tpr` of the
    in-distribution inputs.

    t is the smallest in-distribution score such that the share of in-distribution scores <= t is
    at least `tpr`. (`tpr` is the share of in-distribution inputs accepted, the name used in the
    OOD literature for "FPR at 95% TPR".)
    """
    in_scores = check_scores(in_scores, "in_scores")
    ood_scores = check_scores(ood_scores, "ood_scores")
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    sorted_in = np.sort(in_scores)
    n_in = sorted_in.shape[0]
    # Compare k / n with tpr rather than taking ceil(tpr * n): 0.95 * 100 is 95.00000000000001 in
    # floating point, whose ceiling would skip the right threshold; 95 / 100 == 0.95 exactly.
    share_accepted = np.arange(1, n_in + 1) / n_in
    threshold = sorted_in[int(np.argmax(share_accepted >= tpr))]
    return float(np.mean(ood_scores <= threshold))


def realised_fpr(in_scores: Any, threshold: float) -> float:
    """Share of in-distribution scores flagged as OOD, i.e. strictly above `threshold`."""
    in_scores = check_scores(in_scores, "in_scores")
    if np.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    return float(np.mean(in_scores > threshold))


def _cumulative_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positive counts when flagging score >= t, for each distinct score t in
    decreasing order. Tied scores share one threshold, so a tie is never split."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Index of the last element of each group of equal scores.
    group_ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_labels.shape[0] - 1]
    true_positives = np.cumsum(sorted_labels)[group_ends]
    false_positives = (group_ends + 1) - true_positives
    return true_positives, false_positives


def _average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """sum_k (R_k - R_{k-1}) * P_k over distinct thresholds, as sklearn's average_precision_score
    (step-wise, no interpolation, ties grouped)."""
    true_positives, false_positives = _cumulative_counts(labels, scores)
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / true_positives[-1]
    recall_gain = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_gain * precision))


@dataclass(frozen=True)
class OODMetrics:
    """Threshold-free metrics for one in-distribution vs OOD comparison (OOD positive)."""

    auroc: float
    aupr_in: float
    aupr_out: float
    fpr95: float
    n_in: int
    n_ood: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OODMetrics:
        return cls(
            auroc=float(d["auroc"]),
            aupr_in=float(d["aupr_in"]),
            aupr_out=float(d["aupr_out"]),
            fpr95=float(d["fpr95"]),
            n_in=int(d["n_in"]),
            n_ood=int(d["n_ood"]),
        )


def ood_metrics(in_scores: Any, ood_scores: Any) -> OODMetrics:
    in_scores = check_scores(in_scores, "in_scores")
    ood_scores = check_scores(ood_scores, "ood_scores")
    return OODMetrics(
        auroc=auroc(in_scores, ood_scores),
        aupr_in=aupr_in(in_scores, ood_scores),
        aupr_out=aupr_out(in_scores, ood_scores),
        fpr95=fpr_at_tpr(in_scores, ood_scores, tpr=0.95),
        n_in=int(in_scores.shape[0]),
        n_ood=int(ood_scores.shape[0]),
    )


@dataclass(frozen=True)
class EnergyStats:
    """Summary of one split's energies. `std` is the population standard deviation (ddof=0), so
    it is defined for a single score; quantiles use numpy's default linear interpolation."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    q05: float
    q50: float
    q95: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnergyStats:
        return cls(
            n=int(d["n"]),
            **{name: float(d[name]) for name in ("mean", "std", "min", "max", "q05", "q50", "q95")},
        )


def energy_stats(scores: Any) -> EnergyStats:
    scores = check_scores(scores, "scores")
    q05, q50, q95 = np.quantile(scores, [0.05, 0.50, 0.95])
    return EnergyStats(
        n=int(scores.shape[0]),
        mean=float(scores.mean()),
        std=float(scores.std()),
        min=float(scores.min()),
        max=float(scores.max()),
        q05=float(q05),
        q50=float(q50),
        q95=float(q95),
    )
