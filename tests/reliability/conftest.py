"""Fixtures shared by the reliability tests.

- `ebmops_home` (a fresh $EBMOPS_HOME per test) comes from tests/conftest.py.
- `small_vector_guard`: one small digits guard (64 pixel columns) registered once per session, via
  tests/flows/guard_factory.py, in its own $EBMOPS_HOME; it is the champion. Treat it as read-only
  (serve it, score with it, snapshot it): a test that promotes, rolls back or registers more versions
  builds its own home. `guard_home` points $EBMOPS_HOME at it for one test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class SmallGuard:
    home: Path  # its $EBMOPS_HOME
    model_name: str
    version: str  # the champion
    data: object  # guard_factory.prepare_data's PreparedData (digits splits: data.path("in_test"), ...)
    feature_names: tuple[str, ...]

    @property
    def uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


@pytest.fixture(scope="session")
def small_vector_guard(tmp_path_factory) -> SmallGuard:
    """One small vector guard registered (and champion) in a session-wide $EBMOPS_HOME. The
    environment is set only while registering; use `guard_home` (or set EBMOPS_HOME) to reach it."""
    from flows.guard import registry
    from tests.flows.guard_factory import prepare_data, register_version

    home = tmp_path_factory.mktemp("small-guard-home")
    work = tmp_path_factory.mktemp("small-guard-work")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        registry.configure_tracking()
        data, data_check = prepare_data(work, check=False)
        registered = register_version(data, data_check, work, n_steps=100)
        champion = registry.get_alias_version(registered.model_name, registry.CHAMPION)
        assert champion is not None, "the first registered version should be the champion"
    if "EBMOPS_HOME" in os.environ:  # reconfigure tracking for whatever home the session had
        registry.configure_tracking()
    return SmallGuard(
        home=home,
        model_name=registered.model_name,
        version=str(champion),
        data=data,
        feature_names=tuple(data.feature_columns),
    )


@pytest.fixture
def guard_home(small_vector_guard, monkeypatch) -> SmallGuard:
    """$EBMOPS_HOME set to the shared small guard's home for this test."""
    monkeypatch.setenv("EBMOPS_HOME", str(small_vector_guard.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    from flows.guard import registry

    registry.configure_tracking()
    return small_vector_guard
