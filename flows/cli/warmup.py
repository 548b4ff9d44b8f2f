"""Start Prefect's temporary server while the command line does its own work (issue 14).

With no `PREFECT_API_URL`, the first flow call starts a temporary Prefect server (a uvicorn
subprocess) and waits for it to answer: seconds spent waiting while this process does nothing.
`start_prefect_server()` starts that same server (Prefect's own `SubprocessASGIServer`, the
instance the flow call looks up) from a background thread, so its start-up runs in the other
process while this one imports the pipeline's modules; `wait()` joins it before the flow is called.
The flow then finds the server running and uses it exactly as if it had started it itself; Prefect
stops it at exit as before. Nothing changes when `PREFECT_API_URL` points at a server, or when
ephemeral mode is off (Prefect then refuses the flow call as it always did).

Also here: the pipeline's imports preloaded during that wait, the tracking store opened, and the
imported modules kept out of the garbage collector's full walks during the flow and at exit.
"""

from __future__ import annotations

import atexit
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PrefectServerStart:
    """Prefect's server start (`SubprocessASGIServer.start`: spawn, then poll its health) in a thread;
    `wait()` before the first flow call. Every import happens in the calling thread, before the thread
    starts, so the thread imports nothing while the caller goes on importing."""

    def __init__(self, server) -> None:
        self.server = server
        self.error: BaseException | None = None
        # Not a daemon: an exit while it runs waits for the start to finish, so the server process is
        # always registered with Prefect's own atexit stop (never left running).
        self._thread = threading.Thread(target=self._start, name="ebmops-prefect-server-start")
        self._thread.start()

    def _start(self) -> None:
        try:
            self.server.start()
        except BaseException as error:  # noqa: BLE001 - the flow call starts it again and reports
            self.error = error

    def wait(self) -> bool:
        """True when the server is up; False when the start failed (the flow call then starts it the
        usual way and reports any failure)."""
        self._thread.join()
        return self.error is None and bool(self.server.running)


def needs_temporary_server() -> bool:
    """True when a flow call would start Prefect's temporary server: no API URL, ephemeral mode on."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return not settings.api.url and bool(settings.server.ephemeral.enabled)


def start_prefect_server() -> PrefectServerStart | None:
    """Start the temporary server the next flow call would start, in the background; None when that
    call would not start one (an API URL is set, or ephemeral mode is off)."""
    if not needs_temporary_server():
        return None
    # The same instance (port None) that prefect.client.orchestration.get_client looks up.
    from prefect.server.api.server import SubprocessASGIServer

    return PrefectServerStart(SubprocessASGIServer())


def preload_pipeline_modules() -> None:
    """Import what the pipeline's stages import on first use (Great Expectations, the report's figures,
    the baselines), here, while Prefect's server starts in its own process: the same imports, done
    during a wait instead of between stages."""
    import evaluation.baselines  # noqa: F401 - scikit-learn's detectors
    import evaluation.render.report_page  # noqa: F401 - matplotlib
    from flows.data.data_checks import preload_great_expectations

    preload_great_expectations()


def warm_tracking_store(experiment_name: str) -> None:
    """What the flow does first (open the tracking store, creating a new sqlite database's tables, and
    close runs left RUNNING by killed processes), done here during the server's start-up; the flow
    does it again, quickly. A failure is left for the flow to meet and report."""
    from flows.guard import registry

    try:
        registry.configure_tracking()
        registry.close_abandoned_runs(experiment_name)
    except Exception:  # noqa: BLE001 - the flow reports it in its own words
        pass


def record_cli_timings(run_dir, flow_called_at: float, preloaded_at: float | None = None) -> None:
    """Add when this process started, when it had imported and preloaded everything (`preloaded_at`,
    when Prefect's server was started in the background: the rest until the flow call is the wait
    for that server) and when it called the flow, to the run folder's `stage_timings.json` (written
    by the flow), so start-up and Prefect's start show there too."""
    import json
    from pathlib import Path

    from evaluation.files import write_json_atomic

    path = Path(run_dir) / "stage_timings.json"
    try:
        timings = json.loads(path.read_text())
        try:
            import psutil

            timings["process_started_at"] = psutil.Process().create_time()
        except Exception:  # noqa: BLE001 - optional
            pass
        timings["flow_called_at"] = flow_called_at
        if preloaded_at is not None:
            timings["preloaded_at"] = preloaded_at
        write_json_atomic(path, timings, indent=2)
    except (OSError, ValueError):
        pass  # a timing file is never a reason to fail


_FREEZE_AT_EXIT = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection while the body imports the pipeline's modules (each full collection
    would walk every object imported so far, again and again); after it, what was imported is frozen
    (`gc.freeze()`, see `modules_frozen_for_gc`) and collection is back on as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


@contextmanager
def modules_frozen_for_gc() -> Iterator[None]:
    """Run the body with every object made so far (the imported modules of torch, Prefect, MLflow, Great
    Expectations: millions of objects that live as long as the process) moved out of the garbage
    collector's view (`gc.freeze()`), so each full collection during the run looks at the run's own
    objects only instead of walking them all again (seconds per run). Collection itself is unchanged:
    the run's garbage is collected as before, and `gc.unfreeze()` after the body gives the frozen objects
    back. At exit they are frozen again, so ending the process does not walk them one last time."""
    global _FREEZE_AT_EXIT
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        if not _FREEZE_AT_EXIT:
            atexit.register(gc.freeze)  # runs before the interpreter's last collections
            _FREEZE_AT_EXIT = True
