import pytest
import torch

# The models here are small: one intra-op thread is fastest, and on a shared 2-core machine
# OpenMP's spinning threads make tiny ops up to 100x slower when another process is busy.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness (a temporary API on its own database), for the tests that run a flow or
    a task: a module asks for it with `pytestmark = pytest.mark.usefixtures("prefect_harness")`, a
    module-scoped fixture that runs flows takes it as an argument. Started once, on first request."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield

@pytest.fixture
def ebmops_home(tmp_path, monkeypatch):
    """A fresh $EBMOPS_HOME: sqlite tracking and artifacts live under tmp_path."""
    home = tmp_path / "ebmops-home"
    monkeypatch.setenv("EBMOPS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return home
