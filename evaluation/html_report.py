"""One self-contained HTML page for an EvalReport: figures are inline base64 PNGs, styles are
inline, nothing is fetched from a URL, so the file can be attached to an MLflow run or an email.

Figures are drawn on `matplotlib.figure.Figure` objects directly rather than through pyplot, so
rendering touches no global pyplot state and needs no GUI backend.
"""

from __future__ import annotations

import base64
import io
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from evaluation.metrics import roc_curve
from evaluation.report import EvalReport

_MAX_BINS = 60

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-family: monospace; }
img { max-width: 100%; margin: 0.5em 0; }
.conventions { background: #f4f4f4; padding: 0.5em 1em; border-left: 4px solid #888; }
"""


def render_html(report: EvalReport) -> str:
    title = f"Evaluation report: {report.model_uri or 'unregistered model'}"
    sections = [
        f"<h1>{escape(title)}</h1>",
        f"<p>Created {escape(report.created_at)} (schema version {report.schema_version}).</p>",
        _conventions_section(report),
        _threshold_section(report),
        _metrics_section(report),
        _energy_stats_section(report),
        _histogram_section(report),
        _roc_section(report),
        _training_curve_section(report),
        _key_value_section("Configuration", report.config),
        _key_value_section("Dataset fingerprints", report.dataset_fingerprints),
        _key_value_section("Timings (seconds)", report.timings),
        _key_value_section("Environment", report.environment),
    ]
    body = "\n".join(section for section in sections if section)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write_html(report: EvalReport, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render_html(report), encoding="utf-8")
    return path


# --- sections ---------------------------------------------------------------------------------


def _conventions_section(report: EvalReport) -> str:
    conventions = report.conventions
    direction = "higher" if conventions.get("higher_is_more_ood", True) else "lower"
    return (
        "<h2>Conventions</h2>\n<div class=\"conventions\">"
        f"<p>The score is the {escape(str(conventions.get('score', 'energy')))}; a {direction} score means "
        f"more out-of-distribution. Metrics treat <b>{escape(str(conventions.get('positive_class', 'ood')))}</b> "
        "as the positive class. An input is flagged as OOD when its score is strictly above the threshold.</p>"
        f"<p>{escape(str(conventions.get('fpr95', '')))}</p></div>"
    )


def _threshold_section(report: EvalReport) -> str:
    rows: list[tuple[str, Any]] = [
        ("target false-positive rate (alpha)", report.alpha),
        ("threshold", report.threshold),
        (f"realised false-positive rate on '{report.in_distribution_split}'", report.realised_fpr),
        ("in-distribution split", report.in_distribution_split),
        ("calibration split", report.calibration_split if report.calibration_split is not None else "not recorded"),
    ]
    note = ""
    if math.isinf(report.threshold):
        note = "<p>The threshold is infinite: the calibration set is too small for this alpha, so nothing is flagged.</p>"
    return "<h2>Threshold</h2>\n" + _table(["", "value"], rows) + note


def _metrics_section(report: EvalReport) -> str:
    if not report.ood_metrics:
        return "<h2>OOD metrics</h2>\n<p>No OOD splits were evaluated.</p>"
    rows = [
        (split, m.auroc, m.fpr95, m.aupr_out, m.aupr_in, m.n_in, m.n_ood) for split, m in report.ood_metrics.items()
    ]
    header = ["OOD split", "AUROC", "FPR@95TPR", "AUPR-out", "AUPR-in", "n in-distribution", "n OOD"]
    return (
        f"<h2>OOD metrics (each split vs '{escape(report.in_distribution_split)}')</h2>\n" + _table(header, rows)
    )


def _energy_stats_section(report: EvalReport) -> str:
    rows = [
        (split, s.n, s.mean, s.std, s.min, s.q05, s.q50, s.q95, s.max) for split, s in report.energy_stats.items()
    ]
    header = ["split", "n", "mean", "std", "min", "q05", "median", "q95", "max"]
    return "<h2>Energy by split</h2>\n" + _table(header, rows)


def _histogram_section(report: EvalReport) -> str:
    in_split = report.in_distribution_split
    in_scores = np.asarray(report.scores.get(in_split, []), dtype=np.float64)
    images = []
    for ood_split in report.ood_metrics:
        ood_scores = np.asarray(report.scores.get(ood_split, []), dtype=np.float64)
        if in_scores.size == 0 or ood_scores.size == 0:
            continue  # a report may be stored without raw scores
        images.append(_img(_energy_histogram(in_scores, ood_scores, in_split, ood_split, report.threshold),
                           f"energy histogram {in_split} vs {ood_split}"))
    if not images:
        return ""
    return "<h2>Energy histograms</h2>\n" + "\n".join(images)


def _roc_section(report: EvalReport) -> str:
    in_scores = report.scores.get(report.in_distribution_split, [])
    curves = {
        split: roc_curve(in_scores, report.scores[split])
        for split in report.ood_metrics
        if in_scores and report.scores.get(split)
    }
    if not curves:
        return ""
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    for split, (fpr, tpr) in curves.items():
        axes.plot(fpr, tpr, label=f"{split} (AUROC {report.ood_metrics[split].auroc:.4f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    axes.set_xlabel("false positive rate (in-distribution flagged)")
    axes.set_ylabel("true positive rate (OOD flagged)")
    axes.set_title(f"ROC, OOD positive, vs '{report.in_distribution_split}'")
    axes.legend(loc="lower right")
    return "<h2>ROC curves</h2>\n" + _img(figure, "ROC curves")


def _training_curve_section(report: EvalReport) -> str:
    if not report.training_curve:
        return ""
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for name, values in report.training_curve.items():
        axes.plot(np.arange(len(values)), values, label=name)
    axes.set_xlabel("step")
    axes.set_title("Training curve")
    axes.legend()
    return "<h2>Training</h2>\n" + _img(figure, "training curve")


def _key_value_section(title: str, mapping: dict[str, Any]) -> str:
    if not mapping:
        return ""
    return f"<h2>{escape(title)}</h2>\n" + _table(["key", "value"], list(mapping.items()))


# --- helpers ----------------------------------------------------------------------------------


def _energy_histogram(
    in_scores: np.ndarray, ood_scores: np.ndarray, in_split: str, ood_split: str, threshold: float
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

    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    axes.hist(in_scores, bins=bins, density=True, alpha=0.5, label=f"{in_split} (in-distribution)")
    axes.hist(ood_scores, bins=bins, density=True, alpha=0.5, label=f"{ood_split} (OOD)")
    if math.isfinite(threshold):
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    else:
        axes.plot([], [], " ", label=f"threshold {threshold} (nothing flagged)")
    axes.set_xlabel("energy (higher = more OOD)")
    axes.set_ylabel("density")
    axes.set_title(f"{in_split} vs {ood_split}")
    axes.legend()
    return figure


def _img(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def _table(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return f"<td>{escape(str(value))}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    if isinstance(value, float):
        return f'<td class="num">{escape(f"{value:.6g}")}</td>'
    return f"<td>{escape(str(value))}</td>"
