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
