"""Flow: score new traffic batches with the champion, track post-launch statistics, alarm, retrain.

A traffic batch is one Parquet or CSV file in a folder (a `timestamp` column, a text column or the
model's vector columns, an optional `feedback` column: 1 = a person marked the input as a problem).
The `monitor` flow

1. resolves the model (default `models:/ebm-guard@champion`) to a fixed version and loads it
   (`flows.guard.guard.Guard.load`);
2. reads the monitoring state `$EBMOPS_HOME/monitoring/<model>-v<version>.json` (processed file
   names with content hashes, per-batch counts, the energies of the last window, the sequential
   detector's state); every file not yet processed (by name and content hash) is new, in name order;
3. per new file: scores it (energy, conformal p-value, flag), computes the batch and sliding-window
   statistics (`evaluation.monitoring`), updates the sequential detector, logs the figures to MLflow
   (one monitoring run per model version, reused across invocations through its tags,
   step = batch index) and saves the state atomically, so a crash loses at most the batch in hand;
4. on an alarm emits the Prefect event `ebmops.monitor.alarm` and, when `trigger_retraining` is set,
   starts the retraining deployment;
5. returns the post-launch summary (`PostLaunchSummary.to_dict()`), a section for the report.

The step functions here are plain functions (tested without Prefect); the flow only wires them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from evaluation.files import file_sha256, write_json_atomic
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
from flows.guard.names import DEFAULT_CHAMPION_URI, DEFAULT_MODEL_NAME

if TYPE_CHECKING:
    from flows.guard.guard import Guard

DEFAULT_MODEL_URI = DEFAULT_CHAMPION_URI
ALARM_EVENT = "ebmops.monitor.alarm"
MONITORING_EXPERIMENT = f"{DEFAULT_MODEL_NAME}-monitoring"
TAG_KIND = "ebmops.kind"
TAG_MODEL = "ebmops.monitoring.model"
TAG_VERSION = "ebmops.monitoring.version"
BATCH_SUFFIXES = (".parquet", ".pq", ".csv")
STATE_FORMAT = 1


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


# --- state --------------------------------------------------------------------------------------


def state_path(model_name: str, version: str) -> Path:
    return settings.ebmops_home() / "monitoring" / f"{model_name}-v{version}.json"


def new_state(model_name: str, version: str, config: MonitorConfig) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "model_name": model_name,
        "model_version": version,
        "processed": [],  # [{"name", "sha256", "batch", "n", "n_flagged", "processed_at"}]
        "window_energies": [],  # energies of the last `window - 1` batches
        "feedback_counts": {},
        "sequential": SequentialDetector(config.expected_run_length).state_dict(),
        "mlflow_run_id": None,
    }


def load_state(path: Path, model_name: str, version: str, config: MonitorConfig) -> dict[str, Any]:
    if not path.exists():
        return new_state(model_name, version, config)
    state = json.loads(path.read_text())
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: monitoring state format {state.get('format')}, expected {STATE_FORMAT}")
    configured = float(config.expected_run_length)
    if float(state["sequential"]["expected_run_length"]) != configured:
        # A new target applies from now on; the statistic so far is kept.
        state["sequential"]["expected_run_length"] = configured
    return state


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Atomic: write a temporary file in the same folder, then rename it over the old one."""
    return write_json_atomic(path, state)


def find_new_files(directory: Path, state: dict[str, Any]) -> list[tuple[Path, str]]:
    """Batch files (by name order) whose name+hash is not yet processed; a file whose content was
    already processed under another name is skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"traffic folder not found: {directory}")
    seen_names = {(p["name"], p["sha256"]) for p in state["processed"]}
    seen_hashes = {p["sha256"] for p in state["processed"]}
    new = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix.lower() not in BATCH_SUFFIXES or path.name.startswith("."):
            continue
        digest = file_sha256(path)
        if (path.name, digest) in seen_names or digest in seen_hashes:
            continue
        new.append((path, digest))
        seen_hashes.add(digest)
    return new


# --- one batch ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredBatch:
    source: str
    energies: np.ndarray
    p_values: np.ndarray
    flagged: np.ndarray
    feedback: np.ndarray  # float: 1, 0 or NaN (no feedback)
    first_timestamp: str | None
    last_timestamp: str | None


def _columns_of(path: Path) -> list[str]:
    import pandas as pd

    if path.suffix.lower() == ".csv":
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    import pyarrow.parquet as pq

    return [str(c) for c in pq.read_schema(path).names]


def score_batch(path: Path, guard: Guard, config: MonitorConfig) -> ScoredBatch:
    """Read one batch file, embed text if the guard takes text, score: energies, p-values, flags."""
    from flows.data.text_data import load_table

    detector = guard.detector
    columns = _columns_of(path)
    optional = {
        "timestamp_column": config.timestamp_column if config.timestamp_column in columns else None,
        "feedback_column": config.feedback_column if config.feedback_column in columns else None,
    }
    if config.text_column in columns:
        if guard.embedder is None:
            raise ValueError(
                f"{path}: has a {config.text_column!r} column but model {guard.name} v{guard.version} takes "
                f"vectors ({detector.n_features_in_} columns), not text"
            )
        from flows.data.featurize import embed_with_cache

        frame = load_table(path, text_column=config.text_column, **optional)
        texts = frame["text"].tolist()
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"{path}: empty or missing text in data rows {bad[:5]}")
        x, _ = embed_with_cache(texts, guard.embedder, progress=False)
    else:
        names = guard.feature_names
        frame = load_table(path, vector_columns=list(names), **optional)
        x = frame[list(names)].to_numpy(dtype=np.float64)
    if len(frame) == 0:
        raise ValueError(f"{path}: the batch has no rows")
    assessment = detector.assess(np.asarray(x, dtype=np.float64))
    feedback = (
        frame["feedback"].to_numpy(dtype=np.float64, na_value=np.nan)
        if "feedback" in frame
        else np.full(len(frame), np.nan)
    )
    first = last = None
    if "timestamp" in frame:
        first, last = frame["timestamp"].min().isoformat(), frame["timestamp"].max().isoformat()
    return ScoredBatch(
        source=path.name,
        energies=assessment.energy,
        p_values=assessment.p_value,
        flagged=assessment.is_ood,
        feedback=feedback,
        first_timestamp=first,
        last_timestamp=last,
    )


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


def monitoring_run_id(guard: Guard, config: MonitorConfig, known_run_id: str | None) -> str:
    """The monitoring run of this model version: the one in the state, else found by tags, else new."""
    from flows.guard import registry

    registry.configure_tracking()
    if known_run_id and registry.run_exists(known_run_id):
        return known_run_id
    # a deleted run or one on a different tracking server: look it up again
    found = registry.find_run(config.experiment_name, {TAG_MODEL: guard.name, TAG_VERSION: guard.version})
    if found:
        return found
    run_id = registry.create_run(
        config.experiment_name,
        run_name=f"monitor-{guard.name}-v{guard.version}",
        tags={TAG_KIND: "monitoring", TAG_MODEL: guard.name, TAG_VERSION: guard.version},
    )
    registry.log_params(
        run_id, {"model_uri": guard.uri, "expected_run_length": config.expected_run_length, "window": config.window}
    )
    registry.finish_run(run_id)
    return run_id


def log_batch_to_mlflow(run_id: str, record: BatchRecord) -> None:
    from flows.guard import registry

    registry.log_metrics(run_id, batch_metrics(record), step=record.index)


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


@task(name="monitor-batch", cache_policy=NO_CACHE)
def process_batch(
    path: Path, digest: str, guard: Guard, config: MonitorConfig, state: dict, state_file: Path
) -> tuple[BatchRecord, dict]:
    """Score, update statistics, log to MLflow, save the state; returns the record and new state."""
    import copy

    state = copy.deepcopy(state)
    scored = score_batch(path, guard, config)
    record = update_with_batch(state, scored, digest, guard, config)
    log_batch_to_mlflow(state["mlflow_run_id"], record)
    save_state(state_file, state)
    return record, state


@flow(name="monitor", log_prints=True)
def monitor(directory: Path, config: MonitorConfig | None = None) -> dict[str, Any]:
    """One monitoring pass over `directory`; returns the post-launch summary as a dict, with the
    alarm events and retraining messages under "actions"."""
    from flows.guard.guard import Guard

    config = config or MonitorConfig()
    settings.configure_torch_threads()
    logger = get_run_logger()
    guard = Guard.load(config.model_uri)
    path = state_path(guard.name, guard.version)
    state = load_state(path, guard.name, guard.version, config)
    state["mlflow_run_id"] = monitoring_run_id(guard, config, state.get("mlflow_run_id"))
    new_files = find_new_files(Path(directory), state)
    logger.info("model %s v%s: %d new batch file(s) in %s", guard.name, guard.version, len(new_files), directory)
    records, actions = [], []
    for file_path, digest in new_files:
        record, state = process_batch(file_path, digest, guard, config, state, path)
        records.append(record)
        if record.alarm:
            event_id = emit_alarm(guard, record, config)
            message = f"alarm on batch {record.index} ({record.source}); event {ALARM_EVENT} {event_id}"
            logger.warning(message)
            actions.append(message)
            if config.trigger_retraining:
                outcome = trigger_retraining(config)
                logger.warning(outcome)
                actions.append(outcome)
    save_state(path, state)
    summary = summarise(state, guard, config, records).to_dict()
    summary["actions"] = actions
    summary["state_file"] = str(path)
    return summary
