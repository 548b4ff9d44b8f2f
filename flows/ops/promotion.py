"""Promotion and rollback of the `champion` alias, with gates and an audit trail.

`promote` (a Prefect flow) loads `models:/<name>@champion` and `models:/<name>@challenger`, scores
both on the SAME current evaluation data (`in_test.parquet` + `ood_*.parquet` of a data folder;
default: the data of the latest pipeline run under `$EBMOPS_HOME/runs`), builds an evaluation report
for each (`evaluation.report.build_report`), compares them with the gates
(`evaluation.compare.compare_reports`; default gates: flows/pipeline/configs/gates.yaml) and moves `champion`
to the challenger only when every gate passes.

Every decision (promoted, refused, no-op) and every rollback leaves:
- one line in the append-only log `$EBMOPS_HOME/audit/promotions.jsonl` (see flows/ops/audit.py):
  time, action, decision, versions, gate table, report and comparison hashes, who, why;
- an MLflow run in the experiment `<model>-promotions` holding both reports, the comparison and the
  entry itself;
- tags on both model versions: `ebmops.promotion.last_*` and one `ebmops.promotion.<audit id>` tag.

Reading the aliases, deciding, moving the alias and appending the entry happen under one exclusive
file lock, so two promotions started together serialise: one promotes, the other then sees the new
champion (and records a no-op), and both entries are kept.

When holdout feedback exists (flows/monitoring/feedback_store.py `holdout_frame`: the newest traffic
rows with feedback, held out of every retrain), champion and challenger both score those rows and the
holdout feedback gates (`evaluation.compare.feedback_verdicts`: missed-problem rate and false-alarm
rate, challenger - champion with exact paired intervals, tolerance `feedback_holdout` in the gates
file, else `DEFAULT_FEEDBACK_GATE`) join the evaluation-set gates; without a holdout that gate is
skipped with a note in the gate table.

A promotion started by the completion of an alarm retrain (`retrain_flow_run`, the deployment
`promote/promote-after-alarm-retrain`) reads that run's parameters from the Prefect API (model name,
alarm id) and records `alarm_id` and `retrain_flow_run` in its audit entry, next to the challenger's
own origin tags (`ebmops.alarm_id`, `ebmops.retrain_flow_run`): the reason chain alarm -> retrain ->
decision.

A decision that moves the alias is recorded as an intent before the move and an outcome after it
(flows/ops/audit.py); when the outcome cannot be written the move is taken back, and an intent a crash
left open is settled by the next decision. A first version becomes champion (`bootstrap_champion`,
called by the training pipeline) only when it passes the gates that judge a guard on its own (realised
FPR, flag-rate floors, data checks): a guard that flags nothing is registered but never champion.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task

from evaluation.files import file_fingerprint, write_json_atomic
from flows import settings
from flows.guard import registry
from flows.guard.guard import Guard
from flows.guard.names import DEFAULT_MODEL_NAME
from flows.faults import fault_point
from flows.ops import audit
from flows.pipeline import run_markers

DEFAULT_GATES_PATH = Path(__file__).resolve().parents[1] / "pipeline" / "configs" / "gates.yaml"
IN_DISTRIBUTION_SPLIT = "in_test"
TAG_PREFIX = "ebmops.promotion"
ALARM_TAG = "ebmops.alarm_id"
RETRAIN_RUN_TAG = "ebmops.retrain_flow_run"
FLOW_RUN_RESOURCE = "prefect.flow-run."
ROLLED_BACK_TAG = "ebmops.rolled_back"

PROMOTED, REFUSED, NOOP, ROLLED_BACK = "promoted", "refused", "noop", "rolled_back"
# Promotion data comes only from runs that registered their model, never from one that failed or was killed.
RUN_COMPLETE_MARKER = run_markers.RUN_COMPLETE_MARKER


class PromotionError(RuntimeError):
    """A promotion or rollback that cannot be carried out (no challenger, nothing to roll back to...)."""


@dataclass(frozen=True)
class PromotionResult:
    audit_id: str
    action: str
    decision: str
    model_name: str
    champion_before: str | None
    champion_after: str | None
    challenger: str | None
    message: str
    comparison_json: str | None
    report_paths: dict[str, str]
    mlflow_run_id: str | None
    entry: dict[str, Any]

    @classmethod
    def from_entry(
        cls, entry: dict[str, Any], comparison_json: Path | None = None, report_paths: dict[str, str] | None = None
    ) -> PromotionResult:
        return cls(
            audit_id=entry["audit_id"],
            action=entry["action"],
            decision=entry["decision"],
            model_name=entry["model_name"],
            champion_before=entry["champion_before"],
            champion_after=entry["champion_after"],
            challenger=entry.get("challenger"),
            message=entry["message"],
            comparison_json=None if comparison_json is None else str(comparison_json),
            report_paths=dict(report_paths or {}),
            mlflow_run_id=entry.get("mlflow_run_id"),
            entry=entry,
        )

    @property
    def changed(self) -> bool:
        return self.champion_before != self.champion_after

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- evaluation data ------------------------------------------------------------------------------


RUN_DATA_FOLDERS = ("data", "embedded")  # a run folder's splits: vectors as given / text embedded


def resolve_eval_data(data_dir: str | Path | None = None) -> Path:
    """A folder holding in_test.parquet and ood_*.parquet: `data_dir` itself or its `data/` (vector runs)
    or `embedded/` (text runs) subfolder (a pipeline run folder), or by default the data of the latest
    pipeline run that completed with an OOD split (a run that failed or was killed has no
    `run_complete.json` and is never used)."""
    if data_dir is None:
        runs = settings.runs_dir()
        candidates = sorted(
            (
                p.parent
                for sub in RUN_DATA_FOLDERS
                for p in runs.glob(f"*/{sub}/{IN_DISTRIBUTION_SPLIT}.parquet")
                if (p.parent.parent / RUN_COMPLETE_MARKER).exists() and list(p.parent.glob("ood_*.parquet"))
            ),
            key=lambda p: (p.parent / RUN_COMPLETE_MARKER).stat().st_mtime,
        )
        if not candidates:
            raise PromotionError(
                f"no evaluation data: no completed pipeline run under {runs} has data/ or embedded/ with "
                f"{IN_DISTRIBUTION_SPLIT}.parquet and an ood_*.parquet split (train with OOD test data, e.g. "
                "`ebmops train --ood-test-data`); or pass --data-dir (a folder with in_test.parquet and ood_*.parquet)"
            )
        return candidates[-1]
    path = Path(data_dir).expanduser().resolve()
    for sub in RUN_DATA_FOLDERS:
        if not (path / f"{IN_DISTRIBUTION_SPLIT}.parquet").exists() and (path / sub / f"{IN_DISTRIBUTION_SPLIT}.parquet").exists():
            path = path / sub
    if not (path / f"{IN_DISTRIBUTION_SPLIT}.parquet").exists():
        raise PromotionError(f"{path}: no {IN_DISTRIBUTION_SPLIT}.parquet (need in_test.parquet and ood_*.parquet)")
    if not list(path.glob("ood_*.parquet")):
        raise PromotionError(f"{path}: no ood_*.parquet split")
    return path


def eval_splits(data_dir: Path) -> dict[str, Path]:
    splits = {IN_DISTRIBUTION_SPLIT: data_dir / f"{IN_DISTRIBUTION_SPLIT}.parquet"}
    splits.update({p.stem: p for p in sorted(data_dir.glob("ood_*.parquet"))})
    return splits


# --- scoring one version ---------------------------------------------------------------------------


def evaluate_version(
    model_name: str, version: str, data_dir: Path, out_path: Path, n_bootstrap: int = 1000, seed: int = 0
) -> Path:
    """Score one registered version on the evaluation data; write its EvalReport JSON to out_path."""
    from evaluation.report import build_report
    from flows.data.datasets import read_vectors

    guard = Guard.load(registry.version_uri(model_name, version))
    detector = guard.detector
    splits = eval_splits(Path(data_dir))
    features = list(detector.feature_names_in_)
    scores = {split: detector.score(read_vectors(path, features)) for split, path in splits.items()}
    report = build_report(
        scores,
        in_distribution_split=IN_DISTRIBUTION_SPLIT,
        ood_splits=[s for s in splits if s != IN_DISTRIBUTION_SPLIT],
        threshold=detector.threshold_,
        alpha=detector.alpha_,
        model_uri=guard.uri,
        dataset_fingerprints={split: file_fingerprint(path) for split, path in splits.items()},
        n_bootstrap=n_bootstrap,
        seed=seed,
        data_checks_passed=version_data_checks_passed(model_name, version),
    )
    return report.write_json(out_path)


def version_data_checks_passed(model_name: str, version: str) -> bool | None:
    """Whether the training data of a version passed its checks (the run's data_checks artifact)."""
    run_id = registry.get_version(model_name, version).run_id
    if not run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = registry.download_artifact(run_id, "data_checks/data_checks.json", Path(tmp))
        except Exception:  # no such artifact: not recorded
            return None
        try:
            return bool(json.loads(Path(path).read_text())["success"])
        except (ValueError, KeyError):
            return None


evaluate_task = task(name="evaluate-version")(evaluate_version)


# --- holdout feedback and the reason chain ---------------------------------------------------------


def guard_inputs(frame, guard: Guard):
    """The columns of holdout rows a guard scores: its vector columns, or every input column (text)."""
    from flows.monitoring.feedback_store import META_COLUMNS

    if not guard.accepts_text and all(c in frame.columns for c in guard.feature_names):
        return frame[guard.feature_names]
    return frame[[c for c in frame.columns if c not in META_COLUMNS]]


def challenger_holdout(model_name: str, challenger: str):
    """(holdout rows, why none) for the gate: the batches the challenger's feedback snapshot held out
    (its tags `ebmops.feedback.model` / `ebmops.feedback.holdout_batch_ids`), read from that store
    whatever arrived since; for a challenger trained without feedback, the newest batch of the model's
    store."""
    from flows.monitoring.feedback_store import holdout_frame

    tags = registry.get_version(model_name, str(challenger)).tags
    store_model = tags.get("ebmops.feedback.model")
    if store_model is None:
        frame = holdout_frame(model_name)
        return frame, f"no holdout feedback rows for model {model_name}"
    batch_ids = json.loads(tags.get("ebmops.feedback.holdout_batch_ids") or "[]")
    if not batch_ids:
        return None, f"version {challenger} was trained on every feedback batch of {store_model} (none held out)"
    return holdout_frame(store_model, batch_ids=batch_ids), f"the held-out batches {batch_ids} of {store_model} hold no rows"


def holdout_feedback_verdicts(model_name: str, champion: str, challenger: str, gate, holdout=None) -> list:
    """The holdout feedback gates for champion vs challenger (`holdout`: rows with input columns and
    `feedback`; default: `challenger_holdout`). One skipped verdict when there is none."""
    from evaluation.compare import feedback_skipped_verdict, feedback_verdicts
    from flows.monitoring.feedback_store import FEEDBACK

    frame, why_none = challenger_holdout(model_name, challenger) if holdout is None else (holdout, "no holdout rows given")
    if frame is None or len(frame) == 0:
        return [feedback_skipped_verdict(why_none, gate)]
    flags = {}
    for role, version in (("champion", champion), ("challenger", challenger)):
        guard = Guard.load(registry.version_uri(model_name, version))
        flags[role] = guard.score(guard_inputs(frame, guard))["is_ood"].to_numpy().astype(bool)
    return feedback_verdicts(flags["champion"], flags["challenger"], frame[FEEDBACK].to_numpy(), gate)


holdout_task = task(name="holdout-feedback-gates")(holdout_feedback_verdicts)


def retrain_origin(retrain_flow_run: str) -> dict[str, Any]:
    """The retrain flow run (id, or the event resource `prefect.flow-run.<id>`) a promotion follows:
    its id, name, deployment, model name and alarm id, read from the Prefect API."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    run_id = retrain_flow_run.removeprefix(FLOW_RUN_RESOURCE)
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
    except Exception as error:  # no API, unknown run: the chain keeps the id only
        return {"retrain_flow_run": run_id, "note": f"retrain flow run not read: {type(error).__name__}: {error}"[:500]}
    parameters = run.parameters or {}
    return {
        "retrain_flow_run": run_id,
        "retrain_flow_run_name": run.name,
        "model_name": parameters.get("model_name"),
        "alarm_id": parameters.get("alarm_id"),
    }


# --- the promote flow ------------------------------------------------------------------------------


@flow(name="promote", log_prints=True)
def promote(
    model_name: str = DEFAULT_MODEL_NAME,
    data_dir: str | None = None,
    gates_path: str | None = None,
    actor: str | None = None,
    reason: str = "",
    n_bootstrap: int = 1000,
    allow_rolled_back: bool = False,
    lock_timeout_s: float = 600.0,
    alarm_id: str | None = None,
    retrain_flow_run: str | None = None,
) -> PromotionResult:
    """Compare challenger with champion on the same current data (and on holdout feedback rows when
    there are any); move `champion` when every gate passes. With no champion yet, the challenger must
    pass the gates that judge it on its own. `retrain_flow_run` (a promotion triggered by a retrain's
    completion): the model and alarm id come from that run's parameters, and the audit entry names both."""
    from evaluation.compare import DEFAULT_FEEDBACK_GATE, Gates, candidate_verdicts, compare_reports
    from evaluation.report import EvalReport

    settings.configure_torch_threads()
    registry.configure_tracking()
    origin = retrain_origin(retrain_flow_run) if retrain_flow_run else {}
    model_name = origin.get("model_name") or model_name
    alarm_id = alarm_id or origin.get("alarm_id")
    gates_file = Path(gates_path) if gates_path else DEFAULT_GATES_PATH
    gates = Gates.from_yaml(gates_file)
    eval_dir = resolve_eval_data(data_dir)
    who = audit.current_actor(actor)

    with audit.registry_lock(lock_timeout_s):
        audit.settle_open_intents(model_name, registry.get_alias_version(model_name, registry.CHAMPION))
        audit_id, work = _new_record()
        champion = registry.get_alias_version(model_name, registry.CHAMPION)
        challenger = registry.get_alias_version(model_name, registry.CHALLENGER)
        entry: dict[str, Any] = {
            "audit_id": audit_id,
            "time": audit.utc_now(),
            "action": "promote",
            "model_name": model_name,
            "champion_before": champion,
            "challenger": challenger,
            "actor": who,
            "reason": reason,
            "data_dir": str(eval_dir),
            "data_fingerprints": {},
            "gates_file": str(gates_file),
            "gates": gates.to_dict(),
            "gate_table": [],
            "reports": {},
            "comparison_sha256": None,
            "alarm_id": alarm_id,
            "retrain_flow_run": origin.get("retrain_flow_run"),
        }
        if origin.get("note"):
            entry["retrain_note"] = origin["note"]
        comparison_path: Path | None = None
        report_paths: dict[str, str] = {}

        if challenger is None:
            raise PromotionError(f"model {model_name!r} has no {registry.CHALLENGER!r} alias: nothing to promote")
        challenger_tags = registry.get_version(model_name, challenger).tags
        entry["challenger_origin"] = {"alarm_id": challenger_tags.get(ALARM_TAG), "retrain_flow_run": challenger_tags.get(RETRAIN_RUN_TAG)}
        rolled_back = challenger_tags.get(ROLLED_BACK_TAG)
        if champion == challenger:
            decision, after = NOOP, champion
            message = f"version {challenger} is already the champion; nothing to do"
        elif rolled_back and not allow_rolled_back:
            decision, after = REFUSED, champion
            message = (
                f"version {challenger} was rolled back ({rolled_back}); register a new version, "
                "or pass allow_rolled_back to reconsider it"
            )
        else:
            roles = {"challenger": challenger} if champion is None else {"champion": champion, "challenger": challenger}
            for role, version in roles.items():
                path = evaluate_task(model_name, version, eval_dir, work / f"{role}-v{version}.json", n_bootstrap)
                report_paths[role] = str(path)
                entry["reports"][role] = {"version": version, "sha256": file_fingerprint(path)}
            entry["data_fingerprints"] = EvalReport.read_json(report_paths["challenger"]).dataset_fingerprints
            if champion is None:
                verdicts = candidate_verdicts(EvalReport.read_json(report_paths["challenger"]), gates)
                entry["gate_table"] = _verdict_rows(verdicts)
                decision, after, message = _first_champion_decision(challenger, verdicts)
            else:
                comparison = compare_reports(
                    EvalReport.read_json(report_paths["champion"]),
                    EvalReport.read_json(report_paths["challenger"]),
                    gates,
                )
                comparison_path = comparison.write_json(work / "comparison.json")
                entry["comparison_sha256"] = file_fingerprint(comparison_path)
                feedback_gate = gates.feedback or DEFAULT_FEEDBACK_GATE
                entry["feedback_gate"] = feedback_gate.to_dict()
                verdicts = [*comparison.verdicts, *holdout_task(model_name, champion, challenger, feedback_gate)]
                entry["gate_table"] = _verdict_rows(verdicts)
                if all(v.passed for v in verdicts):
                    decision, after = PROMOTED, challenger
                    message = f"every gate passed: version {challenger} replaces version {champion} as champion"
                else:
                    failed = sorted({v.gate for v in verdicts if not v.passed})
                    decision, after = REFUSED, champion
                    message = f"gate(s) {', '.join(failed)} failed: version {champion} stays champion"

        entry.update({"decision": decision, "champion_after": after, "message": message})
        _record_decision(model_name, entry, work, {"champion": champion, "challenger": challenger})

    print(f"[{decision}] {message}")
    return PromotionResult.from_entry(entry, comparison_path, report_paths)


def bootstrap_champion(
    model_name: str,
    version: str,
    report_path: Path,
    gates_path: Path | None = None,
    actor: str | None = None,
    lock_timeout_s: float = 600.0,
) -> PromotionResult | None:
    """Make a newly registered `version` the first champion, when the model has none, it passes the
    gates that judge a guard on its own (its report from the pipeline: realised FPR, flag-rate floors,
    data checks), and under the same lock and audit trail as a promotion. None when a champion exists."""
    from evaluation.compare import Gates, candidate_verdicts
    from evaluation.report import EvalReport

    gates_file = Path(gates_path) if gates_path else DEFAULT_GATES_PATH
    gates = Gates.from_yaml(gates_file)
    with audit.registry_lock(lock_timeout_s):
        champion = registry.get_alias_version(model_name, registry.CHAMPION)
        audit.settle_open_intents(model_name, champion)
        if champion is not None:
            return None
        audit_id, work = _new_record()
        verdicts = candidate_verdicts(EvalReport.read_json(report_path), gates)
        decision, after, message = _first_champion_decision(str(version), verdicts)
        entry: dict[str, Any] = {
            "audit_id": audit_id,
            "time": audit.utc_now(),
            "action": "bootstrap",
            "model_name": model_name,
            "champion_before": None,
            "challenger": str(version),
            "actor": audit.current_actor(actor),
            "reason": "first registered version of the model",
            "gates_file": str(gates_file),
            "gates": gates.to_dict(),
            "gate_table": _verdict_rows(verdicts),
            "reports": {"challenger": {"version": str(version), "sha256": file_fingerprint(report_path)}},
            "comparison_sha256": None,
            "decision": decision,
            "champion_after": after,
            "message": message,
        }
        _record_decision(model_name, entry, work, {"challenger": str(version)})
    return PromotionResult.from_entry(entry, report_paths={"challenger": str(report_path)})


def _new_record() -> tuple[str, Path]:
    """A fresh audit id and its folder for the reports, comparison and entry of one decision."""
    audit_id = audit.new_audit_id()
    work = audit.audit_dir() / "records" / audit_id
    work.mkdir(parents=True, exist_ok=True)
    return audit_id, work


def _first_champion_decision(challenger: str, verdicts: list) -> tuple[str, str | None, str]:
    failed = sorted({v.gate for v in verdicts if not v.passed})
    if failed:
        reasons = "; ".join(v.message for v in verdicts if not v.passed)
        return REFUSED, None, f"no champion yet, and version {challenger} fails gate(s) {', '.join(failed)} on its own: {reasons}"
    return PROMOTED, challenger, f"no champion yet: version {challenger} passes the gates on its own and becomes champion"


def _verdict_rows(verdicts: list) -> list[dict[str, Any]]:
    from evaluation.render.tables import verdict_rows

    return [{k: row[k] for k in ("gate", "split", "result", "message")} for row in verdict_rows(verdicts)]


# --- rollback --------------------------------------------------------------------------------------


@flow(name="rollback", log_prints=True)
def rollback(
    model_name: str = DEFAULT_MODEL_NAME,
    to_version: str | None = None,
    actor: str | None = None,
    reason: str = "",
    lock_timeout_s: float = 600.0,
) -> PromotionResult:
    """Restore the previous champion (from the audit log), or `to_version`; audited like a promotion.
    The version taken out of service is tagged `ebmops.rolled_back`, so a later `promote` refuses it."""
    registry.configure_tracking()
    who = audit.current_actor(actor)
    with audit.registry_lock(lock_timeout_s):
        current = registry.get_alias_version(model_name, registry.CHAMPION)
        audit.settle_open_intents(model_name, current)
        if current is None:
            raise PromotionError(f"model {model_name!r} has no champion to roll back")
        if to_version is not None:
            target = str(to_version)
            registry.get_version(model_name, target)  # raises RegistryError when the version does not exist
        else:
            stack = audit.champion_stack(audit.read_entries(model_name=model_name))
            if stack and stack[-1] == current:
                stack.pop()
            if not stack:
                raise PromotionError(
                    f"the audit log records no champion before version {current}: pass a version to roll back to"
                )
            target = stack[-1]
        if target == current:
            raise PromotionError(f"version {target} is already the champion")
        audit_id, work = _new_record()
        message = f"rolled back: version {target} replaces version {current} as champion"
        entry: dict[str, Any] = {
            "audit_id": audit_id,
            "time": audit.utc_now(),
            "action": "rollback",
            "decision": ROLLED_BACK,
            "model_name": model_name,
            "champion_before": current,
            "champion_after": target,
            "challenger": registry.get_alias_version(model_name, registry.CHALLENGER),
            "actor": who,
            "reason": reason,
            "gate_table": [],
            "reports": {},
            "comparison_sha256": None,
            "message": message,
        }
        _record_decision(model_name, entry, work, {"rolled_back": current, "restored": target})
    print(f"[{ROLLED_BACK}] {message}")
    return PromotionResult.from_entry(entry)


def _record_decision(model_name: str, entry: dict[str, Any], work: Path, roles: dict[str, str | None]) -> None:
    """Carry out and record one decision (registry lock held). A move of the champion alias is
    written as an intent first and its outcome after; if the outcome cannot be written the alias is put
    back and the error raised, so the log never misses a move that stands. Then the MLflow run, version
    tags and the entry's JSON, which can fail without losing the decision."""
    before, after = entry["champion_before"], entry["champion_after"]
    if before != after:
        intent = {**entry, "phase": audit.INTENT}
        audit.append_entry(intent)  # unwritable log: raises here, before anything moved
        fault_point(f"{entry['action']}.after_intent")
        try:
            registry.set_alias(model_name, registry.CHAMPION, after)
        except Exception as error:  # refused (permissions) or unreachable: nothing moved
            audit.append_entry(audit.outcome_entry(
                intent, audit.UNDONE, note=f"the registry refused the move: {error}"[:2000],
                decision="interrupted", champion_after=before,
                message=f"the registry refused to move {registry.CHAMPION!r}; version {before} stays champion",
            ))
            raise
        fault_point(f"{entry['action']}.after_alias")
        try:
            audit.append_entry(audit.outcome_entry(intent, audit.DONE))
        except Exception as error:
            registry.restore_alias(model_name, registry.CHAMPION, before)
            raise PromotionError(
                f"the audit log {audit.audit_log_path()} could not record the move of {registry.CHAMPION!r} to "
                f"version {after} ({error}); the alias was put back on version {before}"
            ) from error
    else:
        audit.append_entry({**entry, "phase": audit.DONE})
    fault_point(f"{entry['action']}.after_audit")
    entry["phase"] = audit.DONE
    if entry["action"] == "rollback":
        registry.tag_version(
            model_name, before, {ROLLED_BACK_TAG: f"{entry['time']} by {entry['actor']} ({entry['audit_id']})"}
        )
    entry["mlflow_run_id"] = _log_audit_run(model_name, entry, work)
    _tag_versions(model_name, entry, roles)
    write_json_atomic(work / "entry.json", entry, indent=2, sort_keys=True)


# --- history ---------------------------------------------------------------------------------------


def champion_history(model_name: str = DEFAULT_MODEL_NAME) -> list[dict[str, Any]]:
    """One row per audited decision, oldest first (time, action, decision, champion before/after...).
    A decision a crash interrupted (an intent without its outcome) shows as "unsettled" until the next
    promotion, rollback or registration settles it. Decisions made from other machines against the same
    MLflow server (their audit log is theirs) are added from the `<model>-promotions` MLflow runs."""
    entries = audit.read_entries(model_name=model_name)
    unsettled = {entry["audit_id"] for entry in audit.open_intents(entries)}
    rows = []
    for entry in entries:
        if audit.phase_of(entry) == audit.INTENT and entry["audit_id"] not in unsettled:
            continue
        failed = sorted({row["gate"] for row in entry.get("gate_table", []) if row.get("result") == "FAIL"})
        rows.append(
            {
                "time": entry["time"],
                "action": entry["action"],
                "decision": "unsettled" if entry["audit_id"] in unsettled else entry["decision"],
                "champion_before": entry.get("champion_before"),
                "champion_after": entry.get("champion_after"),
                "challenger": entry.get("challenger"),
                "failed_gates": failed,
                "actor": entry.get("actor"),
                "reason": entry.get("reason", ""),
                "audit_id": entry["audit_id"],
                "alarm_id": entry.get("alarm_id"),
                "retrain_flow_run": entry.get("retrain_flow_run"),
            }
        )
    known = {row["audit_id"] for row in rows}
    rows.extend(row for row in _history_from_mlflow(model_name) if row["audit_id"] not in known)
    return sorted(rows, key=lambda row: row["time"])


def reason_chain_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per monitoring alarm in history rows (oldest first): alarm id -> retrain run(s) and
    what became of them -> the promotion decision(s) that followed."""
    chains: dict[str, list[str]] = {}
    for row in rows:
        alarm = row.get("alarm_id")
        if not alarm:
            continue
        steps = chains.setdefault(alarm, [])
        run = row.get("retrain_flow_run") or "?"
        if row["action"] == "retrain":
            what = {"registered": f"registered v{row.get('challenger')}"}.get(row["decision"], row["decision"])
            steps.append(f"retrain {run}: {what}")
        else:
            before, after = row.get("champion_before"), row.get("champion_after")
            moved = f"v{before} -> v{after}" if before != after else f"v{after} kept"
            steps.append(f"{row['action']} of v{row.get('challenger')} after retrain {run}: {row['decision']} ({moved})")
    return [f"alarm {alarm}: " + " -> ".join(steps) for alarm, steps in chains.items()]


def _history_from_mlflow(model_name: str) -> list[dict[str, Any]]:
    """History rows rebuilt from the tags of the audit runs in MLflow (written by every client)."""
    from datetime import datetime, timezone

    def version(value: str | None) -> str | None:
        return None if value in (None, "None") else value

    rows = []
    for start_ms, tags in registry.runs_with_tags(f"{model_name}-promotions", "ebmops.audit."):
        if "ebmops.audit.id" not in tags:
            continue
        rows.append(
            {
                "time": datetime.fromtimestamp(start_ms / 1000, timezone.utc).isoformat(timespec="milliseconds"),
                "action": tags.get("ebmops.audit.action", ""),
                "decision": tags.get("ebmops.audit.decision", ""),
                "champion_before": version(tags.get("ebmops.audit.champion_before")),
                "champion_after": version(tags.get("ebmops.audit.champion_after")),
                "challenger": version(tags.get("ebmops.audit.challenger")),
                "failed_gates": [],
                "actor": tags.get("ebmops.audit.actor"),
                "reason": tags.get("ebmops.audit.reason", ""),
                "audit_id": tags["ebmops.audit.id"],
                "alarm_id": tags.get("ebmops.audit.alarm_id"),
                "retrain_flow_run": tags.get("ebmops.audit.retrain_flow_run"),
            }
        )
    return rows


# --- audit helpers ---------------------------------------------------------------------------------


def _log_audit_run(model_name: str, entry: dict[str, Any], work: Path) -> str:
    """An MLflow run in `<model>-promotions` with the entry, both reports and the comparison."""
    name = {
        "rollback": f"rollback v{entry['champion_before']} -> v{entry['champion_after']}",
        "bootstrap": f"first champion v{entry.get('challenger')}: {entry['decision']}",
    }.get(entry["action"], f"promote v{entry.get('challenger')} over v{entry.get('champion_before')}: {entry['decision']}")
    run_id = registry.create_run(
        f"{model_name}-promotions",
        run_name=name,
        tags={
            "ebmops.audit.id": entry["audit_id"],
            "ebmops.audit.action": entry["action"],
            "ebmops.audit.decision": entry["decision"],
            "ebmops.audit.actor": str(entry["actor"]),
            "ebmops.audit.reason": str(entry.get("reason", ""))[:5000],
            "ebmops.audit.champion_before": str(entry.get("champion_before")),
            "ebmops.audit.champion_after": str(entry.get("champion_after")),
            "ebmops.audit.challenger": str(entry.get("challenger")),
            **({"ebmops.audit.alarm_id": str(entry["alarm_id"])} if entry.get("alarm_id") else {}),
            **({"ebmops.audit.retrain_flow_run": str(entry["retrain_flow_run"])} if entry.get("retrain_flow_run") else {}),
        },
    )
    staged = work / "mlflow"
    staged.mkdir(exist_ok=True)
    (staged / "audit_entry.json").write_text(json.dumps({**entry, "mlflow_run_id": run_id}, indent=2, sort_keys=True))
    for path in work.glob("*.json"):
        if path.name != "entry.json":
            shutil.copy(path, staged / path.name)
    registry.log_artifacts(run_id, staged, artifact_path="promotion")
    passed = [r for r in entry.get("gate_table", []) if r["result"] == "PASS"]
    if entry.get("gate_table"):
        registry.log_metrics(run_id, {"gates_passed": float(len(passed)), "gates_total": float(len(entry["gate_table"]))})
    registry.finish_run(run_id)
    return run_id


def _tag_versions(model_name: str, entry: dict[str, Any], roles: dict[str, str | None]) -> None:
    for role, version in roles.items():
        if version is None:
            continue
        report_hash = (entry.get("reports", {}).get(role) or {}).get("sha256", "")
        summary = {
            "time": entry["time"],
            "action": entry["action"],
            "decision": entry["decision"],
            "role": role,
            "report_sha256": report_hash,
            "comparison_sha256": entry.get("comparison_sha256"),
            "champion_after": entry.get("champion_after"),
        }
        tags = {
            f"{TAG_PREFIX}.last_time": entry["time"],
            f"{TAG_PREFIX}.last_action": entry["action"],
            f"{TAG_PREFIX}.last_decision": entry["decision"],
            f"{TAG_PREFIX}.last_role": role,
            f"{TAG_PREFIX}.last_report_sha256": report_hash,
            f"{TAG_PREFIX}.last_audit_id": entry["audit_id"],
            f"{TAG_PREFIX}.{entry['audit_id']}": json.dumps(summary, sort_keys=True),
        }
        registry.tag_version(model_name, version, tags)
