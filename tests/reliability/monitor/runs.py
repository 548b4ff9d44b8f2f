"""Helpers of the monitor fault tests (test_monitor_kills.py, test_monitor_faults.py; fixtures in
conftest.py): the console script run in a subprocess, batch files written, the monitor's state read."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from tests.traffic_files import write_batch  # noqa: F401 - the tests import it from here

EBMOPS = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "ebmops"
RUN_TIMEOUT_S = 300
MODEL = "ebm-guard"


# --- helpers ------------------------------------------------------------------------------------


def run_monitor(home: Path, api_url: str, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "EBMOPS_", "PREFECT_"))}
    env.update(EBMOPS_HOME=str(home), PREFECT_API_URL=api_url, COLUMNS="250", NO_COLOR="1")
    if "PREFECT_HOME" in os.environ:  # this test process's own (tests/conftest.py), not ~/.prefect
        env["PREFECT_HOME"] = os.environ["PREFECT_HOME"]
    if fault:
        env["EBMOPS_FAULT_POINT"] = fault
    return subprocess.run(
        [str(EBMOPS), "monitor", "--once", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def noise(rows: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(np.random.default_rng(seed).uniform(0, 16, (n, rows.shape[1])), columns=rows.columns)


def read_state(home: Path) -> dict:
    path = home / "monitoring" / f"{MODEL}-v1.json"
    return json.loads(path.read_text()) if path.exists() else {}


def step_counts(home: Path, key: str = "batch.n") -> dict[int, int]:
    """Step -> how many points of metric `key` the state's monitoring run holds at that step."""
    from flows.guard import registry

    state = read_state(home)
    registry.configure_tracking()
    steps = registry.metric_steps(state["mlflow_run_id"], key)
    return {s: steps.count(s) for s in sorted(set(steps))}


def explain(result: subprocess.CompletedProcess) -> str:
    return f"rc={result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
