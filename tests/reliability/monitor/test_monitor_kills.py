"""Reliability of `ebmops monitor --once DIR`: a kill -9 at each fault point of the monitor
(`EBMOPS_FAULT_POINT`), then a rerun: no MLflow step twice, every input counted exactly once, the state
readable, nothing left pending, the registry invariants hold. Run as the user runs it: the console
script in a subprocess, a fresh $EBMOPS_HOME per test (tests/reliability/monitor/)."""

from __future__ import annotations

import signal

import pytest

from tests.reliability.invariants import assert_registry_invariants
from tests.reliability.monitor.runs import MODEL, explain, noise, read_state, run_monitor, step_counts, write_batch

pytestmark = pytest.mark.slow


# --- kill -9 at each fault point, then rerun ------------------------------------------------------

FAULT_POINTS = [
    "monitor.after_rows_write",
    "monitor.after_pending_save",
    "monitor.after_mlflow_log",
    "monitor.after_state_save",
    "monitor.after_alarm_emit",
    "monitor.after_quarantine_record",
    "monitor.after_quarantine_move",
]


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill_at_fault_point_then_rerun_counts_each_input_once(point, home, rows, traffic, prefect_api_url):
    write_batch(traffic, "a.parquet", rows.iloc[0:40])
    write_batch(traffic, "b.csv", rows.iloc[40:70])
    (traffic / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    write_batch(traffic, "c_shift.parquet", noise(rows, 60))
    args = (str(traffic), "--expected-run-length", "20", "--window", "2")

    crashed = run_monitor(home, prefect_api_url, *args, fault=point)
    assert crashed.returncode == -signal.SIGKILL, explain(crashed)
    read_state(home)  # readable (or absent) after the kill

    rerun = run_monitor(home, prefect_api_url, *args)
    assert rerun.returncode == 1, explain(rerun)  # the shifted batch alarms, in the crashed pass or now
    assert "Traceback" not in rerun.stdout

    state = read_state(home)
    assert [p["name"] for p in state["processed"]] == ["a.parquet", "b.csv", "c_shift.parquet"]
    assert [p["batch"] for p in state["processed"]] == [0, 1, 2]
    assert [p["n"] for p in state["processed"]] == [40, 30, 60]  # every input counted exactly once
    assert state["pending"] == []
    assert [(q["name"], q["moved_to"]) for q in state["quarantined"]] == [("bad.parquet", "quarantine/bad.parquet")]
    assert (traffic / "quarantine" / "bad.parquet").exists() and not (traffic / "bad.parquet").exists()
    assert step_counts(home) == {0: 1, 1: 1, 2: 1}  # no duplicated MLflow step
    assert step_counts(home, "sequential.statistic") == {0: 1, 1: 1, 2: 1}
    assert state["sequential"]["alarms"] == [2]
    assert_registry_invariants(MODEL)
