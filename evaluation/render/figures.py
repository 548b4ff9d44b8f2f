"""Matplotlib figures of evaluation reports, shared by the report page and the comparison page.

Figures are drawn on `matplotlib.figure.Figure` objects directly rather than through pyplot, so
rendering touches no global pyplot state and needs no GUI backend.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from evaluation.metrics import precision_recall_curve, roc_curve

if TYPE_CHECKING:
    from evaluation.report import EvalReport

_MAX_BINS = 60


def energy_histogram(
    in_scores: np.ndarray,
    ood_scores: np.ndarray,
    in_split: str,
    ood_split: str,
    threshold: float,
    title: str | None = None,
    figsize: tuple[float, float] = (7, 4),
) -> Figure:
    all_scores = np.concatenate([in_scores, ood_scores])
    low, high = float(all_scores.min()), float(all_scores.max())
    if math.isfinite(threshold):
        # Keep the threshold line inside the plotted range.
        low, high = min(low, threshold), max(high, threshold)
    if low == high:  # all scores equal: give the single bar some width
        low, high = low - 0.5, high + 0.5
    n_bins = int(np.clip(np.sqrt(all_scores.size), 10, _MAX_BINS))
    bins = np.linspace(low, high, n_bins + 1)  # shared, so the two densities are comparable

    figure = Figure(figsize=figsize)
    axes = figure.add_subplot()
    axes.hist(in_scores, bins=bins, density=True, alpha=0.5, label=f"{in_split} (in-distribution)")
    axes.hist(ood_scores, bins=bins, density=True, alpha=0.5, label=f"{ood_split} (OOD)")
    if math.isfinite(threshold):
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    else:
        axes.plot([], [], " ", label=f"threshold {threshold} (nothing flagged)")
    axes.set_xlabel("energy (higher = more OOD)")
    axes.set_ylabel("density")
    axes.set_title(title or f"{in_split} vs {ood_split}")
    axes.legend(fontsize="small")
    return figure


def roc_pr_figures(reports: dict[str, EvalReport], figsize: tuple[float, float] = (6, 5)) -> tuple[Figure, Figure] | None:
    """ROC and precision-recall figures; `reports` maps a label ("" for one report; "baseline",
    "candidate" on the comparison page) to a report. One line per (label, OOD split); the second
    label's lines are dashed."""
    roc = Figure(figsize=figsize)
    roc_axes = roc.add_subplot()
    pr = Figure(figsize=figsize)
    pr_axes = pr.add_subplot()
    colours = {}
    drawn = False
    for index, (label, report) in enumerate(reports.items()):
        in_scores = report.scores.get(report.in_distribution_split, [])
        style = "-" if index == 0 else "--"
        for split in report.near_splits + report.far_splits:
            ood_scores = report.scores.get(split, [])
            if not in_scores or not ood_scores:
                continue
            colour = colours.setdefault(split, f"C{len(colours)}")
            prefix = f"{label}: " if label else ""
            fpr, tpr = roc_curve(in_scores, ood_scores)
            roc_axes.plot(fpr, tpr, style, color=colour,
                          label=f"{prefix}{split} (AUROC {report.ood_metrics[split].auroc:.4f})")
            recall, precision = precision_recall_curve(in_scores, ood_scores)
            pr_axes.step(np.r_[0.0, recall], np.r_[precision[0], precision], style, where="pre", color=colour,
                         label=f"{prefix}{split} (AUPR-out {report.ood_metrics[split].aupr_out:.4f})")
            drawn = True
    if not drawn:
        return None
    roc_axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    roc_axes.set_xlabel("false positive rate (in-distribution flagged)")
    roc_axes.set_ylabel("true positive rate (OOD flagged)")
    roc_axes.set_title("ROC, OOD positive")
    roc_axes.legend(loc="lower right", fontsize="small")
    pr_axes.set_xlabel("recall (share of OOD flagged)")
    pr_axes.set_ylabel("precision (share of flagged that is OOD)")
    pr_axes.set_ylim(0.0, 1.02)
    pr_axes.set_title("Precision-recall, OOD positive")
    pr_axes.legend(loc="lower left", fontsize="small")
    return roc, pr


def calibration_curve_figure(reports: dict[str, EvalReport], figsize: tuple[float, float] = (6, 5)) -> Figure:
    """Target alpha against realised FPR on held-out in-distribution data, with the exact binomial
    interval as error bars and the diagonal (perfect calibration) for reference."""
    figure = Figure(figsize=figsize)
    axes = figure.add_subplot()
    top = 0.0
    for index, (label, report) in enumerate(reports.items()):
        calibration = report.calibration
        if calibration is None or not calibration.curve:
            continue
        alphas = np.array([p.alpha for p in calibration.curve])
        realised = np.array([p.realised_fpr for p in calibration.curve])
        errors = np.array([[p.realised_fpr - p.ci_low for p in calibration.curve],
                           [p.ci_high - p.realised_fpr for p in calibration.curve]])
        level = f"{calibration.realised.confidence:.0%}"
        axes.errorbar(alphas, realised, yerr=errors, marker="o" if index == 0 else "s", capsize=3,
                      linestyle="-" if index == 0 else "--", label=f"{label or 'realised FPR'} ({level} CI)")
        top = max(top, float(alphas.max()), float(max(p.ci_high for p in calibration.curve)))
        axes.axvline(calibration.alpha, color="grey", linestyle=":", linewidth=1)
    top = min(1.0, top * 1.05) if top > 0 else 1.0
    axes.plot([0, top], [0, top], color="black", linestyle=":", linewidth=1, label="realised = target")
    axes.set_xlabel("target alpha (split-conformal threshold)")
    axes.set_ylabel("realised false-positive rate (held out)")
    axes.set_title("Calibration curve")
    axes.legend(loc="upper left", fontsize="small")
    return figure


def training_curves_figure(curve: dict[str, list[float]]) -> Figure | None:
    """One panel per recorded series (two columns), against `curve["step"]` when it has the same
    length; None when there is nothing to draw."""
    steps = curve.get("step")
    series = {name: values for name, values in curve.items() if name != "step" and len(values) > 0}
    if not series:
        return None
    n_cols = 2 if len(series) > 1 else 1
    n_rows = math.ceil(len(series) / n_cols)
    figure = Figure(figsize=(6 * n_cols, 3 * n_rows))
    for i, (name, values) in enumerate(series.items()):
        axes = figure.add_subplot(n_rows, n_cols, i + 1)
        x = np.asarray(steps) if steps is not None and len(steps) == len(values) else np.arange(len(values))
        axes.plot(x, values)
        axes.set_title(name)
        axes.set_xlabel("step")
    figure.tight_layout()
    return figure


def image_samples_figure(
    samples: list[list[float]],
    training: list[list[float]],
    image_shape: tuple[int, int],
    value_range: tuple[float, float],
    sample_energies: list[float] | None = None,
    training_energies: list[float] | None = None,
    n_cols: int = 8,
) -> Figure | None:
    """Training images (top block) above Langevin samples of the model (bottom block), grey scale over
    `value_range` (values outside it are shown at its ends), each titled with its energy when given.
    None when there is nothing to draw."""
    blocks = [(name, rows, energies) for name, rows, energies in
              (("training", training, training_energies), ("sample", samples, sample_energies)) if rows]
    if not blocks:
        return None
    n_cols = max(1, min(n_cols, max(len(rows) for _, rows, _ in blocks)))
    block_rows = [math.ceil(len(rows) / n_cols) for _, rows, _ in blocks]
    figure = Figure(figsize=(1.1 * n_cols, 1.25 * sum(block_rows) + 0.4 * len(blocks)))
    grid = figure.add_gridspec(sum(block_rows), n_cols, hspace=0.5, wspace=0.1)
    low, high = value_range
    top = 0
    for (name, rows, energies), n_rows in zip(blocks, block_rows):
        for i, row in enumerate(rows):
            axes = figure.add_subplot(grid[top + i // n_cols, i % n_cols])
            axes.imshow(np.asarray(row, dtype=np.float64).reshape(image_shape), cmap="gray_r",
                        vmin=low, vmax=high, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            label = f"{name} {i + 1}"
            if energies is not None and i < len(energies):
                label += f"\nE={energies[i]:.3g}"
            axes.set_title(label, fontsize=7)
        top += n_rows
    return figure
