"""Where things live. Nothing here runs at import: callers ask for paths when they need them."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".ebmops"


def ebmops_home() -> Path:
    return Path(os.environ.get("EBMOPS_HOME", DEFAULT_HOME)).expanduser().resolve()


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else sqlite under `$EBMOPS_HOME` (the embedded default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ebmops_home() / 'mlflow.db'}"


def artifact_root() -> Path:
    return ebmops_home() / "artifacts"


def runs_dir() -> Path:
    """Working files of pipeline runs (data splits, detectors, reports) before and after logging."""
    return ebmops_home() / "runs"


def configure_torch_threads() -> int:
    """Intra-op threads for torch, from `EBMOPS_TORCH_THREADS` (default 1).

    The energies are small MLPs: one thread is fastest for them, and several OpenMP threads on a
    busy 2-core machine make each tiny op many times slower.
    """
    import torch

    threads = int(os.environ.get("EBMOPS_TORCH_THREADS", "1"))
    torch.set_num_threads(threads)
    return threads
