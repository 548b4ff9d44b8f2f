import pytest


@pytest.fixture
def ebmops_home(tmp_path, monkeypatch):
    """A fresh $EBMOPS_HOME: sqlite tracking and artifacts live under tmp_path."""
    home = tmp_path / "ebmops-home"
    monkeypatch.setenv("EBMOPS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return home
