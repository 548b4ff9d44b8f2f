"""Fixtures of the monitor fault tests: a fresh copy of one registered digits guard's home per test
and the session's Prefect test server. Two test files, so that pytest-xdist (one file per worker)
runs the kill tests beside the file tests."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from tests.reliability.monitor.runs import MODEL


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
