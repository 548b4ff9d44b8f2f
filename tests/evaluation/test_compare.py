"""Report comparison: deltas, paired/unpaired intervals, gate rules, YAML gates, round trip
(tables, Markdown and HTML of a comparison: tests/evaluation/render/)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from evaluation.bootstrap import paired_bootstrap_diffs
from evaluation.compare import (
    DEFAULT_GATES,
    DataChecksGate,
    FlagRateGate,
    Gates,
    MetricGate,
    RealisedFPRGate,
    ReportComparison,
    candidate_verdicts,
    compare_reports,
    unpaired_bootstrap_diffs,
)
from evaluation.report import CI_METRICS
from tests.evaluation.reports import COMPARED_OOD as OOD
from tests.evaluation.reports import FAST_GATES as FAST
from tests.evaluation.reports import make_report, synthetic_scores, worse

GATES_YAML = Path(__file__).resolve().parents[2] / "flows" / "pipeline" / "configs" / "gates.yaml"


@pytest.fixture(scope="module")
def base_scores():
    return synthetic_scores()


@pytest.fixture(scope="module")
def base_report(base_scores):
    return make_report(base_scores)


# --- gates ---------------------------------------------------------------------------------------


def test_default_gates_file_matches_the_builtin_default():
    gates = Gates.from_yaml(GATES_YAML)
    assert gates == Gates.default()
    assert gates.to_dict() == DEFAULT_GATES
    auroc = gates.metrics[0]
    assert (auroc.metric, auroc.max_change, auroc.confidence, auroc.limit_key) == ("auroc", 0.005, 0.95, "max_drop")
    fpr = gates.metrics[1]
    assert (fpr.metric, fpr.max_change, fpr.confidence, fpr.limit_key) == ("fpr95", 0.0, 0.95, "max_rise")
    assert gates.realised_fpr == RealisedFPRGate(tolerance=0.02, confidence=0.95)
    assert gates.data_checks == DataChecksGate(must_pass=True)
    assert gates.flag_rate == FlagRateGate(ood_min=0.1, in_distribution_min=0.005)


def test_gates_round_trip_and_optional_settings(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text(
        "aupr_out: {max_drop: 0.01}\n"
        "detection_error: {max_rise: 0.02, confidence: 0.9, splits: [ood_near]}\n"
        "realised_fpr: {tolerance: 0.0, confidence: 0.99}\n"
    )
    gates = Gates.from_yaml(path)
    assert gates.metrics == (
        MetricGate("aupr_out", 0.01, None, None),
        MetricGate("detection_error", 0.02, 0.9, ("ood_near",)),
    )
    assert gates.data_checks is None and gates.n_resamples == 1000
    assert Gates.from_dict(gates.to_dict()) == gates
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ValueError, match="no gates configured"):
        Gates.from_yaml(empty)


@pytest.mark.parametrize(
    "text, message",
    [
        ("auroc: {max_rise: 0.01}", "takes max_drop, not max_rise"),
        ("fpr95: {max_drop: 0.01}", "takes max_rise, not max_drop"),
        ("auroc: {confidence: 0.9}", "needs max_drop"),
        ("auroc: {max_drop: -0.1}", ">= 0"),
        ("auroc: {max_drop: lots}", "must be a number"),
        ("auroc: {max_drop: 0.1, confidence: 1.5}", "confidence"),
        ("auroc: {max_drop: 0.1, typo: 1}", "unknown key"),
        ("accuracy: {max_drop: 0.1}", "unknown key"),
        ("realised_fpr: {}", "needs tolerance"),
        ("data_checks: {must_pass: maybe}", "true or false"),
        ("bootstrap: {n_resamples: 0}", "n_resamples"),
        ("- just\n- a list", "mapping"),
        ("auroc: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_gates_are_rejected_with_the_reason(tmp_path, text, message):
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Gates.from_yaml(path)


# --- deltas and intervals ----------------------------------------------------------------------------


def test_identical_reports_have_zero_deltas_and_pass(base_report):
    comparison = compare_reports(base_report, base_report, FAST)
    assert comparison.passed
    assert comparison.splits == OOD
    for split in OOD:
        assert comparison.pairing[split].paired
        for metric in CI_METRICS:
            d = comparison.deltas[split][metric]
            assert d.delta == 0.0 and d.paired
            # Paired: every resample evaluates both on the same inputs, so every difference is 0.
            assert (d.ci.low, d.ci.high) == (0.0, 0.0)
    assert {v.gate for v in comparison.verdicts} == {"auroc", "fpr95", "realised_fpr", "data_checks", "flag_rate"}
    assert len(comparison.verdicts) == 2 + 2 + 1 + 1 + 1  # metric gates per split, then report-wide gates
    assert comparison.notes == []


def test_paired_intervals_are_the_paired_bootstrap_of_the_scores(base_scores, base_report):
    candidate = make_report(worse(base_scores, 0.9))
    comparison = compare_reports(base_report, candidate, FAST)
    assert comparison.pairing["ood_near"].paired
    expected = paired_bootstrap_diffs(
        base_scores["in_test"], base_scores["ood_near"], candidate.scores["in_test"], candidate.scores["ood_near"],
        CI_METRICS, 300, 0.95, 0,
    )
    for metric in CI_METRICS:
        d = comparison.deltas["ood_near"][metric]
        assert d.ci == expected[metric]
        assert d.delta == pytest.approx(expected[metric].estimate, abs=1e-12)
        assert d.baseline == base_report.metric("ood_near", metric)
        assert d.candidate == candidate.metric("ood_near", metric)


def test_a_clearly_worse_candidate_fails_auroc_and_fpr95_on_the_near_split_only(base_scores, base_report):
    candidate = make_report(worse(base_scores, 0.5))
    comparison = compare_reports(base_report, candidate, FAST)
    assert not comparison.passed
    failed = {(v.gate, v.split) for v in comparison.failed}
    assert failed == {("auroc", "ood_near"), ("fpr95", "ood_near")}
    verdict = next(v for v in comparison.verdicts if (v.gate, v.split) == ("auroc", "ood_near"))
    assert verdict.observed["delta"] < 0 and verdict.observed["ci_high"] < -0.005
    assert verdict.observed["paired"] is True
    assert "confidently dropped by more than 0.005" in verdict.message
    assert "upper bound of the 0.95 CI" in verdict.rule
    assert not comparison.gate_passed("auroc") and comparison.gate_passed("realised_fpr")


def test_ci_rule_versus_point_rule():
    """A small drop the data cannot confirm: the CI-based gate passes, the point-estimate gate fails."""
    scores = synthetic_scores(n_in=60, n_ood=40, near_shift=1.0)
    base = make_report(scores)
    rng = np.random.default_rng(4)  # a little noise on the OOD scores: AUROC drops by about 0.02
    candidate = make_report(dict(scores, ood_near=scores["ood_near"] + rng.normal(0, 0.3, size=40)))
    ci_gates = Gates(metrics=(MetricGate("auroc", 0.005, 0.95),), n_resamples=300)
    point_gates = Gates(metrics=(MetricGate("auroc", 0.005, None),), n_resamples=300)
    by_ci = compare_reports(base, candidate, ci_gates)
    by_point = compare_reports(base, candidate, point_gates)
    d = by_ci.deltas["ood_near"]["auroc"]
    assert d.delta < -0.005  # it did drop by more than the allowance...
    assert d.ci.high > -0.005  # ...but the interval does not confirm it
    assert by_ci.verdicts[0].passed and by_ci.verdicts[0].split == "ood_near"
    assert not by_point.verdicts[0].passed
    assert "point estimate" in by_point.verdicts[0].rule


def test_different_data_gives_unpaired_intervals_with_a_note(base_scores, base_report):
    other = synthetic_scores(seed=1)
    candidate = make_report(other, fingerprints={split: f"sha256:other-{split}" for split in other})
    comparison = compare_reports(base_report, candidate, FAST)
    assert not comparison.pairing["ood_near"].paired
    assert "fingerprints" in comparison.pairing["ood_near"].note
    assert any(note.startswith("ood_near:") and "unpaired" in note for note in comparison.notes)
    d = comparison.deltas["ood_near"]["auroc"]
    assert not d.paired and d.ci is not None
    assert d.ci.low < d.delta < d.ci.high
    # An unpaired interval of the same model on the same data is not [0, 0]: it is as wide as two
    # independent bootstraps.
    same_unpaired = compare_reports(base_report, replace(base_report, dataset_fingerprints={}), FAST)
    unpaired = same_unpaired.deltas["ood_near"]["auroc"]
    assert "no dataset fingerprint" in same_unpaired.pairing["ood_near"].note
    assert unpaired.delta == 0.0 and unpaired.ci.low < 0 < unpaired.ci.high
    assert same_unpaired.passed


def test_different_sizes_are_not_paired(base_scores, base_report):
    smaller = {split: values[:150] for split, values in base_scores.items()}
    candidate = make_report(smaller)  # same fingerprint strings, but fewer scores
    comparison = compare_reports(base_report, candidate, FAST)
    assert not comparison.pairing["ood_near"].paired
    assert "scores" in comparison.pairing["ood_near"].note


def test_unpaired_bootstrap_diffs():
    rng = np.random.default_rng(0)
    a_in, a_ood = rng.normal(size=200), rng.normal(1.0, size=150)
    b_in, b_ood = rng.normal(size=180), rng.normal(1.0, size=120)
    cis = unpaired_bootstrap_diffs(a_in, a_ood, b_in, b_ood, CI_METRICS, 400, 0.95, 0)
    assert cis == unpaired_bootstrap_diffs(a_in, a_ood, b_in, b_ood, CI_METRICS, 400, 0.95, 0)  # seeded
    for ci in cis.values():
        assert ci.n_resamples == 400 and ci.low <= ci.high
    assert cis["auroc"].low < 0 < cis["auroc"].high  # the same distributions: 0 is plausible
    from evaluation.metrics import auroc

    assert cis["auroc"].estimate == pytest.approx(auroc(b_in, b_ood) - auroc(a_in, a_ood), abs=1e-12)


def test_reports_without_scores_fall_back_to_point_estimates(base_scores, base_report):
    stripped_base = replace(base_report, scores={})
    candidate = replace(make_report(worse(base_scores, 0.5)), scores={})
    comparison = compare_reports(stripped_base, candidate, FAST)
    d = comparison.deltas["ood_near"]["auroc"]
    assert d.ci is None and not d.paired
    verdict = next(v for v in comparison.verdicts if (v.gate, v.split) == ("auroc", "ood_near"))
    assert not verdict.passed
    assert "point estimate used" in verdict.message


# --- other gates -------------------------------------------------------------------------------------


def test_realised_fpr_gate(base_scores, base_report):
    # A threshold at the in_test median flags half of the held-out in-distribution inputs.
    leaky = make_report(base_scores, threshold=float(np.median(base_scores["in_test"])))
    comparison = compare_reports(base_report, leaky, Gates(realised_fpr=RealisedFPRGate(0.02)))
    (verdict,) = comparison.verdicts
    assert not verdict.passed
    assert verdict.observed["candidate"] == 0.5 and verdict.observed["limit"] == pytest.approx(0.07)
    assert verdict.observed["n_flagged"] == 150 and verdict.observed["n"] == 300
    # Just above alpha + tolerance but within sampling error: the point rule fails, the CI rule passes.
    threshold = float(np.sort(base_scores["in_test"])[-24])  # 23 of 300 flagged = 0.0767 > 0.07
    slightly = make_report(base_scores, threshold=threshold)
    assert slightly.realised_fpr == 23 / 300
    point = compare_reports(base_report, slightly, Gates(realised_fpr=RealisedFPRGate(0.02)))
    by_ci = compare_reports(base_report, slightly, Gates(realised_fpr=RealisedFPRGate(0.02, confidence=0.95)))
    assert not point.passed and by_ci.passed
    assert by_ci.verdicts[0].observed["ci_low"] < 0.07 < by_ci.verdicts[0].observed["ci_high"]
    assert compare_reports(base_report, base_report, Gates(realised_fpr=RealisedFPRGate(0.02))).passed


def test_flag_rate_gate_refuses_a_guard_that_flags_nothing(base_scores, base_report):
    gate = Gates(flag_rate=FlagRateGate(ood_min=0.1, in_distribution_min=0.005))
    # Above every score: nothing is flagged, and realised FPR (0) alone would have passed.
    silent = make_report(base_scores, threshold=1e9)
    (verdict,) = compare_reports(base_report, silent, gate).verdicts
    assert not verdict.passed and verdict.observed["ood_flagged"] == 0 and verdict.observed["in_flagged"] == 0
    assert "flags too little" in verdict.message
    assert compare_reports(base_report, silent, Gates(realised_fpr=RealisedFPRGate(0.02))).passed
    # Hand count at the 95th percentile of in_test: the pooled OOD share flagged is counted directly.
    threshold = float(np.quantile(base_scores["in_test"], 0.95))
    usual = make_report(base_scores, threshold=threshold)
    (verdict,) = compare_reports(base_report, usual, gate).verdicts
    pooled = np.concatenate([np.asarray(base_scores[s]) for s in usual.ood_metrics])
    assert verdict.observed["ood_flagged"] == int(np.sum(pooled > threshold))
    assert verdict.observed["in_flagged"] == int(np.sum(np.asarray(base_scores["in_test"]) > threshold))
    assert verdict.passed == (verdict.observed["ood_rate"] >= 0.1)
    # Without a baseline (a first version): the same verdict from the candidate alone.
    (alone,) = candidate_verdicts(silent, gate)
    assert not alone.passed and alone.gate == "flag_rate"


def test_flag_rate_gate_fails_on_a_non_finite_threshold(base_scores, base_report):
    silent = make_report(base_scores, threshold=float("inf"))
    (verdict,) = candidate_verdicts(silent, Gates(flag_rate=FlagRateGate(ood_min=0.1)))
    assert not verdict.passed and "not finite" in verdict.message


def test_flag_rate_gate_without_ood_splits_checks_the_in_distribution_floor(base_scores):
    in_only = {"in_test": base_scores["in_test"], "calibration": base_scores.get("calibration", base_scores["in_test"])}
    gate = Gates(flag_rate=FlagRateGate(ood_min=0.1, in_distribution_min=0.005))
    usual = make_report(in_only, threshold=float(np.quantile(base_scores["in_test"], 0.95)))
    (verdict,) = candidate_verdicts(usual, gate)
    assert verdict.passed and "OOD floor is not checked" in verdict.message
    (silent,) = candidate_verdicts(make_report(in_only, threshold=1e9), gate)
    assert not silent.passed and silent.observed["in_flagged"] == 0


@pytest.mark.parametrize("bad", [{"ood_min": 1.5}, {"ood_min": -0.1}, {"in_distribution_min": 0.01}, {"ood_min": 0.1, "other": 1}])
def test_flag_rate_gate_settings_are_checked(bad):
    with pytest.raises(ValueError, match="flag_rate"):
        Gates.from_dict({"flag_rate": bad})


@pytest.mark.parametrize(
    "status, must_pass, passed", [(True, True, True), (False, True, False), (None, True, False), (False, False, True)]
)
def test_data_checks_gate(base_report, status, must_pass, passed):
    candidate = replace(base_report, data_checks_passed=status)
    comparison = compare_reports(base_report, candidate, Gates(data_checks=DataChecksGate(must_pass)))
    (verdict,) = comparison.verdicts
    assert verdict.passed is passed
    assert verdict.observed["candidate"] is status
    if status is None and must_pass:
        assert "no data-check status" in verdict.message


def test_a_split_missing_from_the_candidate_fails_its_metric_gates(base_scores, base_report):
    candidate = make_report({k: v for k, v in base_scores.items() if k != "ood_far_noise"})
    comparison = compare_reports(base_report, candidate, FAST)
    assert comparison.splits == ["ood_near"]
    missing = [v for v in comparison.failed if v.split == "ood_far_noise"]
    assert {v.gate for v in missing} == {"auroc", "fpr95"}
    assert "not in the candidate report" in missing[0].message
    assert any("baseline report only" in note for note in comparison.notes)


def test_gate_splits_restrict_the_check(base_scores, base_report):
    candidate = make_report(worse(base_scores, 0.5))
    only_far = Gates(metrics=(MetricGate("auroc", 0.005, 0.95, ("ood_far_noise",)),), n_resamples=200)
    comparison = compare_reports(base_report, candidate, only_far)
    assert [v.split for v in comparison.verdicts] == ["ood_far_noise"] and comparison.passed
    unknown = Gates(metrics=(MetricGate("auroc", 0.005, 0.95, ("ood_other",)),), n_resamples=200)
    assert not compare_reports(base_report, candidate, unknown).passed


# --- serialisation -----------------------------------------------------------------------------


def test_comparison_json_round_trip_is_exact(base_scores, base_report, tmp_path):
    comparison = compare_reports(base_report, make_report(worse(base_scores, 0.5)), FAST)
    text = comparison.to_json()
    assert json.loads(text)["passed"] is False
    restored = ReportComparison.from_json(text)
    assert restored == comparison
    assert restored.to_json() == text
    assert ReportComparison.read_json(comparison.write_json(tmp_path / "c.json")) == comparison
    tampered = json.loads(text)
    tampered["passed"] = True
    with pytest.raises(ValueError, match="disagrees"):
        ReportComparison.from_dict(tampered)


# --- holdout feedback gates (hand-made rows) ---------------------------------------------------------


def test_paired_rate_difference_known_answers():
    from evaluation.compare import paired_rate_difference

    # 10 rows; the candidate has the event on rows 0-3, the baseline on rows 0-1: two discordant rows,
    # both the candidate's. Difference 0.2; Clopper-Pearson of 2/2 at 95% is [0.025 ** (1/2), 1].
    d = paired_rate_difference([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0], 0.95)
    assert (d["n"], d["only_candidate"], d["only_baseline"]) == (10, 2, 0)
    assert (d["baseline"], d["candidate"], d["delta"]) == pytest.approx((0.2, 0.4, 0.2))
    assert d["ci_low"] == pytest.approx((2 * 0.025 ** 0.5 - 1) * 2 / 10)
    assert d["ci_high"] == pytest.approx(0.2)
    # the same events for both models: no discordant row, a zero-width interval at 0
    same = paired_rate_difference([1, 0, 1], [1, 0, 1])
    assert (same["delta"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    # swapping the models mirrors the interval
    back = paired_rate_difference([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0], 0.95)
    assert (back["delta"], back["ci_low"], back["ci_high"]) == pytest.approx((-0.2, -d["ci_high"], -d["ci_low"]))
    with pytest.raises(ValueError, match="one event per row"):
        paired_rate_difference([1, 0], [1])


def test_feedback_gate_passes_a_better_challenger_and_reports_both_rates():
    from evaluation.compare import feedback_verdicts

    feedback = [1, 1, 1, 1, 0, 0, 0, 0]
    champion = [1, 1, 1, 0, 0, 0, 0, 1]  # misses problem row 3, false alarm on fine row 7
    challenger = [1, 1, 1, 1, 0, 0, 0, 0]  # catches every problem, no false alarm
    missed, false_alarms = feedback_verdicts(champion, challenger, feedback)
    assert (missed.gate, false_alarms.gate) == ("feedback_missed_problems", "feedback_false_alarms")
    assert missed.passed and false_alarms.passed
    assert (missed.observed["baseline"], missed.observed["candidate"], missed.observed["n"]) == (0.25, 0.0, 4)
    assert (false_alarms.observed["baseline"], false_alarms.observed["candidate"]) == (0.25, 0.0)
    assert "(problems the guard accepted) 0.2500 -> 0.0000 on 4 rows (1 -> 0; delta -0.2500" in missed.message


def test_feedback_gate_fails_a_challenger_confidently_worse_beyond_the_tolerance():
    from evaluation.compare import FeedbackGate, feedback_verdicts

    # 20 problems the champion flags and the challenger accepts: missed-problem rate 0 -> 1, every row
    # discordant; the 95% lower bound is 2 * 0.025 ** (1/20) - 1 = 0.6635.
    feedback, champion, challenger = [1] * 20, [1] * 20, [0] * 20
    (missed, false_alarms) = feedback_verdicts(champion, challenger, feedback, FeedbackGate(max_rise=0.05))
    assert missed.observed["ci_low"] == pytest.approx(2 * 0.025 ** (1 / 20) - 1)
    assert not missed.passed and "confidently rose by more than 0.05" in missed.message
    assert false_alarms.passed and false_alarms.observed["n"] == 0 and "feedback = 0" in false_alarms.message
    # the stated tolerance decides: 0.7 allows a rise whose lower bound is 0.66
    (missed_loose, _) = feedback_verdicts(champion, challenger, feedback, FeedbackGate(max_rise=0.7))
    assert missed_loose.passed
    # one worse row in ten is not a demonstrated regression: lower bound (2 * 0.025 - 1) / 10 < 0
    (one_row, _) = feedback_verdicts([1] * 10, [0] + [1] * 9, [1] * 10)
    assert one_row.passed and one_row.observed["delta"] == pytest.approx(0.1)


def test_feedback_gate_false_alarms_and_bad_input():
    from evaluation.compare import feedback_skipped_verdict, feedback_verdicts

    # 30 confirmed-fine rows: the challenger flags all, the champion none -> confidently more false alarms
    (_, false_alarms) = feedback_verdicts([0] * 30, [1] * 30, [0] * 30)
    assert not false_alarms.passed and false_alarms.observed["candidate"] == 1.0
    with pytest.raises(ValueError, match="feedback must be 0/1, row 1"):
        feedback_verdicts([0, 0], [0, 0], [1, 2])
    with pytest.raises(ValueError, match="3 champion flags, 2 challenger flags"):
        feedback_verdicts([0, 0, 0], [0, 0], [1, 1])
    skipped = feedback_skipped_verdict("no holdout feedback for model m")
    assert skipped.passed and skipped.observed == {"skipped": True} and skipped.message.startswith("skipped:")


def test_feedback_gate_settings_round_trip_and_stay_optional():
    from evaluation.compare import FeedbackGate

    assert Gates.default().feedback == FeedbackGate(max_rise=0.05, confidence=0.95)
    without = {k: v for k, v in DEFAULT_GATES.items() if k != "feedback_holdout"}
    assert Gates.from_dict(without).feedback is None and "feedback_holdout" not in Gates.from_dict(without).to_dict()
    gates = Gates.from_dict({**DEFAULT_GATES, "feedback_holdout": {"max_rise": 0.1, "confidence": 0.9}})
    assert gates.feedback == FeedbackGate(max_rise=0.1, confidence=0.9)
    assert Gates.from_dict(gates.to_dict()) == gates
    with pytest.raises(ValueError, match="unknown key"):
        Gates.from_dict({**DEFAULT_GATES, "feedback_holdout": {"tolerance": 0.1}})
    with pytest.raises(ValueError, match="max_rise must be a share"):
        Gates.from_dict({**DEFAULT_GATES, "feedback_holdout": {"max_rise": 2}})
