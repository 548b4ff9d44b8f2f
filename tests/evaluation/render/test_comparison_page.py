"""The comparison page (evaluation/render/comparison_page.py): self-contained, side by side, escaped."""

import re
from dataclasses import replace

from evaluation.compare import compare_reports
from evaluation.render.comparison_page import render_comparison_html, write_comparison_html
from tests.evaluation.reports import FAST_GATES as FAST
from tests.evaluation.reports import make_report, synthetic_scores, worse


def test_render_comparison_html_is_self_contained_and_side_by_side(tmp_path):
    base_scores = synthetic_scores()
    base_report = make_report(base_scores)
    candidate = replace(make_report(worse(base_scores, 0.5)), model_uri="models:/<b>guard</b>/2")
    comparison = compare_reports(base_report, candidate, FAST)
    html = render_comparison_html(comparison)
    assert html.startswith("<!DOCTYPE html>")
    # 2 histograms (baseline, candidate) per split + ROC + PR + calibration curves
    assert html.count('src="data:image/png;base64,') == 2 * 2 + 2 + 1
    assert 'class="side"' in html
    assert 'class="fail">FAILED' in html
    assert "failrow" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", html)
    assert "<script" not in html
    assert "&lt;b&gt;guard&lt;/b&gt;" in html and "<b>guard</b>" not in html
    assert "confidently dropped by more than 0.005" in html
    path = write_comparison_html(comparison, tmp_path / "comparison.html")
    assert path.read_text(encoding="utf-8") == html
