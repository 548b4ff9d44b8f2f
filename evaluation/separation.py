"""How far apart the in-distribution and OOD energy distributions are, beyond ranking metrics.

AUROC says how often an OOD input outranks an in-distribution one; these say how the two energy
distributions differ in shape and location, which matters for a threshold's robustness:

- histogram_overlap: sum over shared bins of min(p_in, p_ood), with each histogram normalised to
  total mass 1. 1 = identical histograms, 0 = no bin holds both.
- wasserstein: the 1-Wasserstein (earth mover's) distance, in energy units: how far, on average,
  the in-distribution energy mass must move to become the OOD one. A pure shift by c gives c.
- ks_statistic / ks_pvalue: two-sample Kolmogorov-Smirnov (largest gap between the empirical CDFs)
  and its p-value under "same distribution".

Near and far OOD sets are measured separately (`separation_by_split`), so a report can show that a
guard separates synthetic corruptions easily and held-out classes less so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import ks_2samp, wasserstein_distance

from evaluation.metrics import check_scores

# Fixed bin count (over the pooled range of the two sets) so the overlap of different OOD splits
# and of different reports is computed the same way; data-driven rules ("auto") would change the
# bins, and with them the overlap, from one data set size to the next.
DEFAULT_BINS = 50


@dataclass(frozen=True)
class SeparationStats:
    histogram_overlap: float
    wasserstein: float
    ks_statistic: float
    ks_pvalue: float
    bins: int
    n_in: int
    n_ood: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeparationStats:
        return cls(
            histogram_overlap=float(d["histogram_overlap"]),
            wasserstein=float(d["wasserstein"]),
            ks_statistic=float(d["ks_statistic"]),
            ks_pvalue=float(d["ks_pvalue"]),
            bins=int(d["bins"]),
            n_in=int(d["n_in"]),
            n_ood=int(d["n_ood"]),
        )


def histogram_overlap(in_scores: Any, ood_scores: Any, bins: int = DEFAULT_BINS) -> float:
    """sum_b min(count_in[b] / n_in, count_ood[b] / n_ood) on `bins` equal bins spanning both sets."""
    in_scores = check_scores(in_scores, "in_scores")
    ood_scores = check_scores(ood_scores, "ood_scores")
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    edges = np.histogram_bin_edges(np.concatenate([in_scores, ood_scores]), bins=int(bins))
    in_counts, _ = np.histogram(in_scores, bins=edges)
    ood_counts, _ = np.histogram(ood_scores, bins=edges)
    n_in, n_ood = in_scores.size, ood_scores.size
    # min(a / n_in, b / n_ood) = min(a * n_ood, b * n_in) / (n_in * n_ood): summing integers first
    # makes identical histograms give exactly 1.0.
    shared = np.minimum(in_counts * n_ood, ood_counts * n_in).sum()
    return float(shared / (n_in * n_ood))


def separation_stats(in_scores: Any, ood_scores: Any, bins: int = DEFAULT_BINS) -> SeparationStats:
    in_scores = check_scores(in_scores, "in_scores")
    ood_scores = check_scores(ood_scores, "ood_scores")
    ks = ks_2samp(in_scores, ood_scores)
    return SeparationStats(
        histogram_overlap=histogram_overlap(in_scores, ood_scores, bins),
        wasserstein=float(wasserstein_distance(in_scores, ood_scores)),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        bins=int(bins),
        n_in=int(in_scores.size),
        n_ood=int(ood_scores.size),
    )


def separation_by_split(
    split_scores: dict[str, Any], in_split: str, ood_splits: list[str], bins: int = DEFAULT_BINS
) -> dict[str, SeparationStats]:
    """`separation_stats` of the in-distribution split against each OOD split, keyed by OOD split."""
    if in_split not in split_scores:
        raise ValueError(f"in_split {in_split!r} is not in split_scores ({sorted(split_scores)})")
    missing = [split for split in ood_splits if split not in split_scores]
    if missing:
        raise ValueError(f"OOD split(s) {missing} not in split_scores ({sorted(split_scores)})")
    return {
        split: separation_stats(split_scores[in_split], split_scores[split], bins) for split in ood_splits
    }
