"""Traffic batch files as `ebmops monitor` reads them, for the monitor's tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_batch(folder: Path, name: str, frame: pd.DataFrame, feedback=None) -> Path:
    """`frame` with a minute-by-minute `timestamp` column first (and a nullable `feedback` column when
    given), as Parquet or CSV by the name's suffix."""
    out = frame.copy()
    out.insert(0, "timestamp", pd.date_range("2024-05-01", periods=len(out), freq="min", tz="UTC"))
    if feedback is not None:
        out["feedback"] = pd.array(feedback, dtype="Int8")
    path = Path(folder) / name
    if name.endswith(".csv"):
        out.to_csv(path, index=False)
    else:
        out.to_parquet(path, index=False)
    return path
