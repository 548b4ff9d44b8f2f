"""One self-contained HTML page for an EvalReport: figures are inline base64 PNGs, styles are
inline, there is no script and nothing is fetched from a URL, so the file can be attached to an
MLflow run or an email and opened anywhere.

Figures are drawn on `matplotlib.figure.Figure` objects directly rather than through pyplot, so
rendering touches no global pyplot state and needs no GUI backend.

The page: conventions; threshold and calibration (with the calibration curve); OOD metrics with
confidence intervals (near OOD first, then far); energy separation; the baseline ranking; energy
statistics; energy histograms per OOD split with the threshold; ROC and precision-recall curves;
training curves when present; configuration, fingerprints, timings, environment.

The helpers at the bottom (`page`, `html_table`, `figure_img`, `energy_histogram`, `roc_pr_figures`)
are shared with `evaluation.compare`'s side-by-side page.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from evaluation.metrics import check_scores, roc_curve
from evaluation.report import (
    CI_METRICS,
    EBM_NAME,
    METRIC_LABELS,
    EvalReport,
    data_checks_text,
    format_ci,
    format_realised,
)

if TYPE_CHECKING:
    from evaluation.compare import ReportComparison

_MAX_BINS = 60

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-family: monospace; }
tr.ebm td { font-weight: bold; background: #eef4ff; }
tr.failrow td { background: #fde8ec; }
img { max-width: 100%; margin: 0.5em 0; }
.conventions { background: #f4f4f4; padding: 0.5em 1em; border-left: 4px solid #888; }
.pass { color: #176e1c; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
.unknown { color: #8a6d00; font-weight: bold; }
.side { display: flex; gap: 1em; }
.side > div { flex: 1; min-width: 0; }
.note { color: #555; font-size: 0.9em; }
"""


def render_html(report: EvalReport) -> str:
    title = f"Evaluation report: {report.model_uri or 'unregistered model'}"
    sections = [
        f"<h1>{escape(title)}</h1>",
        f"<p>Created {escape(report.created_at)} (schema version {report.schema_version}). "
        f"Data checks: {status_span(report.data_checks_passed)}.</p>",
        _conventions_section(report),
        _threshold_section(report),
        _metrics_section(report),
        _separation_section(report),
        _baselines_section(report),
        _energy_stats_section(report),
        _histogram_section(report),
        _roc_pr_section(report),
        _training_curve_section(report),
        _key_value_section("Configuration", report.config),
        _key_value_section("Dataset fingerprints", report.dataset_fingerprints),
        _key_value_section("Timings (seconds)", report.timings),
        _key_value_section("Environment", report.environment),
    ]
    return page(title, "\n".join(section for section in sections if section))


def write_html(report: EvalReport, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render_html(report), encoding="utf-8")
    return path


# --- sections ---------------------------------------------------------------------------------


def _conventions_section(report: EvalReport) -> str:
    conventions = report.conventions
    direction = "higher" if conventions.get("higher_is_more_ood", True) else "lower"
    extra = ""
    if "confidence_intervals" in conventions:
        extra = (
            f"<p>Confidence intervals: {escape(str(conventions['confidence_intervals']))}. Realised false-positive "
            f"rates: {escape(str(conventions.get('realised_fpr_interval', '')))}.</p>"
        )
    return (
        "<h2>Conventions</h2>\n<div class=\"conventions\">"
        f"<p>The score is the {escape(str(conventions.get('score', 'energy')))}; a {direction} score means "
        f"more out-of-distribution. Metrics treat <b>{escape(str(conventions.get('positive_class', 'ood')))}</b> "
        "as the positive class. An input is flagged as OOD when its score is strictly above the threshold.</p>"
        f"<p>{escape(str(conventions.get('fpr95', '')))}</p>{extra}</div>"
    )


def _threshold_section(report: EvalReport) -> str:
    calibration = report.calibration
    in_split = report.in_distribution_split
    rows: list[tuple[str, Any]] = [
        ("target false-positive rate (alpha)", report.alpha),
        ("threshold", report.threshold),
    ]
    if calibration is None:
        rows.append((f"realised false-positive rate on '{escape(in_split)}'", report.realised_fpr))
    else:
        level = f"{calibration.realised.confidence:.0%}"
        rows.append(
            (f"realised false-positive rate on '{escape(in_split)}' ({level} Clopper-Pearson)",
             format_realised(calibration.realised))
        )
    rows += [
        ("in-distribution split (held out)", in_split),
        ("calibration split", report.calibration_split if report.calibration_split is not None else "not recorded"),
    ]
    if calibration is not None and calibration.n_calibration is not None:
        rows.append(("calibration set size", calibration.n_calibration))
    if calibration is not None and calibration.conditional_threshold is not None:
        rows.append(
            (
                f"calibration-conditional threshold: P(FPR &le; {calibration.alpha:g}) &ge; {1 - calibration.delta:g}",
                calibration.conditional_threshold,
            )
        )
        if calibration.conditional_realised is not None:
            rows.append(
                (f"its realised false-positive rate on '{escape(in_split)}'",
                 format_realised(calibration.conditional_realised))
            )
    notes = []
    if math.isinf(report.threshold):
        notes.append(
            "<p>The threshold is infinite: the calibration set is too small for this alpha, so nothing is flagged.</p>"
        )
    if calibration is not None and calibration.conditional_threshold is not None and math.isinf(calibration.conditional_threshold):
        notes.append(
            "<p class=\"note\">The calibration-conditional threshold is infinite: the calibration set is too small "
            "to hold alpha with that probability.</p>"
        )
    curve = ""
    if calibration is not None and calibration.curve:
        curve = "<h3>Calibration curve</h3>\n" + figure_img(
            calibration_curve_figure({"": report}), "calibration curve: target alpha vs realised FPR"
        )
    return "<h2>Threshold and calibration</h2>\n" + html_table(["", "value"], rows, raw_first=True) + "".join(notes) + curve


def _metrics_section(report: EvalReport) -> str:
    if not report.ood_metrics:
        return "<h2>OOD metrics</h2>\n<p>No OOD splits were evaluated.</p>"
    header = ["OOD split", "kind", *(METRIC_LABELS[m] for m in CI_METRICS), "n in-distribution", "n OOD"]
    rows = []
    for split in report.near_splits + report.far_splits:
        m = report.ood_metrics[split]
        cis = report.metric_cis.get(split, {})
        rows.append(
            (split, report.ood_kind(split), *(format_ci(cis.get(name), report.metric(split, name)) for name in CI_METRICS),
             m.n_in, m.n_ood)
        )
    caption = ""
    if report.bootstrap is not None:
        b = report.bootstrap
        caption = (
            f"<p class=\"note\">Point estimate [{b.confidence:.0%} interval]: {escape(b.method)}, "
            f"{b.n_resamples} resamples, seed {b.seed}. AUROC, AUPR: higher is better; FPR@95TPR, detection "
            "error: lower is better.</p>"
        )
    return (
        f"<h2>OOD metrics (each split vs '{escape(report.in_distribution_split)}')</h2>\n"
        + caption
        + html_table(header, rows)
    )


def _separation_section(report: EvalReport) -> str:
    if not report.separation:
        return ""
    header = ["OOD split", "kind", "histogram overlap", "Wasserstein", "KS statistic", "KS p-value"]
    rows = [
        (split, report.ood_kind(split), s.histogram_overlap, s.wasserstein, s.ks_statistic, s.ks_pvalue)
        for split in report.near_splits + report.far_splits
        if (s := report.separation.get(split)) is not None
    ]
    return (
        "<h2>Energy separation</h2>\n<p class=\"note\">Overlap of the energy histograms (1 = identical, 0 = disjoint), "
        "Wasserstein distance in energy units, Kolmogorov-Smirnov statistic; near and far OOD listed separately.</p>\n"
        + html_table(header, rows)
    )


def _baselines_section(report: EvalReport) -> str:
    baselines = report.baselines
    if baselines is None:
        return ""
    parts = [
        "<h2>Baselines</h2>",
        "<p class=\"note\">Scored on the same features and inputs as the EBM; ranked by "
        f"{escape(METRIC_LABELS.get(baselines.ranked_by, baselines.ranked_by))} (best first).</p>",
    ]
    header = ["rank", "detector", "AUROC", "FPR@95TPR", "AUPR-out", "detection error"]
    for split in report.near_splits + report.far_splits:
        if split not in baselines.ranking:
            continue
        auroc_of = {name: _detector_metric(report, name, split, "auroc") for name in baselines.ranking[split]}
        rows = []
        for name in baselines.ranking[split]:
            cis = _detector_cis(report, name, split)
            rank = 1 + sum(value > auroc_of[name] for value in auroc_of.values())
            cells = [
                format_ci(cis.get(m), _detector_metric(report, name, split, m))
                for m in ("auroc", "fpr95", "aupr_out", "detection_error")
            ]
            rows.append((rank, name, *cells))
        classes = ["ebm" if name == EBM_NAME else "" for name in baselines.ranking[split]]
        parts.append(
            f"<h3>{escape(split)} ({escape(report.ood_kind(split))} OOD): EBM rank "
            f"{baselines.ebm_rank[split]} of {len(baselines.ranking[split])}</h3>"
        )
        parts.append(html_table(header, rows, row_classes=classes))
    if baselines.skipped:
        parts.append(
            "<p>Skipped: "
            + "; ".join(f"{escape(name)} ({escape(reason)})" for name, reason in baselines.skipped.items())
            + "</p>"
        )
    if baselines.seconds:
        parts.append(_key_value_section("Baseline fit + score time (seconds)", baselines.seconds, level=3))
    return "\n".join(parts)


def _detector_cis(report: EvalReport, name: str, split: str) -> dict:
    if name == EBM_NAME:
        return report.metric_cis.get(split, {})
    return report.baselines.cis.get(name, {}).get(split, {}) if report.baselines else {}


def _detector_metric(report: EvalReport, name: str, split: str, metric: str) -> float:
    """A metric of the EBM or of a baseline on one OOD split."""
    if name == EBM_NAME:
        return report.metric(split, metric)
    cis = _detector_cis(report, name, split)
    if metric in cis:
        return cis[metric].estimate
    return float(getattr(report.baselines.metrics[name][split], metric))


def _energy_stats_section(report: EvalReport) -> str:
    rows = [
        (split, s.n, s.mean, s.std, s.min, s.q05, s.q50, s.q95, s.max) for split, s in report.energy_stats.items()
    ]
    header = ["split", "n", "mean", "std", "min", "q05", "median", "q95", "max"]
    return "<h2>Energy by split</h2>\n" + html_table(header, rows)


def _histogram_section(report: EvalReport) -> str:
    in_split = report.in_distribution_split
    in_scores = np.asarray(report.scores.get(in_split, []), dtype=np.float64)
    images = []
    for ood_split in report.near_splits + report.far_splits:
        ood_scores = np.asarray(report.scores.get(ood_split, []), dtype=np.float64)
        if in_scores.size == 0 or ood_scores.size == 0:
            continue  # a report may be stored without raw scores
        images.append(
            figure_img(
                energy_histogram(in_scores, ood_scores, in_split, ood_split, report.threshold,
                                 title=f"{in_split} vs {ood_split} ({report.ood_kind(ood_split)} OOD)"),
                f"energy histogram {in_split} vs {ood_split}",
            )
        )
    if not images:
        return ""
    return "<h2>Energy histograms</h2>\n" + "\n".join(images)


def _roc_pr_section(report: EvalReport) -> str:
    figures = roc_pr_figures({"": report})
    if figures is None:
        return ""
    roc, pr = figures
    return (
        "<h2>ROC curves</h2>\n" + figure_img(roc, "ROC curves")
        + "\n<h2>Precision-recall curves (OOD positive)</h2>\n" + figure_img(pr, "precision-recall curves")
    )


def _training_curve_section(report: EvalReport) -> str:
    if not report.training_curve:
        return ""
    curve = report.training_curve
    steps = curve.get("step")
    series = {name: values for name, values in curve.items() if name != "step" and len(values) > 0}
    if not series:
        return ""
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
    return "<h2>Training</h2>\n" + figure_img(figure, "training curves")


def _key_value_section(title: str, mapping: dict[str, Any], level: int = 2) -> str:
    if not mapping:
        return ""
    return f"<h{level}>{escape(title)}</h{level}>\n" + html_table(["key", "value"], list(mapping.items()))


# --- figures shared with the comparison page -------------------------------------------------------


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


# --- HTML helpers -------------------------------------------------------------------------------


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def status_span(passed: bool | None) -> str:
    css = {True: "pass", False: "fail", None: "unknown"}[passed]
    return f'<span class="{css}">{escape(data_checks_text(passed))}</span>'


def figure_img(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    row_classes: Sequence[str] | None = None,
    raw_first: bool = False,
) -> str:
    """A table; every cell is escaped except the first column when `raw_first` (trusted labels
    written in this module, which may hold entities such as &le;)."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = row_classes[index] if row_classes else ""
        opening = f'<tr class="{escape(css)}">' if css else "<tr>"
        cells = [
            f"<td>{value}</td>" if raw_first and position == 0 else cell(value) for position, value in enumerate(row)
        ]
        body.append(opening + "".join(cells) + "</tr>\n")
    return f"<table>\n<tr>{head}</tr>\n{''.join(body)}</table>"


def cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{escape(str(value))}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    if isinstance(value, float):
        return f'<td class="num">{escape(f"{value:.6g}")}</td>'
    return f"<td>{escape(str(value))}</td>"


# --- the comparison page (evaluation.compare.render_comparison_html) -------------------------------


def render_comparison_page(comparison: ReportComparison) -> str:
    from evaluation.compare import comparison_table, gate_table

    base, cand = comparison.baseline, comparison.candidate
    verdict = "PASSED" if comparison.passed else "FAILED"
    title = f"Report comparison ({verdict}): {_label(base, 'baseline')} vs {_label(cand, 'candidate')}"
    gate_rows = gate_table(comparison)
    sections = [
        f"<h1>Report comparison: <span class=\"{'pass' if comparison.passed else 'fail'}\">{verdict}</span></h1>",
        f"<p>Baseline <b>{escape(_label(base, 'baseline'))}</b> vs candidate <b>{escape(_label(cand, 'candidate'))}</b>. "
        f"Compared {escape(comparison.created_at)}. Deltas are candidate - baseline; the score is the energy "
        "(higher = more OOD), OOD is the positive class.</p>",
        "<h2>Gates</h2>",
        html_table(
            ["gate", "split", "result", "rule", "detail"],
            [(r["gate"], r["split"], r["result"], r["rule"], r["message"]) for r in gate_rows],
            row_classes=["" if r["passed"] else "failrow" for r in gate_rows],
        )
        if gate_rows
        else "<p>No gates configured.</p>",
        _comparison_summary(comparison),
        _comparison_deltas(comparison, comparison_table(comparison)),
        _comparison_notes(comparison),
        _comparison_figures(comparison),
    ]
    return page(title, "\n".join(s for s in sections if s))


def _label(report: EvalReport, fallback: str) -> str:
    return report.model_uri or f"{fallback} ({report.created_at})"


def _comparison_summary(comparison: ReportComparison) -> str:
    base, cand = comparison.baseline, comparison.candidate

    def realised(report: EvalReport) -> str:
        if report.calibration is not None:
            return format_realised(report.calibration.realised)
        return f"{report.realised_fpr:.4f}"

    def ranks(report: EvalReport) -> str:
        if report.baselines is None:
            return "no baselines"
        return ", ".join(
            f"{split}: {report.baselines.ebm_rank[split]}/{len(report.baselines.ranking[split])}"
            for split in report.baselines.ranking
        )

    fingerprints = sorted(set(base.dataset_fingerprints) | set(cand.dataset_fingerprints))
    same = [s for s in fingerprints if base.dataset_fingerprints.get(s) == cand.dataset_fingerprints.get(s)]
    rows = [
        ("model", base.model_uri or "unregistered", cand.model_uri or "unregistered"),
        ("created", base.created_at, cand.created_at),
        ("schema version", base.schema_version, cand.schema_version),
        ("data checks", data_checks_text(base.data_checks_passed), data_checks_text(cand.data_checks_passed)),
        ("alpha", base.alpha, cand.alpha),
        ("threshold", base.threshold, cand.threshold),
        ("realised FPR on held-out in-distribution data", realised(base), realised(cand)),
        ("EBM AUROC rank among baselines", ranks(base), ranks(cand)),
        ("splits with equal data fingerprints", ", ".join(same) or "none", ", ".join(same) or "none"),
    ]
    return "<h2>Side by side</h2>\n" + html_table(["", "baseline", "candidate"], rows)


def _comparison_deltas(comparison: ReportComparison, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<h2>Metric deltas</h2>\n<p>The reports share no OOD split.</p>"
    level = f"{comparison.gates.confidence:.0%}"
    table_rows = [
        (
            r["split"], r["kind"], r["label"], r["baseline"], r["candidate"], f"{r['delta']:+.4f}",
            "n/a" if r["ci_low"] is None else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
            "paired" if r["paired"] else "unpaired", r["better"],
        )
        for r in rows
    ]
    return (
        f"<h2>Metric deltas (candidate - baseline, {level} bootstrap interval)</h2>\n"
        + html_table(["OOD split", "kind", "metric", "baseline", "candidate", "delta", "interval", "bootstrap", "moved"],
                     table_rows)
    )


def _comparison_notes(comparison: ReportComparison) -> str:
    notes = [f"{split}: {p.note}" for split, p in comparison.pairing.items()]
    notes += [n for n in comparison.notes if not any(n.startswith(f"{split}: ") for split in comparison.pairing)]
    if not notes:
        return ""
    return "<h2>Notes</h2>\n<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"


def _comparison_figures(comparison: ReportComparison) -> str:
    base, cand = comparison.baseline, comparison.candidate
    parts = []
    histogram_rows = []
    for split in comparison.splits:
        columns = []
        for report, name in ((base, "baseline"), (cand, "candidate")):
            in_scores = np.asarray(report.scores.get(report.in_distribution_split, []), dtype=np.float64)
            ood_scores = np.asarray(report.scores.get(split, []), dtype=np.float64)
            if in_scores.size == 0 or ood_scores.size == 0:
                columns.append(f"<div><p>{name}: no per-sample scores</p></div>")
                continue
            figure = energy_histogram(in_scores, ood_scores, report.in_distribution_split, split, report.threshold,
                                      title=f"{name}: {split}", figsize=(5.5, 3.5))
            columns.append(f"<div>{figure_img(figure, f'{name} energy histogram {split}')}</div>")
        histogram_rows.append(
            f"<h3>{escape(split)} ({escape(cand.ood_kind(split))} OOD)</h3>\n<div class=\"side\">{''.join(columns)}</div>"
        )
    if histogram_rows:
        parts.append("<h2>Energy histograms (baseline left, candidate right)</h2>\n" + "\n".join(histogram_rows))
    figures = roc_pr_figures({"baseline": base, "candidate": cand}, figsize=(5.5, 4.5))
    if figures is not None:
        roc, pr = figures
        parts.append(
            "<h2>ROC and precision-recall (baseline solid, candidate dashed)</h2>\n<div class=\"side\">"
            f"<div>{figure_img(roc, 'ROC curves, baseline and candidate')}</div>"
            f"<div>{figure_img(pr, 'precision-recall curves, baseline and candidate')}</div></div>"
        )
    if (base.calibration and base.calibration.curve) or (cand.calibration and cand.calibration.curve):
        parts.append(
            "<h2>Calibration curves</h2>\n"
            + figure_img(calibration_curve_figure({"baseline": base, "candidate": cand}), "calibration curves")
        )
    return "\n".join(parts)
