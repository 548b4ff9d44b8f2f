"""EvalReport: built values, exact JSON round trip, Markdown summary, self-contained HTML."""

import json
import math
import re

import numpy as np
import pytest

from evaluation.html_report import render_html, write_html
from evaluation.metrics import EnergyStats, OODMetrics
from evaluation.report import SCHEMA_VERSION, EvalReport, build_report, summary_rows, to_markdown

IN_TEST = np.array([0.0, 1.0, 2.0, 3.0])
NEAR = np.array([1.5, 2.5])
FAR = np.array([10.0, 11.0])


def simple_report(threshold=2.5, **kwargs):
    return build_report(
        {"in_test": IN_TEST, "in_cal": np.array([0.5, 1.5, 2.5]), "near": NEAR, "far": FAR},
        in_distribution_split="in_test",
        ood_splits=["near", "far"],
        threshold=threshold,
        alpha=0.05,
        calibration_split="in_cal",
        **kwargs,
    )


def test_build_report_metric_values():
    report = simple_report(
        model_uri="models:/guard@challenger",
        config={"hidden": (64, 64), "lr": 1e-3},
        training_curve={"loss": np.array([1.0, 0.5, 0.25])},
        dataset_fingerprints={"in_test": "abc123"},
        timings={"evaluate": 0.125},
    )
    # near: 1.5 beats {0, 1} -> 2 pairs; 2.5 beats {0, 1, 2} -> 3 pairs; 5 of 8.
    assert report.ood_metrics["near"].auroc == 5 / 8
    assert report.ood_metrics["far"].auroc == 1.0
    # n_in = 4: only t = 3 (the largest) accepts >= 95%; all near scores are <= 3, no far score is.
    assert report.ood_metrics["near"].fpr95 == 1.0
    assert report.ood_metrics["far"].fpr95 == 0.0
    assert report.ood_metrics["far"].aupr_out == 1.0
    assert (report.ood_metrics["near"].n_in, report.ood_metrics["near"].n_ood) == (4, 2)
    # threshold 2.5: only 3.0 of the in_test scores lies strictly above it.
    assert report.realised_fpr == 0.25
    assert set(report.energy_stats) == {"in_test", "in_cal", "near", "far"}
    assert report.energy_stats["far"].mean == 10.5
    assert report.scores["near"] == [1.5, 2.5]
    assert report.training_curve == {"loss": [1.0, 0.5, 0.25]}
    assert report.config == {"hidden": [64, 64], "lr": 1e-3}  # normalised through JSON
    assert report.conventions["higher_is_more_ood"] is True
    assert report.conventions["positive_class"] == "ood"
    assert report.schema_version == SCHEMA_VERSION
    assert {"python", "numpy", "scikit-learn", "torch", "platform"} <= set(report.environment)


def test_json_round_trip_is_exact():
    rng = np.random.default_rng(0)
    report = build_report(
        {"in_test": rng.normal(size=50), "ood": rng.normal(2.0, size=30)},
        in_distribution_split="in_test",
        ood_splits=["ood"],
        threshold=0.1 + 0.2,  # 0.30000000000000004 must survive as is
        alpha=0.05,
        training_curve={"loss": [1 / 3, 2 / 3]},
    )
    restored = EvalReport.from_json(report.to_json())
    assert restored == report
    assert restored.scores["ood"] == report.scores["ood"]
    assert isinstance(restored.energy_stats["ood"], EnergyStats)
    assert isinstance(restored.ood_metrics["ood"], OODMetrics)


def test_json_round_trip_with_infinite_threshold_is_strict_json():
    report = simple_report(threshold=math.inf)
    text = report.to_json()
    assert "Infinity" not in text  # strict JSON: any reader accepts it
    assert json.loads(text)["threshold"] == "inf"
    restored = EvalReport.from_json(text)
    assert restored == report
    assert restored.threshold == math.inf
    assert restored.realised_fpr == 0.0


def test_write_and_read_json(tmp_path):
    report = simple_report()
    path = report.write_json(tmp_path / "report.json")
    assert EvalReport.read_json(path) == report


def test_from_dict_rejects_other_schema_versions():
    data = simple_report().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="schema_version"):
        EvalReport.from_dict(data)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_distribution_split="missing"), "in_distribution_split"),
        (dict(ood_splits=["missing"]), "missing"),
        (dict(ood_splits=["in_test"]), "both"),
        (dict(calibration_split="in_test"), "held-out"),
        (dict(alpha=0.0), "alpha"),
        (dict(threshold=math.nan), "threshold"),
        (dict(config={"bad": math.inf}), "config"),
    ],
)
def test_build_report_rejects_bad_arguments(kwargs, message):
    arguments = dict(
        split_scores={"in_test": IN_TEST, "near": NEAR},
        in_distribution_split="in_test",
        ood_splits=["near"],
        threshold=2.5,
        alpha=0.05,
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_report(**arguments)


def test_build_report_names_the_bad_split():
    with pytest.raises(ValueError, match="near"):
        build_report(
            {"in_test": IN_TEST, "near": np.array([1.0, np.nan])},
            in_distribution_split="in_test",
            ood_splits=["near"],
            threshold=2.5,
            alpha=0.05,
        )


def test_summary_rows_and_markdown():
    report = simple_report()
    assert summary_rows(report) == [
        {"split": "near", "auroc": 5 / 8, "fpr95": 1.0, "aupr_out": report.ood_metrics["near"].aupr_out},
        {"split": "far", "auroc": 1.0, "fpr95": 0.0, "aupr_out": 1.0},
    ]
    markdown = to_markdown(report)
    assert "| near | 0.6250 | 1.0000 |" in markdown
    assert "| far | 1.0000 | 0.0000 | 1.0000 |" in markdown
    assert "higher = more OOD" in markdown


def test_render_html_is_self_contained():
    report = simple_report(
        model_uri="<script>alert(1)</script>",
        config={"note": "a < b & c"},
        training_curve={"loss": [1.0, 0.5, 0.25], "val_loss": [1.1, 0.7, 0.4]},
    )
    html = render_html(report)
    # 2 histograms (one per OOD split) + ROC + training curve
    assert html.count('src="data:image/png;base64,') == 4
    assert "<img" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", html)
    assert "http://" not in html and "https://" not in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "a &lt; b &amp; c" in html
    assert "higher score means more out-of-distribution" in html
    assert "0.625" in html  # near AUROC in the metrics table


def test_render_html_without_training_curve_and_with_infinite_threshold():
    html = render_html(simple_report(threshold=math.inf))
    assert html.count('src="data:image/png;base64,') == 3
    assert "threshold is infinite" in html


def test_write_html(tmp_path):
    path = write_html(simple_report(), tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "data:image/png;base64," in text
