"""The team servers for the integration tests: PostgreSQL 15, the MLflow server (basic auth, proxied
artifacts) and the Prefect server with a process worker, started once per session by the same script a
team runs (infra/servers-up.sh) in a temporary folder on free loopback ports, and stopped (folder
deleted) at the end by infra/servers-down.sh --purge.

These tests run only when selected: `make test-integration` (pytest -m integration). A plain `pytest`
skips them, so `make test` does not start the servers.

The MLflow server here gives users without a grant no permission (EBMOPS_MLFLOW_DEFAULT_PERMISSION=
NO_PERMISSIONS), so a test shows that a READ grant is what lets a user read. When the tests may create
a mount namespace (root), every client command runs in its own, where the servers' folder is covered by
an empty tmpfs: the client cannot see the server's files, so artifacts can only have come over HTTP.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "integration-admin-pw-1"
STARTUP_TIMEOUT_S = 900  # four servers on a busy 2-core machine; each readiness wait has its own limit


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("markexpr", "") or ""
    if "integration" in markexpr and "not integration" not in markexpr:
        return
    skip = pytest.mark.skip(reason="team-server integration test: run with `make test-integration` (pytest -m integration)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@dataclass(frozen=True)
class Servers:
    folder: Path
    mlflow_uri: str
    prefect_api: str
    admin_user: str
    admin_password: str

    @property
    def artifacts_dir(self) -> Path:
        return self.folder / "mlflow" / "artifacts"


def _script_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "EBMOPS_"))}
    env.update(
        EBMOPS_SERVERS_DIR=str(folder),
        EBMOPS_MLFLOW_ADMIN_USER=ADMIN_USER,
        EBMOPS_MLFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD,
        EBMOPS_MLFLOW_DEFAULT_PERMISSION="NO_PERMISSIONS",
        EBMOPS_VENV=str(Path(sys.executable).parent.parent),
    )
    return env


def parse_exports(text: str) -> dict[str, str]:
    """`export NAME=value` lines (as servers-up.sh prints them) -> {NAME: value}."""
    import shlex

    found = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            found[name] = shlex.split(value)[0] if value else ""
    return found


def servers_up(folder: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INFRA / "servers-up.sh")], env={**_script_env(folder), **(extra_env or {})},
        capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S,
    )


def servers_down(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INFRA / "servers-down.sh"), *args], env=_script_env(folder), capture_output=True, text=True,
        timeout=300,
    )


@contextlib.contextmanager
def servers_in_temp_folder(extra_env: dict[str, str] | None = None):
    """Start the team servers in a fresh folder, yield their `Servers`, stop and purge them."""
    # Under /tmp (not pytest's 0700 basetemp) and traversable, so the `postgres` user reaches its data.
    folder = Path(tempfile.mkdtemp(prefix="ebmops-servers-"))
    folder.chmod(0o711)
    servers_dir = folder / "servers"
    _SESSION_ROOT.append(folder)
    try:
        started = servers_up(servers_dir, extra_env)
        if started.returncode != 0:
            pytest.fail(f"infra/servers-up.sh failed (exit {started.returncode}):\n{started.stderr[-4000:]}")
        exports = parse_exports(started.stdout)
        yield Servers(
            folder=servers_dir,
            mlflow_uri=exports["MLFLOW_TRACKING_URI"],
            prefect_api=exports["PREFECT_API_URL"],
            admin_user=exports["MLFLOW_TRACKING_USERNAME"],
            admin_password=exports["MLFLOW_TRACKING_PASSWORD"],
        )
    finally:
        stopped = servers_down(servers_dir, "--purge")
        shutil.rmtree(folder, ignore_errors=True)
        _SESSION_ROOT.remove(folder)
        if stopped.returncode != 0:
            print(f"infra/servers-down.sh failed (exit {stopped.returncode}):\n{stopped.stderr[-4000:]}", file=sys.stderr)


@pytest.fixture(scope="session")
def team_servers():
    with servers_in_temp_folder() as servers:
        yield servers


@pytest.fixture(scope="session")
def dask_scheduler(team_servers):
    """A Dask scheduler and two single-thread worker processes on loopback (`dask scheduler` /
    `dask worker`, as a team would run them), the workers pointed at the team servers like any client;
    yields the scheduler address; stopped at the end."""
    import socket
    import time

    bin_dir = Path(sys.executable).parent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    logs = Path(tempfile.mkdtemp(prefix="ebmops-dask-"))
    worker_env = client_env(team_servers, client_folder("dask-workers"), team_servers.admin_user, team_servers.admin_password)
    processes = [subprocess.Popen(
        [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=open(logs / "scheduler.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )]
    try:
        from distributed import Client

        deadline = time.time() + 120
        while True:
            try:
                with Client(address, timeout=5):
                    break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"the Dask scheduler did not start: {(logs / 'scheduler.log').read_text()[-2000:]}")
                time.sleep(1)
        for i in range(2):
            processes.append(subprocess.Popen(
                [str(bin_dir / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                 "--host", "127.0.0.1"],
                stdout=open(logs / f"worker-{i}.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
                env=worker_env,
            ))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(logs, ignore_errors=True)


# --- clients -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def isolated() -> bool:
    """Whether client commands can run in a mount namespace that hides the servers' folder."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "mount -t tmpfs -o size=1m none /mnt"],
        capture_output=True, timeout=30,
    )
    return probe.returncode == 0


_SESSION_ROOT: list[Path] = []


def client_folder(prefix: str) -> Path:
    """A client's working folder beside (never inside) the servers' folder; deleted with the session."""
    return Path(tempfile.mkdtemp(prefix=f"client-{prefix}-", dir=_SESSION_ROOT[-1] if _SESSION_ROOT else None))


def client_env(servers: Servers, home: Path, user: str | None, password: str | None) -> dict[str, str]:
    """The environment of a client command: tracking and Prefect URLs, credentials (or none), its own
    EBMOPS_HOME and PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "EBMOPS_"))}
    env.update(
        MLFLOW_TRACKING_URI=servers.mlflow_uri,
        PREFECT_API_URL=servers.prefect_api,
        EBMOPS_HOME=str(home / "ebmops-home"),
        PREFECT_HOME=str(home / "prefect-home"),
        HOME=str(home),
        PYTHONUNBUFFERED="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    if user is not None:
        env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password or "")
    return env


def run_client(args: list[str], servers: Servers, home: Path, user: str | None, password: str | None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a client command in `home` (its cwd); with `isolated()`, the servers' folder is hidden from it."""
    if isolated():
        hide = 'mount -t tmpfs -o size=1m,mode=000 ebmops-hidden "$0" && exec "$@"'
        args = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", hide, str(servers.folder), *args]
    return subprocess.run(
        args, cwd=home, env=client_env(servers, home, user, password), capture_output=True, text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def as_client(servers: Servers, user: str | None, password: str | None, home: Path | None = None):
    """In this process: tracking pointed at the servers with these credentials (none when user is None)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_REGISTRY_URI"):
            patch.delenv(name, raising=False)
        patch.setenv("MLFLOW_TRACKING_URI", servers.mlflow_uri)
        patch.setenv("PREFECT_API_URL", servers.prefect_api)
        if home is not None:
            patch.setenv("EBMOPS_HOME", str(home / "ebmops-home"))
        if user is not None:
            patch.setenv("MLFLOW_TRACKING_USERNAME", user)
            patch.setenv("MLFLOW_TRACKING_PASSWORD", password or "")
        from flows.guard import registry

        registry.configure_tracking()
        yield


@pytest.fixture(scope="module")
def own_team_servers():
    """Team servers for one module alone (a fresh folder, other free ports), started and purged around
    it like `team_servers`: for a module whose runs and registrations must not meet another module's
    (tests/integration/test_team_servers.py counts what is on its servers)."""
    # One MLflow worker process: no uvicorn supervisor, whose 5 s health check kills workers that a
    # busy CI machine is slow to start; a longer readiness wait for the same reason.
    with servers_in_temp_folder({"EBMOPS_MLFLOW_WORKERS": "1", "EBMOPS_SERVERS_TIMEOUT": "600"}) as servers:
        yield servers
