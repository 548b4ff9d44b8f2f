import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# The models here are small: one intra-op thread is fastest, and on a shared 2-core machine
# OpenMP's spinning threads make tiny ops up to 100x slower when another process is busy.
torch.set_num_threads(1)

# One private folder per test process (each pytest-xdist worker, or the single process without
# xdist), set before anything imports Prefect or MLflow, and inherited by the subprocesses tests start:
# - PREFECT_HOME: a command run without PREFECT_API_URL starts a temporary Prefect server on
#   $PREFECT_HOME/prefect.db; two workers (or another program of this user) must not share that file;
# - EBMOPS_HOME: a default for code that does not get its own home from a fixture (`ebmops_home`, the
#   guard fixtures), so no test writes into ./.ebmops or into a home another worker uses (CI exports
#   one EBMOPS_HOME for the whole run).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
_PROCESS_DIR = Path(tempfile.mkdtemp(prefix=f"ebmops-tests-{WORKER}-"))
atexit.register(shutil.rmtree, _PROCESS_DIR, ignore_errors=True)
os.environ["PREFECT_HOME"] = str(_PROCESS_DIR / "prefect-home")
os.environ["EBMOPS_HOME"] = str(_PROCESS_DIR / "ebmops-home")

# `make test` runs the suite on several processes (pytest-xdist, `--dist loadfile`): a test file is one
# unit of work, run by one worker in file order, so its module-scoped fixtures (a registered guard, a
# server, a Prefect test server) are built once and tests that rely on the order of their file keep it.
# (pytest-xdist 3.8's `--dist loadgroup` does nothing under pytest 9: it renames `item._nodeid`, which
# pytest 9 no longer reads.) The files listed here take the longest (`pytest --durations`): handed out
# first (with `--no-loadscope-reorder`), none of them starts last and holds up the end of the run.
LONGEST_FIRST = (
    "tests/reliability/monitor/test_monitor_faults.py",
    "tests/reliability/monitor/test_monitor_kills.py",
    "tests/reliability/test_promotion_faults.py",
    "tests/flows/ops/test_deployments.py",
    "tests/flows/ops/test_batch_scoring.py",
    "tests/flows/pipeline/test_train_text_cli.py",
    "tests/flows/pipeline/test_dask_selection.py",
    "tests/reliability/test_serving_fuzz.py",
    "tests/flows/pipeline/test_ddp_train.py",
    "tests/flows/ops/test_promotion.py",
    "tests/reliability/test_bad_inputs.py",
    "tests/flows/monitoring/test_monitor.py",
    "tests/ebm_core/test_distributed.py",
    "tests/evaluation/render/test_html_in_browser.py",
    "tests/reliability/test_tampered_artifacts.py",
)


def _file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, the longest files first; a file's tests keep their order (a stable sort)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(_file_of(item), len(rank)))


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness (a temporary API on its own database), for the tests that run a flow or
    a task: a module asks for it with `pytestmark = pytest.mark.usefixtures("prefect_harness")`, a
    module-scoped fixture that runs flows takes it as an argument. Started once per test process (each
    xdist worker has its own, on a port the OS chose), on first request."""
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
