"""Markdown summaries for terminals and pull-request comments (GitHub-flavoured): one for an
evaluation report (`to_markdown`), one for a report comparison (`comparison_markdown`)."""

from __future__ import annotations

from evaluation.compare import ReportComparison
from evaluation.render.tables import comparison_table, gate_table
from evaluation.render.text import format_ci, format_realised
from evaluation.report import CI_METRICS, EBM_NAME, METRIC_LABELS, EvalReport, data_checks_text


def to_markdown(report: EvalReport) -> str:
    """A summary for terminals and pull-request comments (GitHub-flavoured Markdown)."""
    in_split = report.in_distribution_split
    lines = [
        f"# Evaluation report ({report.model_uri or 'unregistered model'})",
        "",
        f"- created: {report.created_at} (schema version {report.schema_version})",
        "- score: energy, higher = more OOD; OOD is the positive class; flagged when energy > threshold",
        f"- data checks: {data_checks_text(report.data_checks_passed)}",
        f"- alpha: {report.alpha:g}, threshold: {report.threshold:.6g}, "
        f"realised FPR on `{in_split}`: {report.realised_fpr:.4f}",
    ]
    if report.calibration_split is not None:
        lines.append(f"- threshold calibrated on `{report.calibration_split}`")
    calibration = report.calibration
    if calibration is not None:
        level = f"{calibration.realised.confidence:.0%}"
        lines.append(f"- realised FPR with {level} Clopper-Pearson interval: {format_realised(calibration.realised)}")
        if calibration.conditional_realised is not None and calibration.conditional_threshold is not None:
            lines.append(
                f"- calibration-conditional threshold (P(FPR <= {calibration.alpha:g}) >= {1 - calibration.delta:g}): "
                f"{calibration.conditional_threshold:.6g}, realised FPR {format_realised(calibration.conditional_realised)}"
            )
    lines.append("")

    if report.bootstrap is not None:
        b = report.bootstrap
        lines.append(
            f"## OOD metrics vs `{in_split}` ({b.confidence:.0%} CI, {b.method}, {b.n_resamples} resamples, seed {b.seed})"
        )
    else:
        lines.append(f"## OOD metrics vs `{in_split}`")
    lines += [
        "",
        "| OOD split | kind | AUROC | FPR@95TPR | AUPR-in | AUPR-out | Detection error | n OOD |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split in _splits_near_first(report):
        m = report.ood_metrics[split]
        cis = report.metric_cis.get(split, {})
        cells = [format_ci(cis.get(name), report.metric(split, name)) for name in CI_METRICS]
        # CI_METRICS order is auroc, aupr_in, aupr_out, fpr95, detection_error; the table puts FPR second.
        auroc_cell, aupr_in_cell, aupr_out_cell, fpr_cell, error_cell = cells
        lines.append(
            f"| {split} | {report.ood_kind(split)} | {auroc_cell} | {fpr_cell} | {aupr_in_cell} | "
            f"{aupr_out_cell} | {error_cell} | {m.n_ood} |"
        )

    if report.separation:
        lines += [
            "",
            "## Energy separation",
            "",
            "| OOD split | kind | histogram overlap | Wasserstein | KS statistic |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for split in _splits_near_first(report):
            s = report.separation.get(split)
            if s is not None:
                lines.append(
                    f"| {split} | {report.ood_kind(split)} | {s.histogram_overlap:.4f} | "
                    f"{s.wasserstein:.4g} | {s.ks_statistic:.4f} |"
                )

    if report.baselines is not None:
        baselines = report.baselines
        lines += [
            "",
            f"## Baselines (ranked by {METRIC_LABELS.get(baselines.ranked_by, baselines.ranked_by)}, same inputs)",
            "",
            "| OOD split | EBM rank | ranking (best first) |",
            "| --- | ---: | --- |",
        ]
        for split in _splits_near_first(report):
            if split not in baselines.ranking:
                continue
            entries = []
            for name in baselines.ranking[split]:
                value = report.ood_metrics[split].auroc if name == EBM_NAME else baselines.metrics[name][split].auroc
                label = f"**{name}**" if name == EBM_NAME else name
                entries.append(f"{label} {value:.4f}")
            lines.append(f"| {split} | {baselines.ebm_rank[split]} / {len(baselines.ranking[split])} | {', '.join(entries)} |")
        for name, reason in baselines.skipped.items():
            lines.append(f"\n- skipped `{name}`: {reason}")
    return "\n".join(lines) + "\n"


def _splits_near_first(report: EvalReport) -> list[str]:
    return report.near_splits + report.far_splits


def comparison_markdown(comparison: ReportComparison) -> str:
    """Verdict, gates and deltas as Markdown, for pull-request comments."""
    b, c = comparison.baseline, comparison.candidate
    lines = [
        f"# Report comparison: {'PASSED' if comparison.passed else 'FAILED'}",
        "",
        f"- baseline: {b.model_uri or 'unregistered model'} ({b.created_at})",
        f"- candidate: {c.model_uri or 'unregistered model'} ({c.created_at})",
        "- deltas are candidate - baseline; score = energy, higher = more OOD, OOD positive",
        "",
        "| gate | split | result | detail |",
        "| --- | --- | --- | --- |",
    ]
    for row in gate_table(comparison):
        lines.append(f"| {row['gate']} | {row['split']} | {row['result']} | {row['message']} |")
    lines += [
        "",
        f"| OOD split | kind | metric | baseline | candidate | delta | {comparison.gates.confidence:.0%} CI | paired |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in comparison_table(comparison):
        ci = "n/a" if row["ci_low"] is None else f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
        lines.append(
            f"| {row['split']} | {row['kind']} | {row['label']} | {row['baseline']:.4f} | {row['candidate']:.4f} | "
            f"{row['delta']:+.4f} | {ci} | {'yes' if row['paired'] else 'no'} |"
        )
    if comparison.notes:
        lines.append("")
        lines.extend(f"- note: {note}" for note in comparison.notes)
    return "\n".join(lines) + "\n"
