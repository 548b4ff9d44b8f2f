"""The promotion audit trail: an append-only JSON Lines log and the registry lock.

Every promotion decision and every rollback appends one line to `$EBMOPS_HOME/audit/promotions.jsonl`
(time, action, decision, versions before/after, gate table, report hashes, who, why). A line is
written with a single `write` on a file opened in append mode, then flushed and fsync'ed, while the
caller holds the exclusive registry lock: two processes can neither interleave lines nor both decide
on the same champion. The lock (`fcntl.flock` on `$EBMOPS_HOME/audit/registry.lock`) serialises
processes that share this `$EBMOPS_HOME`; a team sharing one MLflow server from several machines must
also share the home (or run promotions from one scheduler), since flock is local to a machine.

A decision that moves the `champion` alias is written twice: an INTENT line (phase "intent": what is
about to change) before the alias moves, and an OUTCOME line with the same audit id after (phase
"done", or "undone" when the move was taken back). A crash between the two leaves an intent without
its outcome; the next promotion, rollback or registration settles it under the lock
(`settle_open_intents`): "done" when the alias shows the move happened, "undone" otherwise. Decisions
that move nothing (refusals, no-ops) are one line, phase "done". Lines without a phase (written
before phases existed) count as done.

Retraining started by a monitoring alarm (flows/ops/deployments.py, `retrain/retrain-on-alarm`) is
audited here too, as `action: "retrain"` lines (schema 3; older lines simply lack these fields):
decision "started" (with `alarm_id`, the alarm event's id, and `retrain_flow_run`, the Prefect flow
run), "skipped" (a cool-down: an alarm-started retrain of the same model started less than
`cooldown_minutes` before), then "registered" (with the new `challenger` version) or "failed". The
promotion that the retrain's completion triggers carries the same `alarm_id` and `retrain_flow_run`,
so alarm -> retrain -> promotion decision reads off the log (`reason_chain`). Retrain lines never move
an alias: `champion_stack` and `settle_open_intents` ignore them.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from flows import settings

AUDIT_LOG_NAME = "promotions.jsonl"
LOCK_NAME = "registry.lock"
AUDIT_SCHEMA_VERSION = 3  # 3: retrain lines, alarm_id / retrain_flow_run fields

INTENT, DONE, UNDONE = "intent", "done", "undone"


class RegistryLockTimeout(TimeoutError):
    """Another promotion or rollback held the registry lock for longer than the wait allowed."""


def audit_dir() -> Path:
    return settings.ebmops_home() / "audit"


def audit_log_path() -> Path:
    return audit_dir() / AUDIT_LOG_NAME


def lock_path() -> Path:
    return audit_dir() / LOCK_NAME


@contextmanager
def registry_lock(timeout_s: float = 600.0, poll_s: float = 0.1) -> Iterator[Path]:
    """Hold the exclusive registry lock for a read-decide-write-append sequence."""
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RegistryLockTimeout(
                        f"{path} is held by another promotion or rollback (waited {timeout_s:g} s)"
                    ) from None
                time.sleep(poll_s)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def new_audit_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def current_actor(actor: str | None = None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return f"uid:{os.getuid()}"


def set_aside_torn_tail(path: Path) -> Path | None:
    """A last line without its newline is a write a crash cut short: move it to `<log>.torn-<time>` and cut
    it from the log, so the next entry starts on its own line instead of gluing onto it. Returns where
    it went (None when the log ends cleanly). Call with the registry lock held."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return None
    start = data.rfind(b"\n") + 1
    aside = path.with_name(f"{path.name}.torn-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}")
    aside.write_bytes(data[start:])
    with open(path, "r+b") as handle:
        handle.truncate(start)
        handle.flush()
        os.fsync(handle.fileno())
    return aside


def append_entry(entry: dict[str, Any], path: Path | None = None) -> Path:
    """Append one JSON line (flush + fsync), after setting aside a torn last line. Call with the
    registry lock held."""
    path = path or audit_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    set_aside_torn_tail(path)
    line = json.dumps({"schema_version": AUDIT_SCHEMA_VERSION, **entry}, sort_keys=True, allow_nan=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = line.encode("utf-8")
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_entries(path: Path | None = None, model_name: str | None = None) -> list[dict[str, Any]]:
    """Every complete entry, oldest first. An unterminated last line (a write cut short by a crash) is
    skipped with a warning; any other line that is not valid JSON raises (the log is corrupt)."""
    import warnings

    path = path or audit_log_path()
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{path}:{number}: skipping an unterminated last entry (an interrupted write)")
                continue
            raise ValueError(f"{path}:{number}: not a valid audit entry: {error}") from error
        if model_name is None or entry.get("model_name") == model_name:
            entries.append(entry)
    return entries


def phase_of(entry: dict[str, Any]) -> str:
    return entry.get("phase", DONE)


def outcomes(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The settled decisions (one per audit id: the outcome line), oldest first; intents are left out."""
    return [entry for entry in entries if phase_of(entry) != INTENT]


def open_intents(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Intent lines that no outcome line (same audit id) follows: a crash between the two."""
    settled = {entry["audit_id"] for entry in entries if phase_of(entry) != INTENT}
    return [entry for entry in entries if phase_of(entry) == INTENT and entry["audit_id"] not in settled]


def outcome_entry(intent: dict[str, Any], phase: str, note: str = "", **changes: Any) -> dict[str, Any]:
    """The outcome line of an intent: the same entry, its phase, when it was settled and why."""
    entry = {k: v for k, v in intent.items() if k != "schema_version"}
    entry.update(changes)
    entry.update({"phase": phase, "settled_at": utc_now()})
    if note:
        entry["settle_note"] = note
    return entry


def settle_open_intents(model_name: str, champion_now: str | None, path: Path | None = None) -> list[dict[str, Any]]:
    """Write the outcome of every open intent of `model_name`, judged by where the champion alias is
    now: at the intended version -> "done"; anywhere else -> "undone" (the decision did not take
    effect). Call with the registry lock held, before deciding anything new. Returns the lines written."""
    written = []
    for intent in open_intents(read_entries(path, model_name=model_name)):
        if champion_now is not None and champion_now == intent.get("champion_after"):
            entry = outcome_entry(intent, DONE, note="settled after an interruption: the alias had moved")
        else:
            entry = outcome_entry(
                intent,
                UNDONE,
                note=f"settled after an interruption: the alias had not moved (champion is {champion_now})",
                decision="interrupted",
                champion_after=intent.get("champion_before"),
                message=f"interrupted before the alias moved; version {intent.get('champion_before')} stayed champion",
            )
        append_entry(entry, path)
        written.append(entry)
    return written


def champion_stack(entries: list[dict[str, Any]]) -> list[str]:
    """The champions in force, oldest first, after replaying promotions and rollbacks: a promotion
    pushes the new champion; a rollback pops the one it removed. The last item is the current
    champion (as far as the log knows); the one before it is what a rollback restores."""
    stack: list[str] = []
    for entry in outcomes(entries):
        before, after = entry.get("champion_before"), entry.get("champion_after")
        if before == after or after is None:
            continue
        if entry.get("action") in ("promote", "bootstrap"):
            if not stack and before is not None:
                stack.append(before)
            stack.append(after)
        elif entry.get("action") == "rollback":
            if not stack and before is not None:
                stack.append(before)
            if stack and stack[-1] == before:
                stack.pop()
            if not stack or stack[-1] != after:
                stack.append(after)
    return stack


# --- retraining started by an alarm -----------------------------------------------------------------

RETRAIN = "retrain"
RETRAIN_STARTED, RETRAIN_SKIPPED, RETRAIN_REGISTERED, RETRAIN_FAILED = "started", "skipped", "registered", "failed"


def _parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def last_alarm_retrain(entries: list[dict[str, Any]], model_name: str) -> dict[str, Any] | None:
    """The latest retrain of `model_name` that an alarm started (decision "started"), or None."""
    started = [
        e for e in entries
        if e.get("action") == RETRAIN and e.get("model_name") == model_name
        and e.get("decision") == RETRAIN_STARTED and e.get("alarm_id")
    ]
    return started[-1] if started else None


def cooldown_check(
    entries: list[dict[str, Any]], model_name: str, cooldown_minutes: float, now: datetime,
    alarm_id: str | None = None,
) -> tuple[bool, str, dict[str, Any] | None]:
    """(may start, why, the previous alarm-started retrain): an alarm may start a retrain unless the
    previous alarm-started retrain of the same model started less than `cooldown_minutes` before `now`,
    or the same alarm (`alarm_id`) already started one."""
    if cooldown_minutes < 0 or cooldown_minutes != cooldown_minutes:
        raise ValueError(f"cooldown_minutes must be >= 0, got {cooldown_minutes!r}")
    previous = last_alarm_retrain(entries, model_name)
    if previous is None:
        return True, f"no earlier alarm-started retrain of {model_name}", None
    if alarm_id is not None:  # an event delivered twice must not train twice, whatever the cool-down
        same = [e for e in entries if e.get("action") == RETRAIN and e.get("model_name") == model_name
                and e.get("decision") == RETRAIN_STARTED and e.get("alarm_id") == alarm_id]
        if same:
            return False, (
                f"alarm {alarm_id} already started the retrain of {model_name} in flow run "
                f"{same[-1].get('retrain_flow_run')} (an event delivered again)"
            ), same[-1]
    minutes = (now - _parse_time(previous["time"])).total_seconds() / 60.0
    if minutes < cooldown_minutes:
        return False, (
            f"cool-down: the alarm-started retrain of {model_name} for alarm {previous['alarm_id']} "
            f"(flow run {previous.get('retrain_flow_run')}) started {minutes:.1f} min ago, "
            f"under the {cooldown_minutes:g} min cool-down"
        ), previous
    return True, f"the previous alarm-started retrain of {model_name} started {minutes:.1f} min ago (cool-down {cooldown_minutes:g} min)", previous


def retrain_entry(
    model_name: str, decision: str, alarm_id: str | None, retrain_flow_run: str | None, message: str,
    actor: str | None = None, reason: str = "", **fields: Any,
) -> dict[str, Any]:
    return {
        "audit_id": new_audit_id(),
        "time": utc_now(),
        "action": RETRAIN,
        "phase": DONE,
        "model_name": model_name,
        "decision": decision,
        "alarm_id": alarm_id,
        "retrain_flow_run": retrain_flow_run,
        "actor": current_actor(actor),
        "reason": reason,
        "message": message,
        "champion_before": None,
        "champion_after": None,
        "challenger": None,
        **fields,
    }


def start_alarm_retrain(
    model_name: str,
    alarm_id: str,
    retrain_flow_run: str | None,
    cooldown_minutes: float,
    actor: str | None = None,
    lock_timeout_s: float = 600.0,
    path: Path | None = None,
) -> dict[str, Any]:
    """Decide, under the registry lock, whether an alarm starts a retrain (the cool-down), and append
    the decision: "started" or "skipped". Returns the entry written."""
    with registry_lock(lock_timeout_s):
        entries = read_entries(path, model_name=model_name)
        allowed, why, previous = cooldown_check(
            entries, model_name, cooldown_minutes, datetime.now(timezone.utc), alarm_id=alarm_id
        )
        entry = retrain_entry(
            model_name, RETRAIN_STARTED if allowed else RETRAIN_SKIPPED, alarm_id, retrain_flow_run,
            f"retrain started for alarm {alarm_id}" if allowed else f"retrain skipped for alarm {alarm_id}: {why}",
            actor=actor, reason=f"monitoring alarm {alarm_id}", cooldown_minutes=cooldown_minutes,
            previous_retrain_flow_run=None if previous is None else previous.get("retrain_flow_run"),
        )
        append_entry(entry, path)
    return entry


def finish_alarm_retrain(
    started: dict[str, Any], decision: str, message: str, version: str | None = None,
    lock_timeout_s: float = 600.0, path: Path | None = None,
) -> dict[str, Any]:
    """The outcome line of an alarm-started retrain: "registered" (with the version) or "failed"."""
    entry = retrain_entry(
        started["model_name"], decision, started.get("alarm_id"), started.get("retrain_flow_run"), message,
        actor=started.get("actor"), reason=started.get("reason", ""), challenger=version,
        started_audit_id=started["audit_id"],
    )
    with registry_lock(lock_timeout_s):
        append_entry(entry, path)
    return entry


def reason_chain(entries: list[dict[str, Any]], alarm_id: str) -> dict[str, Any]:
    """Everything the log holds about one alarm: its retrain lines and the promotion decisions that
    name it, oldest first, and whether the chain alarm -> retrain -> decision is complete."""
    retrains = [e for e in entries if e.get("action") == RETRAIN and e.get("alarm_id") == alarm_id]
    decisions = [
        e for e in outcomes(entries) if e.get("action") == "promote" and e.get("alarm_id") == alarm_id
    ]
    runs = {e.get("retrain_flow_run") for e in retrains if e.get("decision") == RETRAIN_STARTED}
    complete = bool(
        runs and any(e.get("decision") == RETRAIN_REGISTERED for e in retrains)
        and any(d.get("retrain_flow_run") in runs for d in decisions)
    )
    return {"alarm_id": alarm_id, "retrains": retrains, "decisions": decisions, "complete": complete}
