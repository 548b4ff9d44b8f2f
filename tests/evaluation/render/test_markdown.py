"""Markdown summaries (evaluation/render/markdown.py) of a report and of a comparison."""

import pytest

from evaluation.baselines import run_baselines
from evaluation.compare import compare_reports
from evaluation.render.markdown import comparison_markdown, to_markdown
from evaluation.report import build_report
from tests.evaluation import reports
from tests.evaluation.reports import (
    FAST_GATES,
    gaussian_setting,
    make_report,
    schema_v1_report,
    simple_report,
    synthetic_scores,
    worse,
)


@pytest.fixture(scope="module")
def full_report():
    return reports.full_report()


def test_report_markdown():
    report = simple_report(data_checks_passed=False)
    markdown = to_markdown(report)
    near_ci = report.metric_cis["near"]["auroc"]
    assert f"| near | near | 0.6250 [{near_ci.low:.4f}, {near_ci.high:.4f}] | 1.0000 [" in markdown
    assert "| far | far | 1.0000 [1.0000, 1.0000] | 0.0000 [0.0000, 0.0000] |" in markdown
    assert "higher = more OOD" in markdown
    assert "data checks: FAILED" in markdown
    assert "Clopper-Pearson" in markdown
    assert "## Energy separation" in markdown


def test_markdown_lists_near_before_far_and_the_baseline_ranking(full_report):
    report, _, _ = full_report
    markdown = to_markdown(report)
    assert markdown.index("| ood_digits | near |") < markdown.index("| ood_uniform_noise | far |")
    assert "## Baselines" in markdown
    rank = report.baselines.ebm_rank["ood_digits"]
    assert f"| ood_digits | {rank} / 6 |" in markdown
    assert "**ebm**" in markdown
    assert "calibration-conditional threshold" in markdown
    assert "data checks: passed" in markdown


def test_markdown_names_skipped_baselines():
    x_train, _, features, scores = gaussian_setting(n=50)
    baselines = run_baselines(x_train, None, features, "in_test", ["ood_digits"])
    report = build_report(scores, "in_test", ["ood_digits"], threshold=5.0, alpha=0.05, baselines=baselines, n_bootstrap=10)
    assert "skipped `max_softmax`" in to_markdown(report)


def test_markdown_of_a_schema_version_1_report():
    assert "| near | near | 0.6250 |" in to_markdown(schema_v1_report())


def test_comparison_markdown():
    base_scores = synthetic_scores()
    comparison = compare_reports(make_report(base_scores), make_report(worse(base_scores, 0.5)), FAST_GATES)
    markdown = comparison_markdown(comparison)
    assert markdown.startswith("# Report comparison: FAILED")
    assert "| auroc | ood_near | FAIL |" in markdown
    assert "| ood_near | near | AUROC |" in markdown
