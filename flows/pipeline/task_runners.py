"""Where mapped tasks run: in-process, one at a time (the default), or on a Dask cluster.

`EBMOPS_DASK_ADDRESS` chooses, read when a flow run starts (not at import):

- unset or empty: `ThreadPoolTaskRunner(max_workers=1)`, one task at a time in the flow's process;
- `local`: a `distributed.LocalCluster` started for the flow run and closed after it, with
  `EBMOPS_DASK_WORKERS` (default 2) worker processes of one thread each;
- anything else: the address of a running Dask scheduler (`tcp://host:8786`), e.g. the one
  `infra/` starts. Its workers need this package installed, the same `EBMOPS_HOME` /
  `MLFLOW_TRACKING_URI`, and the flow's files (run folders, parquet inputs and outputs) on a shared
  path.

Results do not depend on where a task ran: every candidate seeds its own generators (a
`torch.Generator` from the seed, and parameter initialisation under `torch.random.fork_rng` seeded
per model), and `one_task_at_a_time` keeps two candidates of one worker process from seeding the
global generator at once when a worker has several threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

DASK_ADDRESS_ENV = "EBMOPS_DASK_ADDRESS"
DASK_WORKERS_ENV = "EBMOPS_DASK_WORKERS"
LOCAL_CLUSTER = "local"
DEFAULT_LOCAL_WORKERS = 2


def dask_address() -> str | None:
    """The value of EBMOPS_DASK_ADDRESS (`local` or a scheduler address), None when unset or empty."""
    value = os.environ.get(DASK_ADDRESS_ENV, "").strip()
    return value or None


def local_workers() -> int:
    value = os.environ.get(DASK_WORKERS_ENV, "").strip()
    try:
        n = int(value) if value else DEFAULT_LOCAL_WORKERS
    except ValueError:
        raise ValueError(f"{DASK_WORKERS_ENV} must be a whole number of workers, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{DASK_WORKERS_ENV} must be at least 1, got {n}")
    return n


def local_cluster_kwargs(n_workers: int | None = None) -> dict:
    """A LocalCluster of separate worker processes, one thread each; no dashboard (no port to clash)."""
    return {
        "n_workers": n_workers or local_workers(),
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }


def fan_out_task_runner() -> TaskRunner:
    """The task runner EBMOPS_DASK_ADDRESS asks for (see the module docstring)."""
    address = dask_address()
    if address is None:
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if address.lower() == LOCAL_CLUSTER:
        return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs())
    return DaskTaskRunner(address=address)


class FanOutTaskRunner(ThreadPoolTaskRunner):
    """A flow's `task_runner` that picks the real one when a run starts: Prefect's flow engine enters
    `flow.task_runner.duplicate()` for every run, and this duplicate is `fan_out_task_runner()`. Until
    then it is the default, a one-worker thread pool (what a flow decorated with it reports)."""

    def __init__(self, max_workers: int | None = 1):
        super().__init__(max_workers=1 if max_workers is None else max_workers)

    def duplicate(self) -> TaskRunner:
        return fan_out_task_runner()


@contextmanager
def workers_use_this_api() -> Iterator[None]:
    """Around `.map`/`.submit` to Dask: without PREFECT_API_URL the flow talks to a temporary local
    Prefect server, and each Dask worker, handed the flow's settings, would start a temporary server
    of its own (seconds each, several processes on one database). Point the tasks at the flow's
    server instead. A no-op with PREFECT_API_URL set or without Dask. (A remote cluster cannot reach a
    temporary server on this machine: run a Prefect server and set PREFECT_API_URL.)"""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, temporary_settings

    context = FlowRunContext.get()
    client = getattr(context, "client", None)
    url = str(getattr(client, "api_url", "") or "").rstrip("/")
    if dask_address() is None or PREFECT_API_URL.value() or not url.startswith("http://127.0.0.1"):
        yield
        return
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


_ONE_AT_A_TIME = threading.Lock()


@contextmanager
def one_task_at_a_time() -> Iterator[None]:
    """Hold this process's lock while a task that seeds torch's global generator runs: two threads
    of one process (a Dask worker with several threads) would otherwise interleave their draws."""
    with _ONE_AT_A_TIME:
        yield


__all__ = [
    "DASK_ADDRESS_ENV",
    "DASK_WORKERS_ENV",
    "FanOutTaskRunner",
    "LOCAL_CLUSTER",
    "dask_address",
    "fan_out_task_runner",
    "local_cluster_kwargs",
    "one_task_at_a_time",
    "workers_use_this_api",
]
