"""Rows for terminal tables (one dict per row), used by the CLI, the Markdown and HTML renderers
and the promotion audit entry: the report's summary per OOD split, a comparison's deltas and its
gate verdicts."""

from __future__ import annotations

from typing import Any

from evaluation.compare import HIGHER_IS_BETTER, GateVerdict, ReportComparison
from evaluation.report import METRIC_LABELS, EvalReport


def summary_rows(report: EvalReport) -> list[dict[str, Any]]:
    """One row per OOD split, for a CLI table."""
    return [
        {"split": split, "auroc": metrics.auroc, "fpr95": metrics.fpr95, "aupr_out": metrics.aupr_out}
        for split, metrics in report.ood_metrics.items()
    ]


def comparison_table(comparison: ReportComparison) -> list[dict[str, Any]]:
    """One row per (OOD split, metric), near OOD first: values, delta and its interval, for a
    terminal table. `better` says whether the candidate moved the good way ("=" when equal)."""
    rows = []
    candidate = comparison.candidate
    order = [s for s in comparison.splits if candidate.ood_kind(s) == "near"] + [
        s for s in comparison.splits if candidate.ood_kind(s) == "far"
    ]
    for split in order:
        for metric, d in comparison.deltas[split].items():
            if d.delta == 0:
                better = "="
            else:
                improved = d.delta > 0 if metric in HIGHER_IS_BETTER else d.delta < 0
                better = "better" if improved else "worse"
            rows.append(
                {
                    "split": split,
                    "kind": candidate.ood_kind(split),
                    "metric": metric,
                    "label": METRIC_LABELS[metric],
                    "baseline": d.baseline,
                    "candidate": d.candidate,
                    "delta": d.delta,
                    "ci_low": None if d.ci is None else d.ci.low,
                    "ci_high": None if d.ci is None else d.ci.high,
                    "paired": d.paired,
                    "better": better,
                }
            )
    return rows


def gate_table(comparison: ReportComparison) -> list[dict[str, Any]]:
    """One row per gate verdict."""
    return verdict_rows(comparison.verdicts)


def verdict_rows(verdicts: list[GateVerdict]) -> list[dict[str, Any]]:
    """One row per gate verdict (also for verdicts given without a comparison)."""
    return [
        {
            "gate": v.gate,
            "split": v.split or "-",
            "result": "PASS" if v.passed else "FAIL",
            "passed": v.passed,
            "rule": v.rule,
            "message": v.message,
        }
        for v in verdicts
    ]
