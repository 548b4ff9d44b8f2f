"""EvalReport: built values, every section, exact JSON round trip (rendering: tests/evaluation/render/)."""

import json
import math

import numpy as np
import pytest

from evaluation.baselines import BaselineResults, run_baselines
from evaluation.bootstrap import ConfidenceInterval, bootstrap_cis
from evaluation.calibration_stats import (
    calibration_conditional_threshold,
    calibration_curve,
    realised_fpr_with_ci,
)
from evaluation.extra_metrics import detection_error
from evaluation.metrics import EnergyStats, OODMetrics
from evaluation.report import (
    CI_METRICS,
    DEFAULT_CALIBRATION_ALPHAS,
    EBM_NAME,
    SCHEMA_VERSION,
    EvalReport,
    build_report,
    default_ood_kind,
)
from evaluation.separation import separation_by_split
from tests.evaluation import reports
from tests.evaluation.reports import IN_TEST, NEAR, V2_FIELDS, gaussian_setting, simple_report


@pytest.fixture(scope="module")
def full_report():
    return reports.full_report()


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
    assert report.schema_version == SCHEMA_VERSION == 2
    assert {"python", "numpy", "scikit-learn", "torch", "platform"} <= set(report.environment)
    assert report.timings["evaluate"] == 0.125
    assert report.timings["build_report_seconds"] >= 0.0
    assert report.model_uri == "models:/guard@challenger"
    assert report.dataset_fingerprints == {"in_test": "abc123"}


def test_metric_intervals_per_split_match_the_bootstrap_and_the_point_metrics(full_report):
    report, _, scores = full_report
    assert report.bootstrap.n_resamples == 300 and report.bootstrap.seed == 3 and report.bootstrap.confidence == 0.95
    for split in report.ood_splits:
        cis = report.metric_cis[split]
        assert list(cis) == list(CI_METRICS)
        # Exactly what bootstrap_cis gives with the same seed and settings.
        assert cis == bootstrap_cis(scores["in_test"], scores[split], CI_METRICS, 300, 0.95, 3)
        m = report.ood_metrics[split]
        for name in ("auroc", "aupr_in", "aupr_out", "fpr95"):
            assert cis[name].estimate == pytest.approx(getattr(m, name), abs=1e-12)
            assert cis[name].low <= cis[name].high
        assert cis["detection_error"].estimate == pytest.approx(
            detection_error(scores["in_test"], scores[split]), abs=1e-12
        )
        assert report.metric(split, "detection_error") == cis["detection_error"].estimate
    # The near split is harder: its AUROC interval lies below the far split's.
    assert report.metric_cis["ood_digits"]["auroc"].high < report.metric_cis["ood_uniform_noise"]["auroc"].low


def test_bootstrap_is_seeded_and_configurable():
    a = simple_report(n_bootstrap=50, seed=1)
    b = simple_report(n_bootstrap=50, seed=1)
    c = simple_report(n_bootstrap=50, seed=2)
    assert a.metric_cis == b.metric_cis
    assert a.metric_cis["near"]["auroc"].n_resamples == 50
    assert a.metric_cis != c.metric_cis
    default = build_report({"in": IN_TEST, "ood": NEAR}, "in", ["ood"], threshold=2.5, alpha=0.05)
    assert default.bootstrap.n_resamples == 1000
    assert default.metric_cis["ood"]["auroc"].n_resamples == 1000


def test_calibration_section(full_report):
    report, _, scores = full_report
    calibration = report.calibration
    assert calibration.alpha == report.alpha and calibration.threshold == report.threshold
    assert calibration.evaluated_split == "in_test" and calibration.calibration_split == "calibration"
    assert calibration.n_calibration == scores["calibration"].size
    assert calibration.realised == realised_fpr_with_ci(scores["in_test"], report.threshold)
    assert calibration.realised.fpr == report.realised_fpr
    assert calibration.realised.ci_low <= calibration.realised.fpr <= calibration.realised.ci_high
    assert calibration.delta == 0.1
    conditional = calibration_conditional_threshold(scores["calibration"], 0.05, 0.1)
    assert calibration.conditional_threshold == conditional
    assert calibration.conditional_realised == realised_fpr_with_ci(scores["in_test"], conditional)
    alphas = [point.alpha for point in calibration.curve]
    assert alphas == sorted(set(DEFAULT_CALIBRATION_ALPHAS) | {0.05})
    assert calibration.curve == calibration_curve(scores["calibration"], scores["in_test"], alphas)


def test_calibration_section_without_a_calibration_split():
    report = build_report(
        {"in": IN_TEST, "ood": NEAR}, "in", ["ood"], threshold=2.5, alpha=0.05, n_bootstrap=10,
    )
    assert report.calibration.realised.fpr == 0.25
    assert report.calibration.conditional_threshold is None
    assert report.calibration.conditional_realised is None
    assert report.calibration.curve == []
    assert EvalReport.from_json(report.to_json()) == report


def test_separation_and_ood_kinds(full_report):
    report, _, scores = full_report
    assert report.separation == separation_by_split(scores, "in_test", ["ood_digits", "ood_uniform_noise"])
    assert report.ood_kinds == {"ood_digits": "near", "ood_uniform_noise": "far"}
    assert report.near_splits == ["ood_digits"] and report.far_splits == ["ood_uniform_noise"]
    assert [default_ood_kind(s) for s in ("ood_inverted", "far_away", "ood_noise", "ood_digits", "oos")] == [
        "far", "far", "far", "near", "near",
    ]
    configured = simple_report(ood_kinds={"far": "near"})
    assert configured.ood_kinds == {"near": "near", "far": "near"}
    with pytest.raises(ValueError, match="near' or 'far"):
        simple_report(ood_kinds={"near": "medium"})
    with pytest.raises(ValueError, match="not OOD splits"):
        simple_report(ood_kinds={"in_test": "near"})


def test_baseline_section(full_report):
    report, baselines, scores = full_report
    section = report.baselines
    names = ["max_softmax", "logit_energy", "mahalanobis", "cosine_knn", "gaussian_density"]
    assert section.names == names
    assert section.scores == baselines.scores
    assert section.skipped == {}
    for split in report.ood_splits:
        assert sorted(section.ranking[split]) == sorted([EBM_NAME, *names])
        aurocs = {EBM_NAME: report.ood_metrics[split].auroc}
        aurocs.update({name: section.metrics[name][split].auroc for name in names})
        assert [aurocs[n] for n in section.ranking[split]] == sorted(aurocs.values(), reverse=True)
        assert section.ebm_rank[split] == 1 + sum(v > aurocs[EBM_NAME] for v in aurocs.values())
        for name in names:
            in_scores = baselines.scores[name]["in_test"]
            assert section.cis[name][split] == bootstrap_cis(in_scores, baselines.scores[name][split], CI_METRICS, 300, 0.95, 3)
    # |x|^2 is (up to constants) the Gaussian density baseline's score here: they tie in AUROC.
    assert section.metrics["gaussian_density"]["ood_digits"].auroc == pytest.approx(
        report.ood_metrics["ood_digits"].auroc, abs=0.02
    )


def test_baselines_must_be_scored_on_the_same_inputs():
    x_train, y_train, features, scores = gaussian_setting(n=50)
    baselines = run_baselines(x_train, y_train, features, "in_test", ["ood_digits"])
    shorter = dict(scores, ood_digits=scores["ood_digits"][:-1])
    with pytest.raises(ValueError, match="same inputs"):
        build_report(shorter, "in_test", ["ood_digits"], threshold=5.0, alpha=0.05, baselines=baselines, n_bootstrap=10)
    renamed = BaselineResults(
        metrics={EBM_NAME: baselines.metrics["mahalanobis"]},
        scores={EBM_NAME: baselines.scores["mahalanobis"]},
        seconds={}, skipped={},
    )
    with pytest.raises(ValueError, match="may not be called"):
        build_report(scores, "in_test", ["ood_digits"], threshold=5.0, alpha=0.05, baselines=renamed, n_bootstrap=10)


def test_baselines_without_labels_are_reported_as_skipped():
    x_train, _, features, scores = gaussian_setting(n=50)
    baselines = run_baselines(x_train, None, features, "in_test", ["ood_digits"])
    report = build_report(scores, "in_test", ["ood_digits"], threshold=5.0, alpha=0.05, baselines=baselines, n_bootstrap=10)
    assert set(report.baselines.skipped) == {"max_softmax", "logit_energy"}
    assert len(report.baselines.ranking["ood_digits"]) == 4


def test_json_round_trip_is_exact():
    rng = np.random.default_rng(0)
    report = build_report(
        {"in_test": rng.normal(size=50), "ood": rng.normal(2.0, size=30)},
        in_distribution_split="in_test",
        ood_splits=["ood"],
        threshold=0.1 + 0.2,  # 0.30000000000000004 must survive as is
        alpha=0.05,
        training_curve={"loss": [1 / 3, 2 / 3]},
        n_bootstrap=100,
    )
    restored = EvalReport.from_json(report.to_json())
    assert restored == report
    assert restored.scores["ood"] == report.scores["ood"]
    assert isinstance(restored.energy_stats["ood"], EnergyStats)
    assert isinstance(restored.ood_metrics["ood"], OODMetrics)
    assert isinstance(restored.metric_cis["ood"]["auroc"], ConfidenceInterval)


def test_json_round_trip_of_a_full_report_is_exact(full_report, tmp_path):
    report, _, _ = full_report
    text = report.to_json()
    assert set(json.loads(text)) >= V2_FIELDS
    restored = EvalReport.from_json(text)
    assert restored == report
    assert restored.baselines == report.baselines and restored.calibration == report.calibration
    assert restored.data_checks_passed is True
    assert restored.environment["device"] == "cpu"
    assert EvalReport.read_json(report.write_json(tmp_path / "r.json")) == report
    assert restored.to_json() == text


def test_json_round_trip_with_infinite_thresholds_is_strict_json():
    # 3 calibration scores: no finite conformal or calibration-conditional threshold at alpha 0.05.
    report = simple_report(threshold=math.inf)
    text = report.to_json()
    assert "Infinity" not in text and "NaN" not in text  # strict JSON: any reader accepts it
    data = json.loads(text)
    assert data["threshold"] == "inf"
    assert data["calibration"]["conditional_threshold"] == "inf"
    restored = EvalReport.from_json(text)
    assert restored == report
    assert restored.threshold == math.inf
    assert restored.calibration.conditional_threshold == math.inf
    assert restored.realised_fpr == 0.0


def test_write_and_read_json(tmp_path):
    report = simple_report()
    path = report.write_json(tmp_path / "report.json")
    assert EvalReport.read_json(path) == report


def test_from_dict_rejects_other_schema_versions_and_missing_fields():
    data = simple_report().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="schema_version"):
        EvalReport.from_dict(data)
    data = simple_report().to_dict()
    del data["metric_cis"]
    with pytest.raises(ValueError, match="missing field.*metric_cis"):
        EvalReport.from_dict(data)
    data = simple_report().to_dict()
    data["surprise"] = 1
    with pytest.raises(ValueError, match="unknown report field"):
        EvalReport.from_dict(data)


def test_schema_version_1_reports_are_still_read():
    data = simple_report().to_dict()
    for name in V2_FIELDS:
        del data[name]
    data["schema_version"] = 1
    old = EvalReport.from_dict(data)
    assert old.schema_version == 1
    assert old.metric_cis == {} and old.calibration is None and old.baselines is None
    assert old.data_checks_passed is None
    assert old.ood_kind("far") == "far" and old.ood_kind("near") == "near"
    assert old.metric("near", "auroc") == 5 / 8
    assert old.metric("near", "detection_error") == detection_error(IN_TEST, NEAR)
    assert EvalReport.from_json(old.to_json()) == old


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
        (dict(n_bootstrap=0), "n_resamples"),
        (dict(confidence=1.0), "confidence"),
        (dict(delta=0.0), "delta"),
    ],
)
def test_build_report_rejects_bad_arguments(kwargs, message):
    arguments = dict(
        split_scores={"in_test": IN_TEST, "near": NEAR},
        in_distribution_split="in_test",
        ood_splits=["near"],
        threshold=2.5,
        alpha=0.05,
        n_bootstrap=10,
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
