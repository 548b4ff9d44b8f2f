"""One self-contained HTML page for an EvalReport: figures are inline base64 PNGs, styles are
inline, there is no script and nothing is fetched from a URL, so the file can be attached to an
MLflow run or an email and opened anywhere.

The page: conventions; threshold and calibration (with the calibration curve); OOD metrics with
confidence intervals (near OOD first, then far); energy separation; the baseline ranking; energy
statistics; energy histograms per OOD split with the threshold; ROC and precision-recall curves;
training curves when present; Langevin samples of the trained energy beside training images when
the features are an image (what the model considers in-distribution); the selection stage's candidates and validation figures (with a warning
when a baseline beats the chosen detector on validation); configuration, fingerprints, timings, environment.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.files import write_text_atomic
from evaluation.render.figures import (
    calibration_curve_figure,
    energy_histogram,
    image_samples_figure,
    roc_pr_figures,
    training_curves_figure,
)
from evaluation.render.page import figure_img, html_table, page, status_span
from evaluation.render.text import format_ci, format_realised
from evaluation.report import CI_METRICS, EBM_NAME, METRIC_LABELS, EvalReport


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
        _selection_section(report),
        _energy_stats_section(report),
        _histogram_section(report),
        _roc_pr_section(report),
        _training_curve_section(report),
        _model_samples_section(report),
        _key_value_section("Configuration", report.config),
        _key_value_section("Dataset fingerprints", report.dataset_fingerprints),
        _key_value_section("Timings (seconds)", report.timings),
        _key_value_section("Environment", report.environment),
    ]
    return page(title, "\n".join(section for section in sections if section))


def write_html(report: EvalReport, path: str | Path) -> Path:
    return write_text_atomic(Path(path), render_html(report))


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


def _selection_section(report: EvalReport) -> str:
    selection = report.selection
    if not selection:
        return ""
    parts = ["<h2>Selection</h2>"]
    if selection.get("warning"):
        parts.append(f"<p class=\"fail\"><b>Warning:</b> {escape(str(selection['warning']))}</p>")
    parts.append(
        f"<p>Chosen: <b>{escape(str(selection['winner']))}</b>, by the rule: {escape(str(selection['rule']))}. "
        f"Validation scheme: <b>{escape(str(selection['scheme']))}</b> ({int(selection['n_folds'])} fold(s)"
        + (f"; held out: {escape(str(selection['held_out']))}" if any(selection.get("held_out") or []) else "")
        + f"), budget {escape(str(selection['budget']))}, {float(selection['seconds']):.1f} s. "
        "Only validation figures chose the model; test figures elsewhere in this report were not used.</p>"
    )
    header = ["candidate", "family", "validation AUROC", "validation FPR@95TPR", "fit s (all folds)", "note"]
    rows, classes = [], []
    for c in selection["candidates"]:
        note = c.get("error") or ("chosen" if c["name"] == selection["winner"] else "")
        rows.append((c["name"], c["family"], c["val_auroc"], c["val_fpr95"], c["fit_seconds"], note))
        classes.append("ebm" if c["name"] == selection["winner"] else "")
    parts.append(html_table(header, rows, row_classes=classes))
    validation_baselines = selection.get("validation_baselines") or {}
    if validation_baselines:
        parts.append("<h3>Baselines on the same validation folds</h3>")
        parts.append(
            html_table(
                ["baseline", "validation AUROC", "validation FPR@95TPR"],
                [(name, m["val_auroc"], m["val_fpr95"]) for name, m in validation_baselines.items()],
            )
        )
        if selection.get("validation_rank") is not None:
            parts.append(
                f"<p>The chosen detector ranks {selection['validation_rank']} of {len(validation_baselines) + 1} "
                "among the baselines on validation (by AUROC).</p>"
            )
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
    figure = training_curves_figure(report.training_curve)
    if figure is None:
        return ""
    return "<h2>Training</h2>\n" + figure_img(figure, "training curves")


def _model_samples_section(report: EvalReport) -> str:
    samples = report.model_samples
    if not samples:
        return ""
    heading = "<h2>What the model considers in-distribution</h2>\n"
    sampler = samples.get("sampler") or {}
    if samples.get("samples"):
        text = (
            f"<p>Top: {len(samples.get('training_examples') or [])} training images. Bottom: "
            f"{len(samples['samples'])} samples drawn from the trained energy by Langevin dynamics "
            f"({escape(str(sampler.get('n_steps', '?')))} steps of size {escape(str(sampler.get('step_size', '?')))}, "
            f"noise scale {escape(str(sampler.get('noise_scale', '?')))}, seed {escape(str(sampler.get('seed', '?')))}, "
            f"started from {escape(str(sampler.get('start', '?')))}, run in the space "
            f"{escape(str(sampler.get('space', '?')))}). Each picture is titled with its energy E (lower = more "
            "in-distribution): samples with energies as low as the training images' are inputs the guard "
            "accepts; if they do not look like the training images, the guard accepts inputs unlike its "
            "data.</p>"
        )
    else:
        text = f"<p class=\"note\">{escape(str(samples.get('note') or 'no samples were drawn'))}.</p>"
    figure = image_samples_figure(
        samples.get("samples") or [],
        samples.get("training_examples") or [],
        tuple(samples["image_shape"]),
        tuple(samples["value_range"]),
        samples.get("sample_energies"),
        samples.get("training_energies"),
    )
    picture = "" if figure is None else "\n" + figure_img(figure, "Langevin samples of the model beside training images")
    return heading + text + picture


def _key_value_section(title: str, mapping: dict[str, Any], level: int = 2) -> str:
    if not mapping:
        return ""
    return f"<h{level}>{escape(title)}</h{level}>\n" + html_table(["key", "value"], list(mapping.items()))
