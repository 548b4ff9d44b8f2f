"""Flow: score new traffic batches with the champion, track post-launch statistics, alarm, retrain.

A traffic batch is one Parquet or CSV file in a folder (a `timestamp` column, a text column or the
model's vector columns, an optional `feedback` column: 1 = a person marked the input as a problem).
The `monitor` flow

1. resolves the model (default `models:/ebm-guard@champion`) to a fixed version and loads it
   (`flows.guard.guard.Guard.load`); a missing alias or version is a one-line `LookupError`;
2. reads the monitoring state `$EBMOPS_HOME/monitoring/<model>-v<version>.json` (processed file
   names with content hashes, per-batch counts, the energies of the last window, the sequential
   detector's state, quarantined and skipped files, batches whose MLflow write or alarm is pending);
   every file not yet seen (by content hash) is new, in name order;
3. first finishes what an interrupted pass left pending (see "Crash safety");
4. per new file: reads and checks it, scores it (energy, conformal p-value, flag), computes the
   batch and sliding-window statistics (`evaluation.monitoring`), adds the rows that carry
   feedback to the model's feedback store (`flows.monitoring.feedback_store`: training data for the
   next retrain), updates the sequential detector,
   logs the figures to MLflow (one monitoring run per model version and state, reused across
   invocations through its tags, step = batch index) and saves the state atomically;
5. on an alarm emits the Prefect event `ebmops.monitor.alarm` and, when `trigger_retraining` is set,
   starts the retraining deployment;
6. returns the post-launch summary (`PostLaunchSummary.to_dict()`), a section for the report, plus
   "actions", "quarantined", "notes", "reconciled" and "alarm" (any alarm raised in this pass).

Bad batch files are quarantined, never fatal. A file that cannot be used (not Parquet/CSV, damaged,
empty, no rows, a missing column, non-numeric or NaN/infinite values, values so large the model's
energy is not finite, bad feedback or timestamps, ...) is moved to `<traffic folder>/quarantine/`
(a sibling file `<name>.reason.txt` holds the reason; a name already taken there gets the first 12
hex digits of the file's sha256 before its suffix), recorded under "quarantined" in the state (by
content hash, so the same bytes are never retried), reported in one line naming the file and the
reason, and the pass goes on with the next file. When the file cannot be moved (read-only folder) it
is only recorded, and skipped by its hash from then on.

Files are tracked by content. A file whose name was processed before but whose bytes changed (rows
appended or edited) is read again and only its rows not yet counted are scored, as a new batch: each
processed batch keeps the sha256 of each of its rows (file `<state>.rows/<batch>.json`), and the new
file's rows are matched against the rows already counted under that name as a multiset (a row that
appears twice counts twice). A changed file with no new rows is recorded as skipped. A changed file
whose earlier rows have no recorded hashes (processed by an older version) is refused with a message
naming it, and recorded, so it is never counted twice. A file with the bytes of an already processed
file under another name is skipped.

Crash safety (kill -9 anywhere). Per batch: (a) the row hashes are written, (b) the state is saved
with the batch counted and a "pending" entry holding its metrics (step = its batch index, fixed
here), (c) the metrics are logged to MLflow, (d) the state is saved with the pending entry cleared
(kept until the alarm event is emitted for an alarming batch). The next pass starts by reconciling
the pending entries: a step already in the run's metric history (`registry.metric_steps`) is not
logged again, a missing one is logged, an alarm not yet emitted is emitted. A crash before (b)
leaves the file unprocessed, so it is scored again in full; no input is counted twice, no step is
logged twice; the feedback store's add (before (a)) is idempotent per input and batch, so a batch
scored again adds no feedback row twice. Fault points (`flows.faults.fault_point`):
monitor.after_feedback_add, monitor.after_rows_write,
monitor.after_pending_save, monitor.after_mlflow_log, monitor.after_state_save,
monitor.after_alarm_emit, monitor.after_quarantine_record, monitor.after_quarantine_move (a
quarantine is recorded in the state before the file is moved; the next pass finishes the move).

The step functions here are plain functions (tested without Prefect); the flow only wires them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from evaluation.files import file_sha256, write_json_atomic, write_text_atomic
from evaluation.monitoring import (
    BatchRecord,
    PostLaunchSummary,
    SequentialDetector,
    add_counts,
    batch_stats,
    feedback_counts,
    feedback_stats_from_counts,
    flag_rate_test,
)
from flows import settings
from flows.faults import fault_point
from flows.guard.names import DEFAULT_CHAMPION_URI, DEFAULT_MODEL_NAME
from flows.monitoring.triage import format_triage, summary_entry, triage_dir, write_batch_triage

if TYPE_CHECKING:
    import pandas as pd

    from flows.guard.guard import Guard

DEFAULT_MODEL_URI = DEFAULT_CHAMPION_URI
ALARM_EVENT = "ebmops.monitor.alarm"
MONITORING_EXPERIMENT = f"{DEFAULT_MODEL_NAME}-monitoring"
TAG_KIND = "ebmops.kind"
TAG_MODEL = "ebmops.monitoring.model"
TAG_VERSION = "ebmops.monitoring.version"
TAG_STATE = "ebmops.monitoring.state_id"
BATCH_SUFFIXES = (".parquet", ".pq", ".csv")
QUARANTINE_DIR = "quarantine"
STATE_FORMAT = 2
READABLE_STATE_FORMATS = (1, 2)  # format 1 (no quarantine, no row hashes, no pending) is upgraded on load
STEP_KEY = "batch.n"  # always logged (a finite count): its metric history tells which steps are in MLflow
ROW_HASH_HEX = 32  # 128 bits of each row's sha256
MOVE_INTERRUPTED = "interrupted before the move"  # a quarantine recorded, its move not yet done


@dataclass(frozen=True)
class MonitorConfig:
    model_uri: str = DEFAULT_MODEL_URI
    expected_run_length: float = 150.0
    window: int = 10  # batches pooled in the sliding window (the current one included)
    alpha: float | None = None  # None: the detector's calibrated alpha
    confidence: float = 0.95
    text_column: str = "text"
    timestamp_column: str = "timestamp"  # used when present
    feedback_column: str = "feedback"  # used when present
    trigger_retraining: bool = False
    retrain_deployment: str = "retrain/nightly-retrain"  # flows/ops/deployments.py: flow "retrain"
    experiment_name: str = MONITORING_EXPERIMENT

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class BadBatchError(ValueError):
    """A batch file the monitor cannot use; the message says why (without the path). The flow
    quarantines the file and goes on."""


def one_line(error: BaseException | str, limit: int = 500) -> str:
    """An error as one line: type name for bare errors, newlines folded, long text cut."""
    text = str(error) if not isinstance(error, str) else error
    if isinstance(error, BaseException) and not text:
        text = type(error).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _without_path(message: str, path: Path) -> str:
    for prefix in (f"{path}: ", f"{path.name}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


# --- the model ----------------------------------------------------------------------------------


def resolve_model(model_uri: str) -> tuple[str, str]:
    """(name, version) of an existing registered version; one-line `LookupError` for a missing
    model, alias or version, `ValueError` for a URI that is not models:/<name>@<alias> or /<version>."""
    from flows.guard import registry

    name, version = registry.resolve_model_uri(model_uri)
    registry.configure_tracking()
    try:
        registry.get_version(name, version)
    except registry.RegistryError as error:
        raise LookupError(
            f"model {name!r} has no version {version!r} ({model_uri}): {one_line(error.message, 200)}"
        ) from None
    return name, version


# --- state --------------------------------------------------------------------------------------


def state_path(model_name: str, version: str) -> Path:
    return settings.ebmops_home() / "monitoring" / f"{model_name}-v{version}.json"


def rows_dir(state_file: Path) -> Path:
    """Where the row hashes of each processed batch live: `<state>.rows/`."""
    return state_file.with_name(f"{state_file.stem}.rows")


def new_state(model_name: str, version: str, config: MonitorConfig) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "model_name": model_name,
        "model_version": version,
        "state_id": uuid.uuid4().hex,
        # [{"name", "sha256", "batch", "n", "n_flagged", "alarm", "processed_at", "rows_file",
        #   "n_rows_in_file", "changed_from"}]
        "processed": [],
        "quarantined": [],  # [{"name", "sha256", "reason", "moved_to", "at"}]
        "skipped": [],  # [{"name", "sha256", "reason", "at"}]: changed files with no new rows, refused ones
        "pending": [],  # [{"batch", "source", "metrics", "mlflow_logged", "alarm", "alarm_sent", "record_json"}]
        "window_energies": [],  # energies of the last `window - 1` batches
        "feedback_counts": {},
        "sequential": SequentialDetector(config.expected_run_length).state_dict(),
        "mlflow_run_id": None,
    }


def load_state(path: Path, model_name: str, version: str, config: MonitorConfig) -> dict[str, Any]:
    if not path.exists():
        return new_state(model_name, version, config)
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: monitoring state unreadable ({one_line(error, 200)}); move it away to start afresh") from None
    if not isinstance(state, dict) or state.get("format") not in READABLE_STATE_FORMATS:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: monitoring state format {found}, expected {STATE_FORMAT}")
    state["format"] = STATE_FORMAT
    for key in ("quarantined", "skipped", "pending"):
        state.setdefault(key, [])
    state.setdefault("state_id", None)  # format 1: the run is found by model and version only
    configured = float(config.expected_run_length)
    if float(state["sequential"]["expected_run_length"]) != configured:
        # A new target applies from now on; the statistic so far is kept.
        state["sequential"]["expected_run_length"] = configured
    return state


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Atomic: write a temporary file in the same folder, then rename it over the old one."""
    return write_json_atomic(path, state)


def seen_digests(state: dict[str, Any]) -> set[str]:
    """Content hashes the monitor never looks at again: processed, quarantined, skipped."""
    return {p["sha256"] for key in ("processed", "quarantined", "skipped") for p in state.get(key, [])}


def find_new_files(directory: Path, state: dict[str, Any]) -> list[tuple[Path, str]]:
    """Batch files (by name order) whose content hash is not yet processed, quarantined or skipped; a
    file whose content was already seen under another name is skipped too."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"traffic folder not found: {directory}")
    seen = seen_digests(state)
    new = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in BATCH_SUFFIXES or not path.is_file():
            continue
        try:
            digest = file_sha256(path)
        except OSError as error:  # unreadable: quarantined by the pass (by name, no digest)
            digest = "unreadable:" + hashlib.sha256(f"{path.name}:{one_line(error)}".encode()).hexdigest()
        if digest in seen:
            continue
        new.append((path, digest))
        seen.add(digest)
    return new


# --- reading one batch --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredBatch:
    source: str
    energies: np.ndarray
    p_values: np.ndarray
    flagged: np.ndarray
    feedback: np.ndarray  # float: 1, 0 or NaN (no feedback)
    first_timestamp: str | None
    last_timestamp: str | None
    row_hashes: list[str] = field(default_factory=list)  # of the rows scored, in file order
    n_rows_in_file: int | None = None


def _columns_of(path: Path) -> list[str]:
    import pandas as pd

    if path.suffix.lower() == ".csv":
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    import pyarrow.parquet as pq

    return [str(c) for c in pq.read_schema(path).names]


def _canonical(value: Any) -> str:
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return "<NA>"
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else repr(float(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return repr(float(value))  # 3 in a CSV and 3.0 in Parquet are the same value
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return f"{type(value).__name__}:{value}"


def row_hashes(frame: pd.DataFrame) -> list[str]:
    """The sha256 of each row's values (column names included), cut to ROW_HASH_HEX hex digits."""
    header = "\x1e".join(map(str, frame.columns))
    out = []
    for values in frame.itertuples(index=False, name=None):
        text = header + "\x1d" + "\x1f".join(_canonical(v) for v in values)
        out.append(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:ROW_HASH_HEX])
    return out


def _shown(items: list[int], n: int = 5) -> str:
    return "[" + ", ".join(map(str, items[:n])) + (", ..." if len(items) > n else "") + "]"


def read_batch(path: Path, guard: Guard, config: MonitorConfig) -> pd.DataFrame:
    """The batch as load_table returns it (text or the guard's vector columns, then timestamp and
    feedback when present), checked: rows present, text non-empty, vectors finite. Every problem with
    the file is a `BadBatchError` (one line, no path)."""
    try:
        return _read_batch(path, guard, config)
    except BadBatchError:
        raise
    except Exception as error:  # noqa: BLE001 - pandas/pyarrow raise many types for a bad file
        message = _without_path(one_line(error), path)
        if not isinstance(error, ValueError) or type(error).__name__ not in ("DataSourceError", "ValueError"):
            message = f"{type(error).__name__}: {message}"
        raise BadBatchError(f"cannot read the batch: {message}") from error


def _read_batch(path: Path, guard: Guard, config: MonitorConfig) -> pd.DataFrame:
    from flows.data.text_data import load_table

    if path.stat().st_size == 0:
        raise BadBatchError("the file is empty (0 bytes)")
    columns = _columns_of(path)
    optional = {
        "timestamp_column": config.timestamp_column if config.timestamp_column in columns else None,
        "feedback_column": config.feedback_column if config.feedback_column in columns else None,
    }
    if config.text_column in columns:
        if guard.embedder is None:
            raise BadBatchError(
                f"has a {config.text_column!r} column but model {guard.name} v{guard.version} takes "
                f"vectors ({guard.detector.n_features_in_} columns), not text"
            )
        frame = load_table(path, text_column=config.text_column, **optional)
        bad = [i for i, t in enumerate(frame["text"].tolist()) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise BadBatchError(f"empty or missing text in data rows {_shown(bad)}")
    else:
        if guard.embedder is not None and not set(guard.feature_names) <= set(columns):
            raise BadBatchError(
                f"no {config.text_column!r} column (model {guard.name} v{guard.version} takes text); "
                f"columns: {columns[:10]}"
            )
        names = guard.feature_names
        missing = [c for c in names if c not in columns]
        if missing:
            raise BadBatchError(
                f"{len(missing)} of the model's {len(names)} vector columns missing, e.g. {missing[:5]}"
            )
        frame = load_table(path, vector_columns=list(names), **optional)
        x = frame[list(names)].to_numpy(dtype=np.float64)
        finite = np.isfinite(x)
        if not finite.all():
            rows = np.flatnonzero(~finite.all(axis=1)).tolist()
            cols = [names[j] for j in np.flatnonzero(~finite.all(axis=0))]
            raise BadBatchError(
                f"NaN, missing or infinite vector values in {len(rows)} data row(s) {_shown(rows)}, "
                f"columns {cols[:5]}"
            )
    if len(frame) == 0:
        raise BadBatchError("the batch has no rows")
    return frame


def score_frame(frame: pd.DataFrame, guard: Guard, source: str, rows: list[int] | None = None) -> ScoredBatch:
    """Score the rows of a checked batch (all, or the data rows `rows`): energies, p-values, flags.
    A non-finite energy (e.g. values like 1e308) is a `BadBatchError` naming the data rows."""
    from ebm_core.errors import NonFiniteError

    detector = guard.detector
    hashes = row_hashes(frame)
    n_in_file = len(frame)
    if rows is not None:
        frame = frame.iloc[rows].reset_index(drop=True)
        hashes = [hashes[i] for i in rows]
    else:
        rows = list(range(len(frame)))
    if "text" in frame:
        from flows.data.featurize import embed_with_cache

        x, _ = embed_with_cache(frame["text"].tolist(), guard.embedder, progress=False)
    else:
        x = frame[list(guard.feature_names)].to_numpy(dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            assessment = detector.assess(x)
    except (NonFiniteError, FloatingPointError, OverflowError):
        bad = _non_finite_rows(detector, x)
        raise BadBatchError(
            f"the model's energy is NaN or infinite for data row(s) {_shown([rows[i] for i in bad])} "
            f"(values too large for the model: largest |value| {float(np.max(np.abs(x))):.3g})"
        ) from None
    feedback = (
        frame["feedback"].to_numpy(dtype=np.float64, na_value=np.nan)
        if "feedback" in frame
        else np.full(len(frame), np.nan)
    )
    first = last = None
    if "timestamp" in frame and frame["timestamp"].notna().any():
        first, last = frame["timestamp"].min().isoformat(), frame["timestamp"].max().isoformat()
    return ScoredBatch(
        source=source,
        energies=assessment.energy,
        p_values=assessment.p_value,
        flagged=assessment.is_ood,
        feedback=feedback,
        first_timestamp=first,
        last_timestamp=last,
        row_hashes=hashes,
        n_rows_in_file=n_in_file,
    )


def _non_finite_rows(detector, x: np.ndarray, limit: int = 5) -> list[int]:
    """The first rows whose energy is not finite (scored in chunks, then row by row)."""
    bad: list[int] = []
    chunk = 256
    for start in range(0, len(x), chunk):
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                detector.score(x[start : start + chunk])
            continue
        except Exception:  # noqa: BLE001 - find the rows
            pass
        for i in range(start, min(start + chunk, len(x))):
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    detector.score(x[i : i + 1])
            except Exception:  # noqa: BLE001
                bad.append(i)
                if len(bad) >= limit:
                    return bad
    return bad


def score_batch(path: Path, guard: Guard, config: MonitorConfig) -> ScoredBatch:
    """Read, check and score one whole batch file (`BadBatchError` when it cannot be used)."""
    return score_frame(read_batch(path, guard, config), guard, path.name)


# --- changed files --------------------------------------------------------------------------------


def counted_rows(state: dict[str, Any], state_file: Path, name: str) -> Counter | None:
    """The row hashes already counted under file name `name` (a multiset), or None when a batch of
    that name has no recorded row hashes (processed by an older version)."""
    counted: Counter = Counter()
    for entry in state["processed"]:
        if entry["name"] != name:
            continue
        rows_file = entry.get("rows_file")
        if not rows_file:
            return None
        try:
            counted.update(json.loads((rows_dir(state_file) / rows_file).read_text())["rows"])
        except (OSError, ValueError, KeyError):
            return None
    return counted


def new_row_positions(hashes: list[str], counted: Counter) -> list[int]:
    """Positions of the rows not yet counted: each counted hash absorbs one occurrence."""
    left = Counter(counted)
    new = []
    for i, h in enumerate(hashes):
        if left[h] > 0:
            left[h] -= 1
        else:
            new.append(i)
    return new


# --- one batch: statistics --------------------------------------------------------------------------


def update_with_batch(
    state: dict[str, Any], scored: ScoredBatch, digest: str, guard: Guard, config: MonitorConfig
) -> BatchRecord:
    """Batch and window statistics, detector update; mutates `state` (not yet saved)."""
    detector = guard.detector
    alpha = float(config.alpha if config.alpha is not None else detector.alpha_)
    cal = detector.calibration_energies_
    threshold = float(detector.threshold_)
    index = len(state["processed"])
    stats = batch_stats(scored.energies, cal, threshold, alpha, config.confidence)
    previous = [np.asarray(e, dtype=np.float64) for e in state["window_energies"]]
    window_batches = previous + [scored.energies]
    window = batch_stats(np.concatenate(window_batches), cal, threshold, alpha, config.confidence)
    sequential = SequentialDetector.from_state(state["sequential"])
    alarm = sequential.update(scored.p_values)
    counts = feedback_counts(scored.flagged, scored.feedback)
    state["feedback_counts"] = add_counts(state["feedback_counts"], counts)
    state["sequential"] = sequential.state_dict()
    keep = max(config.window - 1, 0)
    state["window_energies"] = [e.tolist() for e in window_batches[-keep:]] if keep else []
    state["processed"].append(
        {
            "name": scored.source,
            "sha256": digest,
            "batch": index,
            "n": stats.n,
            "n_flagged": stats.flag_rate.k,
            "alarm": alarm,
            "processed_at": time.time(),
            # per batch, so the monitoring report can draw problem rates over time
            "feedback_counts": counts,
            "first_timestamp": scored.first_timestamp,
            "last_timestamp": scored.last_timestamp,
        }
    )
    return BatchRecord(
        index=index,
        source=scored.source,
        stats=stats,
        window=window,
        window_batches=len(window_batches),
        feedback=feedback_stats_from_counts(counts, config.confidence),
        sequential_statistic=sequential.statistic,
        alarm=alarm,
        first_timestamp=scored.first_timestamp,
        last_timestamp=scored.last_timestamp,
    )


def batch_metrics(record: BatchRecord) -> dict[str, float]:
    """The figures logged to MLflow at step = batch index (finite values only)."""
    metrics = {
        "batch.n": record.stats.n,
        "batch.flag_rate": record.stats.flag_rate.rate,
        "batch.flag_rate_ci_low": record.stats.flag_rate.ci_low,
        "batch.flag_rate_ci_high": record.stats.flag_rate.ci_high,
        "batch.flag_rate_pvalue": record.stats.flag_rate.p_value,
        "batch.ks_statistic": record.stats.ks_statistic,
        "batch.ks_pvalue": record.stats.ks_pvalue,
        "batch.wasserstein": record.stats.wasserstein,
        "batch.mean_p_value": record.stats.mean_p_value,
        "batch.mean_energy": record.stats.mean_energy,
        "window.flag_rate": record.window.flag_rate.rate,
        "window.flag_rate_pvalue": record.window.flag_rate.p_value,
        "window.ks_statistic": record.window.ks_statistic,
        "window.wasserstein": record.window.wasserstein,
        "window.mean_p_value": record.window.mean_p_value,
        "sequential.statistic": record.sequential_statistic,
        "sequential.alarm": float(record.alarm),
        "feedback.n": record.feedback.n_with_feedback,
    }
    for part in ("accepted", "flagged"):
        rate = getattr(record.feedback, part)
        if rate.rate is not None:
            metrics[f"feedback.{part}_problem_rate"] = rate.rate
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


# --- MLflow, events, retraining --------------------------------------------------------------------


def monitoring_run_id(guard: Guard, config: MonitorConfig, known_run_id: str | None, state_id: str | None = None) -> str:
    """The monitoring run of this model version and state: the one in the state, else found by tags,
    else new. A new state (lost or moved away) gets a new run, so its steps never collide with the
    old run's."""
    from flows.guard import registry

    registry.configure_tracking()
    if known_run_id and registry.run_exists(known_run_id):
        return known_run_id
    # a deleted run or one on a different tracking server, or a crash before the state was saved
    tags = {TAG_MODEL: guard.name, TAG_VERSION: guard.version}
    if state_id:
        tags[TAG_STATE] = state_id
    found = registry.find_run(config.experiment_name, tags)
    if found:
        return found
    run_id = registry.create_run(
        config.experiment_name,
        run_name=f"monitor-{guard.name}-v{guard.version}",
        tags={TAG_KIND: "monitoring", **tags},
    )
    registry.log_params(
        run_id, {"model_uri": guard.uri, "expected_run_length": config.expected_run_length, "window": config.window}
    )
    registry.finish_run(run_id)
    return run_id


def log_batch_to_mlflow(run_id: str, record: BatchRecord | int, metrics: dict[str, float] | None = None) -> bool:
    """Log a batch's metrics at step = its batch index unless that step is already in the run (a
    rerun after a crash between the MLflow write and the state save); True when written now."""
    from flows.guard import registry

    step = record if isinstance(record, int) else record.index
    if metrics is None:
        metrics = batch_metrics(record)
    if step in registry.metric_steps(run_id, STEP_KEY):
        return False
    registry.log_metrics(run_id, metrics, step=step)
    return True


def emit_alarm(guard: Guard, record: BatchRecord, config: MonitorConfig) -> str | None:
    from prefect.events import emit_event

    event = emit_event(
        event=ALARM_EVENT,
        resource={"prefect.resource.id": f"ebmops.model.{guard.name}.{guard.version}"},
        payload={
            "model_name": guard.name,
            "model_version": guard.version,
            "batch": record.index,
            "source": record.source,
            "flag_rate": record.stats.flag_rate.rate,
            "flag_rate_pvalue": record.stats.flag_rate.p_value,
            "ks_statistic": record.stats.ks_statistic,
            "mean_p_value": record.stats.mean_p_value,
            "expected_run_length": config.expected_run_length,
        },
    )
    return None if event is None else str(event.id)


def trigger_retraining(config: MonitorConfig) -> str:
    """Start the retraining deployment without waiting; a clear message when it cannot."""
    from prefect.deployments import run_deployment

    try:
        flow_run = run_deployment(config.retrain_deployment, timeout=0)
    except Exception as error:  # no server, no such deployment, ...
        return (
            f"retraining not started: deployment {config.retrain_deployment!r} could not be run "
            f"({type(error).__name__}: {error}); register it with `ebmops deploy` on a Prefect server"
        )
    return f"retraining started: flow run {flow_run.id} of {config.retrain_deployment}"


# --- quarantine -------------------------------------------------------------------------------------


def quarantine_file(path: Path, digest: str, reason: str) -> tuple[str | None, str | None]:
    """Move `path` into `<its folder>/quarantine/` with a `<name>.reason.txt` beside it; returns
    (where it went relative to the traffic folder, None) or (None, why it could not be moved)."""
    folder = path.parent / QUARANTINE_DIR
    try:
        folder.mkdir(exist_ok=True)
        target = folder / path.name
        if target.exists():
            target = folder / f"{path.stem}.{digest.split(':')[-1][:12]}{path.suffix}"
        if target.exists():
            target = folder / f"{path.stem}.{uuid.uuid4().hex[:8]}{path.suffix}"
        os.replace(path, target)
    except OSError as error:
        return None, one_line(error, 200)
    try:
        write_text_atomic(target.with_name(target.name + ".reason.txt"), f"{path.name}: {reason}\n")
    except OSError:
        pass  # the state holds the reason too
    return f"{QUARANTINE_DIR}/{target.name}", None


def finish_quarantine_moves(state: dict[str, Any], directory: Path) -> bool:
    """Finish the quarantine moves an interrupted pass recorded but did not finish: move the file if
    it is still in `directory`, or note where the interrupted pass put it. True when the state changed."""
    changed = False
    for entry in state["quarantined"]:
        if entry.get("moved_to") or entry.get("move_error") != MOVE_INTERRUPTED:
            continue
        source = directory / entry["name"]
        if source.is_file() and file_sha256(source) == entry["sha256"]:
            moved_to, move_error = quarantine_file(source, entry["sha256"], entry["reason"])
            entry.update(moved_to=moved_to, move_error=move_error)
            changed = True
            continue
        name = Path(entry["name"])
        folder = directory / QUARANTINE_DIR
        candidates = sorted(folder.glob(f"{name.stem}*{name.suffix}")) if folder.is_dir() else []
        for candidate in candidates:
            if candidate.is_file() and file_sha256(candidate) == entry["sha256"]:
                entry.update(moved_to=f"{QUARANTINE_DIR}/{candidate.name}", move_error=None)
                changed = True
                break
    return changed


def quarantine_message(entry: dict[str, Any]) -> str:
    where = f"moved to {entry['moved_to']}" if entry.get("moved_to") else f"left in place, not moved: {entry.get('move_error')}"
    return f"quarantined {entry['name']} ({where}): {entry['reason']}"


# --- the flow -----------------------------------------------------------------------------------


def summarise(state: dict[str, Any], guard: Guard, config: MonitorConfig, records: list[BatchRecord]) -> PostLaunchSummary:
    detector = guard.detector
    alpha = float(config.alpha if config.alpha is not None else detector.alpha_)
    n_inputs = sum(p["n"] for p in state["processed"])
    n_flagged = sum(p["n_flagged"] for p in state["processed"])
    counts = state["feedback_counts"] or feedback_counts(np.zeros(0, dtype=bool), [])
    return PostLaunchSummary(
        model_name=guard.name,
        model_version=guard.version,
        alpha=alpha,
        threshold=float(detector.threshold_),
        n_calibration=int(len(detector.calibration_energies_)),
        n_batches=len(state["processed"]),
        n_inputs=n_inputs,
        overall_flag_rate=flag_rate_test(n_flagged, n_inputs, alpha, config.confidence) if n_inputs else None,
        overall_feedback=feedback_stats_from_counts(counts, config.confidence),
        expected_run_length=float(config.expected_run_length),
        sequential=state["sequential"],
        alarms=list(state["sequential"]["alarms"]),
        new_batches=records,
        mlflow_run_id=state.get("mlflow_run_id"),
    )


@dataclass
class BatchOutcome:
    """What happened to one new file: "scored" (record, state), "quarantined" or "skipped" (reason)."""

    kind: str
    state: dict[str, Any]
    record: BatchRecord | None = None
    reason: str | None = None
    note: str | None = None
    triage: dict[str, Any] | None = None  # the first flagged rows with their nearest training examples


def _finish_pending(state: dict[str, Any], state_file: Path, batch: int, **marks: bool) -> None:
    for entry in state["pending"]:
        if entry["batch"] == batch:
            entry.update(marks)
    state["pending"] = [p for p in state["pending"] if not (p["mlflow_logged"] and p["alarm_sent"])]
    save_state(state_file, state)


def store_feedback(path: Path, digest: str, guard: Guard, frame: pd.DataFrame, scored: ScoredBatch) -> str | None:
    """Add the scored rows that carry feedback to the model's feedback store
    (`flows.monitoring.feedback_store`), batch id `<file name>@<first 16 hex digits of its sha256>`;
    returns a note when the store refuses them (the batch is still counted), else None."""
    from flows.monitoring.feedback_store import FeedbackStore, FeedbackStoreError

    if "feedback" not in frame.columns or not frame["feedback"].notna().any():
        return None
    columns = ["text"] if "text" in frame.columns else list(guard.feature_names)
    try:
        FeedbackStore.for_model(guard.name).add_batch(
            frame, input_columns=columns, batch_id=f"{path.name}@{digest.split(':')[-1][:16]}",
            source=path.name, model_version=guard.version, is_ood=scored.flagged,
        )  # fmt: skip
    except FeedbackStoreError as error:
        return f"feedback of {path.name} not stored: {one_line(error, 300)}"
    return None


@task(name="monitor-batch", cache_policy=NO_CACHE)
def process_batch(
    path: Path, digest: str, guard: Guard, config: MonitorConfig, state: dict, state_file: Path
) -> BatchOutcome:
    """Read and check the file, pick its rows not yet counted, score, update the statistics, save the
    state with the batch pending, log to MLflow, save again. A bad file comes back as "quarantined"
    (nothing saved here), a changed file without new rows as "skipped"."""
    state = copy.deepcopy(state)
    note = None
    try:
        frame = read_batch(path, guard, config)
        rows = None
        if any(p["name"] == path.name for p in state["processed"]):
            counted = counted_rows(state, state_file, path.name)
            if counted is None:
                return BatchOutcome(
                    "skipped", state,
                    reason=(
                        f"refused {path.name}: its content changed since it was processed, and its earlier rows "
                        "have no recorded hashes (processed by an older version), so new rows cannot be told "
                        "from counted ones; put the new rows in a new file"
                    ),
                )  # fmt: skip
            rows = new_row_positions(row_hashes(frame), counted)
            n_old = len(frame) - len(rows)
            if not rows:
                return BatchOutcome(
                    "skipped", state,
                    reason=f"{path.name} changed since it was processed but holds no new rows ({len(frame)} rows, all counted)",
                )  # fmt: skip
            note = (
                f"{path.name} changed since it was processed: {n_old} of its {len(frame)} rows already counted, "
                f"{len(rows)} new row(s) scored as batch {len(state['processed'])}"
            )
        scored = score_frame(frame, guard, path.name, rows)
    except BadBatchError as error:
        return BatchOutcome("quarantined", state, reason=one_line(error))

    index = len(state["processed"])
    previous_digest = next((p["sha256"] for p in reversed(state["processed"]) if p["name"] == path.name), None)
    # Feedback rows go into the store before the batch is counted (state save (b)): a crash in between
    # scores the file again, and the store's add is idempotent per (input, batch id).
    feedback_note = store_feedback(path, digest, guard, frame if rows is None else frame.iloc[rows].reset_index(drop=True), scored)
    fault_point("monitor.after_feedback_add")
    if feedback_note:
        note = f"{note}; {feedback_note}" if note else feedback_note
    record = update_with_batch(state, scored, digest, guard, config)
    rows_file = f"{index:06d}.json"
    write_json_atomic(rows_dir(state_file) / rows_file, {"name": path.name, "sha256": digest, "rows": scored.row_hashes})
    fault_point("monitor.after_rows_write")
    triage = write_batch_triage(
        state_file, index, path.name, guard, frame if rows is None else frame.iloc[rows].reset_index(drop=True),
        scored.flagged, scored.energies, rows,
    )
    state["processed"][-1].update(
        {"rows_file": rows_file, "n_rows_in_file": scored.n_rows_in_file, "changed_from": previous_digest}
    )
    metrics = batch_metrics(record)
    state["pending"].append(
        {
            "batch": index,
            "source": path.name,
            "metrics": metrics,
            "mlflow_logged": False,
            "alarm": bool(record.alarm),
            "alarm_sent": not record.alarm,
            # allow_nan: a statistic may be NaN; kept as a string so the state stays strict JSON
            "record_json": json.dumps(record.to_dict()) if record.alarm else None,
        }
    )
    save_state(state_file, state)
    fault_point("monitor.after_pending_save")
    log_batch_to_mlflow(state["mlflow_run_id"], index, metrics)
    fault_point("monitor.after_mlflow_log")
    _finish_pending(state, state_file, index, mlflow_logged=True)
    fault_point("monitor.after_state_save")
    return BatchOutcome(
        "scored", state, record=record, note=note,
        triage=summary_entry(triage, triage_dir(state_file) / f"{index:06d}.json"),
    )


def _alarm(guard: Guard, record: BatchRecord, config: MonitorConfig, logger, actions: list[str], suffix: str = "") -> None:
    event_id = emit_alarm(guard, record, config)
    message = f"alarm on batch {record.index} ({record.source}){suffix}; event {ALARM_EVENT} {event_id}"
    logger.warning(message)
    actions.append(message)
    if config.trigger_retraining:
        outcome = trigger_retraining(config)
        logger.warning(outcome)
        actions.append(outcome)


def reconcile_pending(
    state: dict[str, Any], state_file: Path, guard: Guard, config: MonitorConfig, logger, actions: list[str]
) -> list[dict[str, Any]]:
    """Finish the batches an interrupted pass left pending: log a step MLflow does not hold yet,
    emit an alarm not yet emitted. Returns what was done, one dict per batch."""
    done = []
    for entry in list(state["pending"]):
        logged_now = False
        if not entry["mlflow_logged"]:
            logged_now = log_batch_to_mlflow(state["mlflow_run_id"], int(entry["batch"]), entry["metrics"])
            _finish_pending(state, state_file, entry["batch"], mlflow_logged=True)
        alarm_now = False
        if not entry["alarm_sent"]:
            record = BatchRecord.from_dict(json.loads(entry["record_json"]))
            _alarm(guard, record, config, logger, actions, suffix=" (from an interrupted pass)")
            alarm_now = True
            _finish_pending(state, state_file, entry["batch"], alarm_sent=True)
        done.append(
            {"batch": entry["batch"], "source": entry["source"], "mlflow_logged_now": logged_now, "alarm_emitted_now": alarm_now}
        )
        logger.info(
            "batch %s (%s) from an interrupted pass: MLflow step %s, alarm %s",
            entry["batch"], entry["source"], "logged now" if logged_now else "already there",
            "emitted now" if alarm_now else "none pending",
        )  # fmt: skip
    return done


@flow(name="monitor", log_prints=True)
def monitor(directory: Path, config: MonitorConfig | None = None) -> dict[str, Any]:
    """One monitoring pass over `directory`; returns the post-launch summary as a dict, with the
    alarm events and retraining messages under "actions", the files quarantined in this pass under
    "quarantined", notes on changed or skipped files under "notes", batches an interrupted pass left
    pending and finished now under "reconciled", and "alarm" (True when this pass raised or emitted
    an alarm)."""
    from flows.guard.guard import Guard

    config = config or MonitorConfig()
    settings.configure_torch_threads()
    logger = get_run_logger()
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"traffic folder not found: {directory}")
    name, version = resolve_model(config.model_uri)
    guard = Guard.load(f"models:/{name}/{version}")
    path = state_path(guard.name, guard.version)
    state = load_state(path, guard.name, guard.version, config)
    run_id = monitoring_run_id(guard, config, state.get("mlflow_run_id"), state.get("state_id"))
    if run_id != state.get("mlflow_run_id") or not path.exists():
        state["mlflow_run_id"] = run_id
        save_state(path, state)
    actions: list[str] = []
    reconciled = reconcile_pending(state, path, guard, config, logger, actions)
    if finish_quarantine_moves(state, directory):
        save_state(path, state)
    new_files = find_new_files(directory, state)
    logger.info("model %s v%s: %d new batch file(s) in %s", guard.name, guard.version, len(new_files), directory)
    records, quarantined, notes, triage = [], [], [], []
    for file_path, digest in new_files:
        outcome = process_batch(file_path, digest, guard, config, state, path)
        if outcome.kind == "quarantined":
            entry = {
                "name": file_path.name, "sha256": digest, "reason": outcome.reason,
                "moved_to": None, "move_error": MOVE_INTERRUPTED, "at": time.time(),
            }  # fmt: skip
            state["quarantined"].append(entry)  # recorded first: never retried, even after a crash
            save_state(path, state)
            fault_point("monitor.after_quarantine_record")
            moved_to, move_error = quarantine_file(file_path, digest, outcome.reason)
            fault_point("monitor.after_quarantine_move")
            entry.update(moved_to=moved_to, move_error=move_error)
            save_state(path, state)
            quarantined.append(entry)
            logger.warning(quarantine_message(entry))
            continue
        state = outcome.state
        if outcome.kind == "skipped":
            state["skipped"].append({"name": file_path.name, "sha256": digest, "reason": outcome.reason, "at": time.time()})
            save_state(path, state)
            notes.append(outcome.reason)
            logger.warning(outcome.reason)
            continue
        record = outcome.record
        records.append(record)
        if outcome.triage is not None:
            triage.append(outcome.triage)
            for line in format_triage([outcome.triage]):
                logger.info(line)
        if outcome.note:
            notes.append(outcome.note)
            logger.warning(outcome.note)
        if record.alarm:
            _alarm(guard, record, config, logger, actions)
            fault_point("monitor.after_alarm_emit")
            _finish_pending(state, path, record.index, alarm_sent=True)
    save_state(path, state)
    summary = summarise(state, guard, config, records).to_dict()
    summary["actions"] = actions
    summary["quarantined"] = quarantined
    summary["notes"] = notes
    summary["reconciled"] = reconciled
    summary["alarm"] = any(r.alarm for r in records) or any(r["alarm_emitted_now"] for r in reconciled)
    summary["state_file"] = str(path)
    summary["triage"] = triage
    return summary
