"""One self-contained HTML page for a ReportComparison: the verdict and the gates, the delta table,
and baseline and candidate side by side (summaries, energy histograms per split, ROC/PR and
calibration curves overlaid). Same page kit as the report page (`evaluation.render.page`)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.compare import ReportComparison
from evaluation.files import write_text_atomic
from evaluation.render.figures import calibration_curve_figure, energy_histogram, roc_pr_figures
from evaluation.render.page import figure_img, html_table, page
from evaluation.render.tables import comparison_table, gate_table
from evaluation.render.text import format_realised
from evaluation.report import EvalReport, data_checks_text


def render_comparison_html(comparison: ReportComparison) -> str:
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


def write_comparison_html(comparison: ReportComparison, path: str | Path) -> Path:
    return write_text_atomic(Path(path), render_comparison_html(comparison))


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
