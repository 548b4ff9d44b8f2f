"""The monitoring report's data: every model version's monitor state under $EBMOPS_HOME, the audit
log's promotions and rollbacks, and the pipeline's training runs (retrains), gathered into an
`evaluation.render.monitoring_page.MonitoringReport` and written as one HTML page.

What is read (read only; nothing here writes but the page):

- `$EBMOPS_HOME/monitoring/<model>-v<version>.json` (flows/monitoring/monitor.py `state_path`): per
  processed batch its index, file, row count, flagged count, alarm and `processed_at` (the batch's
  time on the page); per-batch feedback counts (`feedback_counts`) and the rows' first / last
  timestamps when the state records them (older states do not: their per-batch problem rates show
  "not recorded"); the feedback counts over all batches; the quarantined files;
- the calibrated alpha of each version: `alphas` when given, else from the registered model
  (`Guard.load`); a version that cannot be loaded gets no alpha line (noted on the page);
- `$EBMOPS_HOME/audit/promotions.jsonl` (flows/ops/audit.py): settled decisions that moved the
  champion alias (promote, bootstrap, rollback) with time and from -> to version;
- `$EBMOPS_HOME/runs/*/run_complete.json` / `run_failed.json` (flows/pipeline/train_and_register.py):
  training runs, each a "retrain" (the version it registered) or "retrain failed".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evaluation.render.monitoring_page import (
    FEEDBACK_KEYS,
    BatchPoint,
    MonitoringReport,
    OpsEvent,
    VersionSeries,
    write_monitoring_html,
)
from flows import settings

DEFAULT_OUTPUT = "monitoring.html"
MOVES = ("promote", "bootstrap", "rollback")


class NoMonitoringState(LookupError):
    """No monitor state (for the model asked for) under $EBMOPS_HOME yet."""


def monitoring_dir() -> Path:
    return settings.ebmops_home() / "monitoring"


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(float(seconds), timezone.utc).isoformat(timespec="seconds")


def read_states(model_name: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(path, state) of every monitor state file (of `model_name`, or all), by model then version
    number. An unreadable state is a one-line `ValueError` naming the file."""
    folder = monitoring_dir()
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue  # an atomic write's temporary file
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: monitoring state unreadable ({' '.join(str(error).split())})") from None
        if not isinstance(state, dict) or "processed" not in state or "model_name" not in state:
            raise ValueError(f"{path}: not a monitoring state (no model_name / processed)")
        if model_name is None or state["model_name"] == model_name:
            found.append((path, state))

    def order(item):
        version = str(item[1].get("model_version", ""))
        return (item[1]["model_name"], int(version) if version.isdigit() else 0, version)

    return sorted(found, key=order)


def _batch_counts(entry: dict[str, Any]) -> dict[str, int] | None:
    counts = entry.get("feedback_counts")
    if not isinstance(counts, dict) or any(k not in counts for k in FEEDBACK_KEYS):
        return None
    return {k: int(counts[k]) for k in FEEDBACK_KEYS}


def series_from_state(state: dict[str, Any], alpha: float | None, state_file: Path | None = None) -> VersionSeries:
    """A version's series from its stored monitor state (a pure function of the dict)."""
    batches = tuple(
        BatchPoint(
            index=int(p["batch"]),
            source=str(p["name"]),
            time=_iso(p.get("processed_at")),
            n=int(p["n"]),
            n_flagged=int(p["n_flagged"]),
            alarm=bool(p.get("alarm", False)),
            feedback=_batch_counts(p),
            first_timestamp=p.get("first_timestamp"),
            last_timestamp=p.get("last_timestamp"),
        )
        for p in state["processed"]
    )
    overall = state.get("feedback_counts") or None
    if overall is not None and any(k not in overall for k in FEEDBACK_KEYS):
        overall = None
    return VersionSeries(
        model_name=str(state["model_name"]),
        version=str(state["model_version"]),
        alpha=None if alpha is None else float(alpha),
        batches=batches,
        overall_feedback=None if overall is None else {k: int(overall[k]) for k in FEEDBACK_KEYS},
        n_quarantined=len(state.get("quarantined", [])),
        state_file=None if state_file is None else str(state_file),
    )


def audit_events(model_name: str | None = None, path: Path | None = None) -> list[OpsEvent]:
    """Settled decisions of the audit log that moved the champion (promote, bootstrap, rollback)."""
    from flows.ops import audit

    events = []
    for entry in audit.outcomes(audit.read_entries(path, model_name=model_name)):
        before, after = entry.get("champion_before"), entry.get("champion_after")
        if entry.get("action") not in MOVES or after is None or before == after:
            continue
        note = " ".join(str(x) for x in (entry.get("actor"), entry.get("reason") or "") if x).strip()
        events.append(OpsEvent(
            time=str(entry["time"]), kind=str(entry["action"]),
            from_version=None if before is None else str(before), to_version=str(after),
            note=note, model_name=entry.get("model_name"),
        ))  # fmt: skip
    return events


def training_events(model_name: str | None = None) -> list[OpsEvent]:
    """The pipeline's run folders that finished: "retrain" (the version registered) or "retrain failed"."""
    from flows.pipeline.run_markers import RUN_COMPLETE_MARKER, RUN_FAILED_MARKER

    runs = settings.runs_dir()
    events = []
    for folder in sorted(runs.iterdir()) if runs.is_dir() else []:
        for marker, kind in ((RUN_COMPLETE_MARKER, "retrain"), (RUN_FAILED_MARKER, "retrain failed")):
            path = folder / marker
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                time = str(data["time"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a marker cut short: the run is not a recorded training
            name = None
            uri = str(data.get("model_uri") or "")
            if uri.startswith("models:/"):
                name = uri.removeprefix("models:/").split("/")[0].split("@")[0]
            if kind == "retrain" and model_name is not None and name != model_name:
                continue
            version = data.get("version")
            note = f"run {folder.name}" + (f": {' '.join(str(data.get('error', '')).split())[:200]}" if kind != "retrain" else "")
            events.append(OpsEvent(time=time, kind=kind, from_version=None,
                                   to_version=None if version is None else str(version), note=note, model_name=name))  # fmt: skip
    return events


def registered_alpha(model_name: str, version: str) -> float:
    """The calibrated alpha of a registered version (loads the model)."""
    from flows.guard.guard import Guard

    return float(Guard.load(f"models:/{model_name}/{version}").detector.alpha_)


def build_report(
    model_name: str | None = None,
    confidence: float = 0.95,
    alphas: dict[tuple[str, str], float] | None = None,
    alpha_of: Callable[[str, str], float] | None = registered_alpha,
    now: datetime | None = None,
) -> MonitoringReport:
    """The report of every monitored version (of `model_name`, or all); `NoMonitoringState` when
    there is none. `alphas` {(name, version): alpha} wins over `alpha_of` (None: do not look up)."""
    states = read_states(model_name)
    if not states:
        which = f"model {model_name!r}" if model_name else "any model"
        raise NoMonitoringState(
            f"no monitoring state for {which} under {monitoring_dir()}: run `ebmops monitor --once DIR` first"
        )
    notes, versions = [], []
    for path, state in states:
        key = (str(state["model_name"]), str(state["model_version"]))
        alpha = (alphas or {}).get(key)
        if alpha is None and alpha_of is not None:
            try:
                alpha = alpha_of(*key)
            except Exception as error:  # noqa: BLE001 - the page still shows everything else
                notes.append(f"{key[0]} v{key[1]}: calibrated alpha unknown ({type(error).__name__}: "
                             f"{' '.join(str(error).split())[:200]})")  # fmt: skip
        series = series_from_state(state, alpha, path)
        if series.batches and all(b.feedback is None for b in series.batches):
            notes.append(f"{key[0]} v{key[1]}: its monitor state records no per-batch feedback counts; "
                         "problem rates are shown over all batches only")  # fmt: skip
        versions.append(series)
    events = audit_events(model_name) + training_events(model_name)
    return MonitoringReport(
        generated_at=(now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        versions=tuple(versions),
        events=tuple(events),
        confidence=confidence,
        model_name=model_name,
        notes=tuple(notes),
    )


def write_report(output: str | Path = DEFAULT_OUTPUT, model_name: str | None = None, **kwargs: Any) -> tuple[Path, MonitoringReport]:
    """Build the report and write its HTML atomically; returns (path, report)."""
    report = build_report(model_name, **kwargs)
    return write_monitoring_html(report, output), report
