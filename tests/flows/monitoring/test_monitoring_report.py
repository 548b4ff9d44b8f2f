"""The monitoring report's data: from stored monitor states, the audit log and the pipeline's run
folders (known answers on a synthetic home), the `ebmops monitor-report` command, and end to end
after a real monitoring pass."""

import json

import pandas as pd
import pytest
import typer

from evaluation.files import write_json_atomic
from evaluation.render.monitoring_page import MonitoringReport
from flows.cli.monitor_report import monitor_report_command
from flows.monitoring.monitor import MonitorConfig, monitor, state_path  # imports prefect (its log handlers) before capsys
from flows.monitoring.report import NoMonitoringState, build_report, write_report
from flows.ops import audit


def counts(accepted_n, accepted_problems, flagged_n, flagged_problems, n_rows):
    return {
        "n_rows": n_rows, "n_with_feedback": accepted_n + flagged_n,
        "accepted_n": accepted_n, "accepted_problems": accepted_problems,
        "flagged_n": flagged_n, "flagged_problems": flagged_problems,
    }  # fmt: skip


def synthetic_state(name, version, processed, overall):
    return {
        "format": 2, "model_name": name, "model_version": version, "state_id": "s", "processed": processed,
        "quarantined": [{"name": "bad.csv", "sha256": "x", "reason": "r", "moved_to": None, "at": 0}],
        "skipped": [], "pending": [], "window_energies": [], "feedback_counts": overall,
        "sequential": {}, "mlflow_run_id": None,
    }  # fmt: skip


def write_home(home):
    """Two versions of guard "g" monitored, one of "other"; an audit log and two training runs."""
    t0 = 1767225600.0  # 2026-01-01T00:00:00Z
    v1 = [
        {"name": "a.parquet", "sha256": "1", "batch": 0, "n": 20, "n_flagged": 1, "alarm": False, "processed_at": t0,
         "feedback_counts": counts(10, 1, 1, 1, 20)},
        {"name": "b.parquet", "sha256": "2", "batch": 1, "n": 20, "n_flagged": 8, "alarm": True, "processed_at": t0 + 3600,
         "feedback_counts": counts(12, 0, 8, 6, 20)},
    ]  # fmt: skip
    # an older state: no per-batch feedback counts
    v2 = [{"name": "c.csv", "sha256": "3", "batch": 0, "n": 10, "n_flagged": 0, "alarm": False, "processed_at": t0 + 7200}]
    folder = home / "monitoring"
    write_json_atomic(folder / "g-v1.json", synthetic_state("g", "1", v1, counts(22, 1, 9, 7, 40)))
    write_json_atomic(folder / "g-v2.json", synthetic_state("g", "2", v2, {}))
    write_json_atomic(folder / "other-v1.json", synthetic_state("other", "1", v2, {}))
    (folder / "g-v1.rows").mkdir()
    write_json_atomic(folder / "g-v1.rows" / "000000.json", {"rows": []})
    log = home / "audit" / audit.AUDIT_LOG_NAME
    base = {"model_name": "g", "actor": "alice", "reason": "nightly"}
    for entry in (
        {**base, "audit_id": "a1", "time": "2025-12-31T23:00:00+00:00", "action": "bootstrap", "champion_before": None, "champion_after": "1"},
        {**base, "audit_id": "a2", "time": "2026-01-01T01:30:00+00:00", "action": "promote", "champion_before": "1", "champion_after": "2", "phase": "intent"},
        {**base, "audit_id": "a2", "time": "2026-01-01T01:30:00+00:00", "action": "promote", "champion_before": "1", "champion_after": "2", "phase": "done"},
        {**base, "audit_id": "a3", "time": "2026-01-01T01:40:00+00:00", "action": "promote", "champion_before": "2", "champion_after": "2", "decision": "refused"},
        {**base, "audit_id": "a4", "time": "2026-01-01T03:00:00+00:00", "action": "rollback", "champion_before": "2", "champion_after": "1"},
        {**base, "model_name": "other", "audit_id": "a5", "time": "2026-01-01T03:00:00+00:00", "action": "rollback", "champion_before": "3", "champion_after": "1"},
    ):  # fmt: skip
        audit.append_entry(entry, log)
    runs = home / "runs"
    write_json_atomic(runs / "r1" / "run_complete.json", {"time": "2026-01-01T01:00:00+00:00", "model_uri": "models:/g/2", "version": "2"})
    write_json_atomic(runs / "r2" / "run_failed.json", {"time": "2026-01-01T02:00:00+00:00", "error": "ValueError: bad\ndata"})
    write_json_atomic(runs / "r3" / "run_complete.json", {"time": "2026-01-01T02:30:00+00:00", "model_uri": "models:/other/4", "version": "4"})
    (runs / "r4").mkdir()  # started, never finished: not a training event


def test_report_from_stored_states_known_answers(ebmops_home):
    write_home(ebmops_home)
    report = build_report("g", alphas={("g", "1"): 0.05}, alpha_of=lambda name, version: 0.1)
    assert [(v.model_name, v.version, v.alpha) for v in report.versions] == [("g", "1", 0.05), ("g", "2", 0.1)]
    v1 = report.versions[0]
    assert [b.time for b in v1.batches] == ["2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+00:00"]
    assert [b.flag_rate().rate for b in v1.batches] == [pytest.approx(1 / 20), pytest.approx(8 / 20)]
    assert [b.accepted_problems().rate for b in v1.batches] == [pytest.approx(0.1), 0.0]
    assert [b.flagged_problems().rate for b in v1.batches] == [1.0, pytest.approx(0.75)]
    assert v1.alarms == [1] and v1.n_quarantined == 1
    assert v1.overall_feedback == counts(22, 1, 9, 7, 40)
    v2 = report.versions[1]
    assert v2.batches[0].feedback is None and v2.overall_feedback is None
    assert any("g v2" in note and "no per-batch feedback" in note for note in report.notes)
    # promotions and rollbacks that moved the alias (intents and refusals left out), and training runs
    moves = [(e.kind, e.from_version, e.to_version) for e in report.events if e.kind in ("bootstrap", "promote", "rollback")]
    assert moves == [("bootstrap", None, "1"), ("promote", "1", "2"), ("rollback", "2", "1")]
    trainings = sorted((e.kind, e.to_version) for e in report.events if e.kind.startswith("retrain"))
    assert trainings == [("retrain", "2"), ("retrain failed", None)]
    assert MonitoringReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_report_of_every_model_and_unknown_alpha(ebmops_home):
    write_home(ebmops_home)

    def broken(name, version):
        raise LookupError("no such model")

    report = build_report(alpha_of=broken)
    assert [(v.model_name, v.version) for v in report.versions] == [("g", "1"), ("g", "2"), ("other", "1")]
    assert all(v.alpha is None for v in report.versions)
    assert sum("calibrated alpha unknown (LookupError: no such model)" in n for n in report.notes) == 3
    assert {e.model_name for e in report.events} == {"g", "other", None}


def test_no_state_is_a_lookup_error(ebmops_home):
    with pytest.raises(NoMonitoringState, match="no monitoring state for model 'g'"):
        build_report("g")
    write_home(ebmops_home)
    with pytest.raises(NoMonitoringState, match="model 'absent'"):
        build_report("absent")


def test_write_report_is_atomic_and_complete(ebmops_home, tmp_path):
    write_home(ebmops_home)
    path, report = write_report(tmp_path / "out" / "m.html", "g", alpha_of=None)
    html = path.read_text()
    assert html.count("<img ") == 2 and "rollback v2 -&gt; v1" not in html  # labels are drawn in the figure
    assert "<td>rollback</td>" in html and "<td>retrain failed</td>" in html
    assert not list(path.parent.glob(".*.tmp"))


def test_command_writes_the_page_and_fails_in_one_line_without_state(ebmops_home, tmp_path, capsys):
    with pytest.raises(typer.Exit) as exit_info:
        monitor_report_command(model="g", output=tmp_path / "m.html")
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("monitoring report failed: no monitoring state for model 'g'") and "\n" not in err
    assert not (tmp_path / "m.html").exists()

    write_home(ebmops_home)
    (ebmops_home / "monitoring" / "g-v2.json").write_text("{not json")
    with pytest.raises(typer.Exit):
        monitor_report_command(model="g", output=tmp_path / "m.html")
    err = capsys.readouterr().err.strip()
    assert "g-v2.json: monitoring state unreadable" in err and "\n" not in err


def test_command_is_registered():
    from flows.cli.app import app

    (command,) = [c for c in app.registered_commands if c.name == "monitor-report"]
    assert command.callback is monitor_report_command


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_report_after_a_real_monitoring_pass(tmp_path, monkeypatch, capsys):
    """Three batches (one with feedback, one shifted) through the monitor flow, then the report."""
    import numpy as np

    from tests.flows.guard_factory import prepare_data, register_version
    from tests.traffic_files import write_batch

    home = tmp_path / "ebmops-home"
    monkeypatch.setenv("EBMOPS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    data, data_check = prepare_data(tmp_path / "work", check=False)
    registered = register_version(data, data_check, tmp_path / "work", n_steps=60)
    test_in = pd.read_parquet(data.path("in_test"))[list(data.feature_columns)]
    rows = test_in.sample(n=80, random_state=0).reset_index(drop=True)
    traffic = tmp_path / "traffic"
    traffic.mkdir()
    write_batch(traffic, "b000.parquet", rows.iloc[0:40], feedback=[1, 0, None] * 13 + [0])
    write_batch(traffic, "b001.parquet", rows.iloc[40:80], feedback=[0] * 40)
    noise = pd.DataFrame(np.random.default_rng(0).uniform(0, 16, (40, test_in.shape[1])), columns=test_in.columns)
    write_batch(traffic, "b002.parquet", noise, feedback=[1] * 20 + [None] * 20)
    monkeypatch.setattr("flows.monitoring.monitor.emit_alarm", lambda guard, record, config: "e")
    summary = monitor(traffic, MonitorConfig(expected_run_length=20, window=2, experiment_name="monitor-report-test"))
    assert [b["source"] for b in summary["new_batches"]] == ["b000.parquet", "b001.parquet", "b002.parquet"]

    output = tmp_path / "monitoring.html"
    monitor_report_command(model=registered.model_name, output=output)
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote the monitoring report to {output}") and "1 model version(s), 3 batch(es)" in line

    report = build_report(registered.model_name)
    (series,) = report.versions
    assert series.version == registered.version
    from flows.guard.guard import Guard

    assert series.alpha == pytest.approx(Guard.load(registered.model_uri).detector.alpha_)
    by_monitor = summary["new_batches"]
    assert [b.n for b in series.batches] == [b["stats"]["n"] for b in by_monitor] == [40, 40, 40]
    assert [b.flag_rate().rate for b in series.batches] == [pytest.approx(b["stats"]["flag_rate"]["rate"]) for b in by_monitor]
    assert [b.alarm for b in series.batches] == [b["alarm"] for b in by_monitor]
    assert series.overall_feedback == {k: summary["overall_feedback"][k] for k in ("n_rows", "n_with_feedback")} | {
        "accepted_n": summary["overall_feedback"]["accepted"]["n"],
        "accepted_problems": summary["overall_feedback"]["accepted"]["problems"],
        "flagged_n": summary["overall_feedback"]["flagged"]["n"],
        "flagged_problems": summary["overall_feedback"]["flagged"]["problems"],
    }
    assert series.overall_feedback["n_with_feedback"] == 27 + 40 + 20
    state = json.loads(state_path(registered.model_name, registered.version).read_text())
    if any("feedback_counts" in p for p in state["processed"]):  # the monitor records per-batch counts
        for point, record in zip(series.batches, by_monitor):
            assert point.accepted_problems().rate == record["feedback"]["accepted"]["rate"]
            assert point.flagged_problems().rate == record["feedback"]["flagged"]["rate"]
    else:  # it does not (yet): the page says so and shows no per-batch problem rate
        assert all(point.feedback is None for point in series.batches)
        assert any("no per-batch feedback" in note for note in report.notes)
    html = output.read_text()
    assert html.count("<img ") == 1 and all(f"<td>b00{i}.parquet</td>" in html for i in range(3))
