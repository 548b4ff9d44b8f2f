"""What the monitor fault tests share (tests/reliability/test_monitor_kills.py, test_monitor_faults.py):
the console script run in a subprocess against a fresh copy of one registered digits guard's home and
the session's Prefect test server, and small helpers to write batches and read the monitor's state.
Two files, so that pytest-xdist (one file per worker) runs the kill tests beside the file tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EBMOPS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "ebmops"
RUN_TIMEOUT_S = 300
MODEL = "ebm-guard"


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_api_url(prefect_harness):
    """The session's Prefect test server (tests/conftest.py); the subprocesses reach it through
    PREFECT_API_URL (each would otherwise start a temporary server of its own, seconds each time)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def template(small_vector_guard):
    """The session's small digits guard (tests/reliability/conftest.py; champion v1 of ebm-guard) and
    its in-distribution test rows, shuffled."""
    assert small_vector_guard.model_name == MODEL and small_vector_guard.version == "1"
    rows = pd.read_parquet(small_vector_guard.data.path("in_test"))[list(small_vector_guard.feature_names)]
    return small_vector_guard.home, rows.sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture
def home(template, tmp_path, monkeypatch):
    """A fresh copy of the guard's home for this test (tracking db, audit log; the artifacts stay
    where the copied db says, in the shared home, and are only read)."""
    template_home, _ = template
    home = tmp_path / "ebmops-home"
    shutil.copytree(template_home, home)
    monkeypatch.setenv("EBMOPS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return home


@pytest.fixture
def rows(template):
    return template[1]


@pytest.fixture
def traffic(tmp_path):
    folder = tmp_path / "traffic"
    folder.mkdir()
    return folder


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


def write_batch(folder: Path, name: str, frame: pd.DataFrame, start: str = "2024-05-01") -> Path:
    out = frame.copy()
    out.insert(0, "timestamp", pd.date_range(start, periods=len(out), freq="min", tz="UTC"))
    path = folder / name
    if name.endswith(".csv"):
        out.to_csv(path, index=False)
    else:
        out.to_parquet(path, index=False)
    return path


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
