"""Threshold metrics that `evaluation.metrics` does not carry: the detection error.

Same conventions as `evaluation.metrics`: the score is the energy, HIGHER = more OOD, OOD is the
positive class, in-distribution scores come first. FPR at any TPR is `evaluation.metrics.fpr_at_tpr`
(its `tpr` argument is the share of in-distribution inputs accepted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluation.metrics import check_scores


def detection_error(in_scores: Any, ood_scores: Any) -> float:
    """min over thresholds t of 0.5 * (FPR + FNR), flagging score > t, with equal class weights.

    FPR = share of in-distribution inputs flagged, FNR = share of OOD inputs accepted. The minimum
    runs over every cut between distinct pooled scores, plus "flag everything" and "flag nothing"
    (both 0.5), so the value lies in [0, 0.5]; 0 means some threshold separates the sets perfectly.
    Tied scores are never split: a cut between two equal scores does not exist.
    """
    in_scores = check_scores(in_scores, "in_scores")
    ood_scores = check_scores(ood_scores, "ood_scores")
    # Cut just above each distinct pooled score v: accept score <= v, flag score > v.
    cuts = np.unique(np.concatenate([in_scores, ood_scores]))
    in_accepted = np.searchsorted(np.sort(in_scores), cuts, side="right") / in_scores.shape[0]
    ood_accepted = np.searchsorted(np.sort(ood_scores), cuts, side="right") / ood_scores.shape[0]
    errors = 0.5 * ((1.0 - in_accepted) + ood_accepted)
    # "Flag everything" (a cut below every score) has FPR 1, FNR 0.
    return float(min(0.5, errors.min()))
