"""The monitor flow end to end on a small digits guard: new files only, MLflow steps, alarms."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.guard import registry
from flows.monitoring.monitor import ALARM_EVENT, MonitorConfig, monitor, state_path
from flows.cli.monitor import monitor_command
from tests.flows.guard_factory import prepare_data, register_version
from tests.traffic_files import write_batch

# Every test here runs the monitor flow on a freshly trained and registered guard.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def registered_guard(tmp_path_factory):
    """A digits guard registered as champion in a module-wide $EBMOPS_HOME (training once), and the
    in-distribution test rows to build batches from."""
    home = tmp_path_factory.mktemp("monitor-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(home / "ebmops-home"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        data, data_check = prepare_data(home / "work", check=False)
        registered = register_version(data, data_check, home / "work", n_steps=60)
        test_in = pd.read_parquet(data.path("in_test")).drop(columns="label", errors="ignore")
        yield home / "ebmops-home", registered, test_in[list(data.feature_columns)]


@pytest.fixture
def guard(registered_guard, monkeypatch):
    """The module's guard, with a fresh monitoring state for each test."""
    home, registered, test_in = registered_guard
    monkeypatch.setenv("EBMOPS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    shutil.rmtree(home / "monitoring", ignore_errors=True)
    return registered, test_in


def test_monitor_processes_new_files_only_logs_steps_and_alarms_on_shift(guard, tmp_path, monkeypatch):
    registered, test_in = guard
    traffic = tmp_path / "traffic"
    traffic.mkdir()
    rows = test_in.sample(n=len(test_in), random_state=0).reset_index(drop=True)
    feedback = [1, 0, None] * 13 + [None]  # 40 rows
    write_batch(traffic, "b000.parquet", rows.iloc[0:40], feedback=feedback)
    write_batch(traffic, "b001.csv", rows.iloc[40:80])
    write_batch(traffic, "b002.parquet", rows.iloc[80:120])
    events = []
    monkeypatch.setattr("flows.monitoring.monitor.emit_alarm", lambda guard, record, config: events.append(record.index) or "e")
    config = MonitorConfig(expected_run_length=20, window=2, experiment_name="monitoring-flow-test")

    first = monitor(traffic, config)
    assert [b["source"] for b in first["new_batches"]] == ["b000.parquet", "b001.csv", "b002.parquet"]
    assert first["n_batches"] == 3 and first["n_inputs"] == 120
    fb = first["new_batches"][0]["feedback"]
    assert fb["n_with_feedback"] == 26
    assert fb["accepted"]["n"] + fb["flagged"]["n"] == 26
    assert fb["accepted"]["problems"] + fb["flagged"]["problems"] == 13
    assert first["new_batches"][1]["window_batches"] == 2
    assert not any(b["alarm"] for b in first["new_batches"])

    again = monitor(traffic, config)
    assert again["new_batches"] == [] and again["n_batches"] == 3

    write_batch(traffic, "b003.parquet", rows.iloc[120:160])
    write_batch(traffic, ".hidden.parquet", rows.iloc[120:160])
    (traffic / "notes.txt").write_text("not a batch")
    third = monitor(traffic, config)
    assert [b["index"] for b in third["new_batches"]] == [3]

    # a shifted batch: uniform pixel noise
    noise = pd.DataFrame(np.random.default_rng(0).uniform(0, 16, (100, test_in.shape[1])), columns=test_in.columns)
    write_batch(traffic, "b004.parquet", noise)
    shifted = monitor(traffic, config)
    (record,) = shifted["new_batches"]
    assert record["alarm"] is True and record["stats"]["flag_rate"]["rate"] > 0.5
    assert shifted["alarms"] == [4] and events == [4]
    assert any(ALARM_EVENT in a for a in shifted["actions"])

    # MLflow: one monitoring run for this version, metrics at steps 0..4
    registry.configure_tracking()
    client = MlflowClient()
    run_id = shifted["mlflow_run_id"]
    assert run_id == first["mlflow_run_id"]
    history = client.get_metric_history(run_id, "batch.flag_rate")
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]
    assert {m.step for m in client.get_metric_history(run_id, "sequential.statistic")} == {0, 1, 2, 3, 4}
    assert client.get_run(run_id).data.tags["ebmops.monitoring.version"] == registered.version

    state = json.loads(state_path(registered.model_name, registered.version).read_text())
    assert [p["name"] for p in state["processed"]] == [f"b00{i}{s}" for i, s in enumerate([".parquet", ".csv", ".parquet", ".parquet", ".parquet"])]
    assert state["sequential"]["alarms"] == [4]


def test_monitor_command_prints_table_and_exits_1_on_alarm(guard, tmp_path, capsys, monkeypatch):
    import typer

    _, test_in = guard
    traffic = tmp_path / "traffic"
    traffic.mkdir()
    monkeypatch.setattr("flows.monitoring.monitor.emit_alarm", lambda guard, record, config: None)
    monkeypatch.setenv("COLUMNS", "300")  # rich would otherwise fold the 13-column table
    write_batch(traffic, "a.parquet", test_in.iloc[:50])
    monitor_command(traffic, once=True, expected_run_length=150)  # no alarm: returns normally
    out = capsys.readouterr().out
    assert "a.parquet" in out and "flag rate" in out
    noise = pd.DataFrame(np.random.default_rng(1).uniform(0, 16, (200, test_in.shape[1])), columns=test_in.columns)
    write_batch(traffic, "b.parquet", noise)
    with pytest.raises(typer.Exit) as exit_info:
        monitor_command(traffic, once=True, expected_run_length=150)
    assert exit_info.value.exit_code == 1
    assert "ALARM" in capsys.readouterr().out
