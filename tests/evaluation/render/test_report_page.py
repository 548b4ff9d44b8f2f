"""The evaluation report page (evaluation/render/report_page.py): self-contained, escaped, every section."""

import math
import re

import pytest

from evaluation.render.report_page import render_html, write_html
from tests.evaluation import reports
from tests.evaluation.reports import schema_v1_report, simple_report


@pytest.fixture(scope="module")
def full_report():
    return reports.full_report()


def test_render_html_is_self_contained():
    report = simple_report(
        model_uri="<script>alert(1)</script>",
        config={"note": "a < b & c"},
        training_curve={"loss": [1.0, 0.5, 0.25], "val_loss": [1.1, 0.7, 0.4]},
    )
    html = render_html(report)
    # calibration curve + 2 histograms (one per OOD split) + ROC + PR + training curves
    assert html.count('src="data:image/png;base64,') == 6
    assert "<img" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", html)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "a &lt; b &amp; c" in html
    assert "higher score means more out-of-distribution" in html
    assert "0.625" in html  # near AUROC in the metrics table
    assert "Calibration curve" in html and "Precision-recall" in html


def test_render_html_of_a_full_report(full_report):
    report, _, _ = full_report
    html = render_html(report)
    # calibration curve + 2 histograms + ROC + PR + training curves
    assert html.count('src="data:image/png;base64,') == 6
    assert "<h2>Baselines</h2>" in html
    assert f"EBM rank {report.baselines.ebm_rank['ood_digits']} of 6" in html
    assert '<tr class="ebm">' in html
    for name in report.baselines.names:
        assert f"<td>{name}</td>" in html
    assert "Energy separation" in html
    assert "calibration-conditional threshold" in html
    assert 'class="pass">passed' in html
    ci = report.metric_cis["ood_digits"]["auroc"]
    assert f"{ci.estimate:.4f} [{ci.low:.4f}, {ci.high:.4f}]" in html


def test_render_html_without_training_curve_and_with_infinite_threshold():
    html = render_html(simple_report(threshold=math.inf))
    assert html.count('src="data:image/png;base64,') == 5
    assert "threshold is infinite" in html
    assert "calibration-conditional threshold is infinite" in html


def test_render_html_of_a_schema_version_1_report():
    assert "<h2>OOD metrics" in render_html(schema_v1_report())


def test_write_html(tmp_path):
    path = write_html(simple_report(), tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "data:image/png;base64," in text
