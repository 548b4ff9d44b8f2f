"""Rows for terminal tables (evaluation/render/tables.py)."""

from evaluation.compare import compare_reports
from evaluation.render.tables import comparison_table, gate_table, summary_rows
from evaluation.report import CI_METRICS
from tests.evaluation.reports import FAST_GATES, make_report, simple_report, synthetic_scores, worse


def test_summary_rows():
    report = simple_report(data_checks_passed=False)
    assert summary_rows(report) == [
        {"split": "near", "auroc": 5 / 8, "fpr95": 1.0, "aupr_out": report.ood_metrics["near"].aupr_out},
        {"split": "far", "auroc": 1.0, "fpr95": 0.0, "aupr_out": 1.0},
    ]


def test_comparison_and_gate_tables():
    base_scores = synthetic_scores()
    comparison = compare_reports(make_report(base_scores), make_report(worse(base_scores, 0.5)), FAST_GATES)
    rows = comparison_table(comparison)
    assert len(rows) == 2 * len(CI_METRICS)
    assert [r["split"] for r in rows[:5]] == ["ood_near"] * 5  # near first
    near_auroc = rows[0]
    assert (near_auroc["metric"], near_auroc["kind"], near_auroc["better"]) == ("auroc", "near", "worse")
    assert near_auroc["ci_high"] < 0
    fpr = next(r for r in rows if (r["split"], r["metric"]) == ("ood_near", "fpr95"))
    assert fpr["better"] == "worse" and fpr["delta"] > 0
    far = next(r for r in rows if (r["split"], r["metric"]) == ("ood_far_noise", "auroc"))
    assert far["better"] == "=" and far["delta"] == 0.0
    gates = gate_table(comparison)
    assert [g["result"] for g in gates if g["split"] == "ood_near"] == ["FAIL", "FAIL"]
