"""`ebmops compare`: exit 0 when every gate passes, 1 when one fails, 2 for unusable input.

The command is registered on a scratch typer app here (flows/cli/app.py registers it on the real one),
and invoked through typer's CliRunner on reports built by `build_report` from synthetic scores.
"""

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from evaluation.compare import ReportComparison
from evaluation.report import build_report
from flows.cli.compare import DEFAULT_GATES_PATH, compare_command


def scratch_app() -> typer.Typer:
    app = typer.Typer()
    app.command("compare")(compare_command)

    @app.command("noop")
    def noop():  # a second command, so `compare` is a subcommand as in the real app
        pass

    return app


def synthetic_report(near_separation: float = 1.5, seed: int = 0):
    """A guard's report on fixed synthetic data; `near_separation` scales how far the near OOD
    energies sit above the in-distribution ones (smaller = a worse model on the same inputs)."""
    rng = np.random.default_rng(seed)
    calibration, in_test = rng.normal(size=400), rng.normal(size=400)
    near, far = rng.normal(1.5, 1.0, size=300), rng.normal(6.0, 1.0, size=300)
    near = in_test.mean() + (near_separation / 1.5) * (near - in_test.mean())
    scores = {"calibration": calibration, "in_test": in_test, "ood_near": near, "ood_noise": far}
    return build_report(
        scores, "in_test", ["ood_near", "ood_noise"],
        threshold=float(np.quantile(calibration, 0.95)), alpha=0.05, calibration_split="calibration",
        dataset_fingerprints={split: f"sha256:{split}" for split in scores},
        data_checks_passed=True, n_bootstrap=200, model_uri=f"models:/guard/{near_separation}",
    )


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    baseline = synthetic_report().write_json(folder / "baseline.json")
    equal = synthetic_report().write_json(folder / "equal.json")
    worse = synthetic_report(near_separation=0.5).write_json(folder / "worse.json")
    return baseline, equal, worse


class Result:
    """CliRunner's result with the output's whitespace normalised (rich wraps long lines)."""

    def __init__(self, result):
        self.exit_code = result.exit_code
        self.output = " ".join(result.output.split())


def invoke(*args) -> Result:
    return Result(CliRunner().invoke(scratch_app(), ["compare", *map(str, args)]))


def test_equal_candidate_exits_0(reports, tmp_path):
    baseline, equal, _ = reports
    html = tmp_path / "comparison.html"
    result = invoke(baseline, equal, "--html", html)
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "FAIL" not in result.output
    assert "Metric deltas" in result.output and "Gates" in result.output
    text = html.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("data:image/png;base64,") >= 5


def test_worse_candidate_exits_1_and_names_the_failed_gates(reports, tmp_path):
    baseline, _, worse = reports
    out = tmp_path / "comparison.json"
    result = invoke(baseline, worse, "--json", out)
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "auroc" in result.output and "fpr95" in result.output
    comparison = ReportComparison.read_json(out)
    assert not comparison.passed
    assert {(v.gate, v.split) for v in comparison.failed} == {("auroc", "ood_near"), ("fpr95", "ood_near")}


def test_default_gates_are_the_packaged_file(reports):
    baseline, equal, _ = reports
    assert DEFAULT_GATES_PATH.is_file()
    result = invoke(baseline, equal)
    assert result.exit_code == 0, result.output
    assert "gates.yaml" in result.output


def test_lenient_gates_let_the_worse_candidate_pass(reports, tmp_path):
    baseline, _, worse = reports
    gates = tmp_path / "lenient.yaml"
    gates.write_text("auroc: {max_drop: 0.5, confidence: 0.95}\nrealised_fpr: {tolerance: 0.02}\n")
    result = invoke(baseline, worse, "--gates", gates)
    assert result.exit_code == 0, result.output


def test_missing_report_is_a_clear_error(reports, tmp_path):
    baseline, _, _ = reports
    result = invoke(baseline, tmp_path / "nope.json")
    assert result.exit_code == 2
    assert "candidate report" in result.output and "does not exist" in result.output


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "not valid JSON"), (json.dumps({"schema_version": 2}), "not a valid evaluation report")],
)
def test_invalid_report_is_a_clear_error(reports, tmp_path, content, message):
    baseline, _, _ = reports
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = invoke(bad, baseline)
    assert result.exit_code == 2
    assert "baseline report" in result.output and message in result.output


def test_invalid_gates_file_is_a_clear_error(reports, tmp_path):
    baseline, equal, _ = reports
    gates = tmp_path / "gates.yaml"
    gates.write_text("auroc: {max_rise: 0.1}\n")
    result = invoke(baseline, equal, "--gates", gates)
    assert result.exit_code == 2
    assert "invalid gates file" in result.output and "max_drop" in result.output
    result = invoke(baseline, equal, "--gates", tmp_path / "missing.yaml")
    assert result.exit_code == 2 and "does not exist" in result.output
