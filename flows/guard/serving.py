"""Serve the champion over HTTP with MLflow's scoring server (`/ping`, `/invocations`).

`mlflow models serve -m models:/ebm-guard@champion -p PORT --env-manager local`, with
MLFLOW_TRACKING_URI set to the embedded sqlite registry unless the caller set it. The pyfunc answers
energy, p_value and is_ood per row; bad rows get a 4xx naming the problem (flows/guard/input_checks.py).
`EBMOPS_MAX_ROWS` caps the rows of one request (default 10000).

What MLflow's server does before the model sees a request (mlflow 3.17): it drops columns the
signature does not name (logging a warning) and converts values to the signature's double type, so
JSON booleans become 1.0/0.0 and numeric strings such as "1.5" become numbers; anything it cannot
convert is a 400 naming the column.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from flows import settings
from flows.guard.names import DEFAULT_CHAMPION_URI

DEFAULT_MODEL_URI = DEFAULT_CHAMPION_URI


def serve_args(
    model_uri: str = DEFAULT_MODEL_URI, host: str = "127.0.0.1", port: int = 5000, workers: int = 1, timeout_s: int = 60
) -> list[str]:
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    exe = [str(mlflow_exe)] if mlflow_exe.exists() else [sys.executable, "-m", "mlflow"]
    return [
        *exe, "models", "serve", "-m", model_uri, "-h", host, "-p", str(port),
        "--workers", str(workers), "--timeout", str(timeout_s), "--env-manager", "local",
    ]


def serve_env(max_rows: int | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the tracking URI (embedded sqlite unless set), this interpreter's
    bin folder first on PATH (MLflow starts `uvicorn` by name), one torch thread per worker."""
    env = dict(os.environ if base is None else base)
    env.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("EBMOPS_TORCH_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # ebmops stores no pickle: never load one
    if max_rows is not None:
        env["EBMOPS_MAX_ROWS"] = str(int(max_rows))
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_server(
    model_uri: str = DEFAULT_MODEL_URI,
    host: str = "127.0.0.1",
    port: int | None = None,
    workers: int = 1,
    max_rows: int | None = None,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start the scoring server in its own process group; returns (process, base URL). A registered
    model is served from a copy checked against the digests recorded at registration."""
    port = port or free_port(host)
    holder, local = verified_copy_of(model_uri)
    out = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        serve_args(local, host, port, workers),
        env=serve_env(max_rows, env),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc._ebmops_verified_copy = holder  # the copy lives as long as the server's handle
    return proc, f"http://{host}:{port}"


def verified_copy_of(model_uri: str):
    """(a TemporaryDirectory holding it, the path to serve): a registered version's files after they
    matched their recorded digests; any other URI (a local folder) is served as given."""
    import tempfile

    from flows.guard import registry

    if not model_uri.startswith("models:/"):
        return None, model_uri
    name, version = registry.resolve_model_uri(model_uri)
    holder = tempfile.TemporaryDirectory(prefix="ebmops-serve-")
    return holder, str(registry.verified_model_copy(name, version, Path(holder.name)))


def wait_until_ready(base_url: str, proc: subprocess.Popen | None = None, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the scoring server exited with status {proc.returncode} before answering /ping")
        try:
            with urllib.request.urlopen(f"{base_url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base_url}/ping did not answer within {timeout_s:g} s")


def stop_server(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Stop the server and its workers (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


def serve_forever(
    model_uri: str = DEFAULT_MODEL_URI, host: str = "127.0.0.1", port: int = 5000, workers: int = 1,
    max_rows: int | None = None,
) -> int:
    """Run the server in the foreground until it exits or is interrupted; returns its exit status."""
    holder, local = verified_copy_of(model_uri)  # noqa: F841 - kept alive while the server runs
    proc = subprocess.Popen(serve_args(local, host, port, workers), env=serve_env(max_rows))
    # A service manager stops us with SIGTERM: pass it on, or the server would outlive us on its port.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
