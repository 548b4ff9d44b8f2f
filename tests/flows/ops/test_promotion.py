"""Promotion, rollback and history on a real (sqlite) MLflow registry under Prefect's test harness.

Versions: v1 weakly trained (champion by default), v2 well trained, v3 barely trained. v2 passes the
gates against v1; v3 is refused against v2; a rollback restores v1. Two promotions started together
in separate processes leave one champion and two complete audit entries.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from evaluation.files import file_fingerprint
from flows.ops import audit

from flows.guard import registry
from flows.ops.promotion import DEFAULT_GATES_PATH, ROLLED_BACK_TAG, champion_history, promote, rollback
from tests.flows.guard_factory import prepare_data, register_version

REPO = Path(__file__).resolve().parents[3]
MODEL = registry.DEFAULT_MODEL_NAME


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, prefect_harness):
    """Three registered versions, a passing and a refused promotion and a rollback, under the harness."""
    home = tmp_path_factory.mktemp("promotion-home")
    work = tmp_path_factory.mktemp("promotion-work")
    gates = yaml.safe_load(DEFAULT_GATES_PATH.read_text())
    gates["bootstrap"]["n_resamples"] = 200  # quicker; the default file's gates otherwise
    gates_path = work / "gates.yaml"
    gates_path.write_text(yaml.safe_dump(gates))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        registry.configure_tracking()
        data, data_check = prepare_data(work)
        register_version(data, data_check, work, n_steps=10)
        register_version(data, data_check, work, n_steps=200)
        common = dict(data_dir=str(work / "data"), gates_path=str(gates_path), n_bootstrap=200)
        passed = promote(actor="alice", reason="nightly model is better", **common)
        register_version(data, data_check, work, n_steps=3, seed=1)
        refused = promote(actor="bob", reason="try the quick one", **common)
        rolled = rollback(actor="carol", reason="v2 misbehaves in production")
        yield {
            "home": home, "work": work, "data": data, "data_check": data_check, "common": common,
            "passed": passed, "refused": refused, "rolled": rolled,
        }


def promotion_outcomes() -> list[dict]:
    """The settled promote/rollback decisions, oldest first (the first version's bootstrap left out)."""
    return [e for e in audit.outcomes(audit.read_entries(model_name=MODEL)) if e["action"] != "bootstrap"]


@pytest.mark.slow
def test_first_version_became_champion_through_the_audited_gates(scenario):
    first = audit.read_entries(model_name=MODEL)[:2]
    assert [(e["action"], e["phase"]) for e in first] == [("bootstrap", "intent"), ("bootstrap", "done")]
    assert first[1]["decision"] == "promoted" and first[1]["champion_after"] == "1"
    assert {row["gate"] for row in first[1]["gate_table"]} == {"realised_fpr", "flag_rate", "data_checks"}


@pytest.mark.slow
def test_passing_promotion_moves_champion_and_is_audited(scenario):
    result = scenario["passed"]
    assert (result.decision, result.champion_before, result.champion_after) == ("promoted", "1", "2")
    intents = [e for e in audit.read_entries(model_name=MODEL) if e["phase"] == "intent" and e["action"] == "promote"]
    entry = promotion_outcomes()[0]
    assert intents[0]["audit_id"] == entry["audit_id"] and entry["phase"] == "done"
    assert entry["decision"] == "promoted" and entry["actor"] == "alice" and entry["reason"] == "nightly model is better"
    assert {row["result"] for row in entry["gate_table"]} == {"PASS"}
    assert {row["gate"] for row in entry["gate_table"]} == {
        "auroc", "fpr95", "realised_fpr", "data_checks", "flag_rate", "feedback_holdout"
    }
    # no feedback store for this model: the holdout feedback gate is skipped with a note
    (holdout,) = [row for row in entry["gate_table"] if row["gate"] == "feedback_holdout"]
    assert holdout["message"] == f"skipped: no holdout feedback rows for model {MODEL}"
    assert entry["alarm_id"] is None and entry["retrain_flow_run"] is None  # not started by an alarm
    # report hashes are those of the stored reports, which scored the same data (same fingerprints)
    for role in ("champion", "challenger"):
        assert entry["reports"][role]["sha256"] == file_fingerprint(result.report_paths[role])
    reports = [json.loads(Path(p).read_text()) for p in result.report_paths.values()]
    assert reports[0]["dataset_fingerprints"] == reports[1]["dataset_fingerprints"] == entry["data_fingerprints"]
    assert entry["comparison_sha256"] == file_fingerprint(result.comparison_json)
    client = MlflowClient()
    for version, role in (("1", "champion"), ("2", "challenger")):
        tags = client.get_model_version(MODEL, version).tags
        assert tags[f"ebmops.promotion.{entry['audit_id']}"]
        summary = json.loads(tags[f"ebmops.promotion.{entry['audit_id']}"])
        assert summary["decision"] == "promoted" and summary["role"] == role
        assert summary["report_sha256"] == entry["reports"][role]["sha256"]
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id, "promotion")}
    assert {"promotion/audit_entry.json", "promotion/comparison.json", "promotion/champion-v1.json",
            "promotion/challenger-v2.json"} <= artifacts
    assert client.get_run(result.mlflow_run_id).data.tags["ebmops.audit.decision"] == "promoted"


@pytest.mark.slow
def test_refused_promotion_keeps_champion(scenario):
    result = scenario["refused"]
    assert (result.decision, result.champion_before, result.champion_after, result.challenger) == ("refused", "2", "2", "3")
    entry = promotion_outcomes()[1]
    failed = {row["gate"] for row in entry["gate_table"] if row["result"] == "FAIL"}
    assert "auroc" in failed
    assert "failed" in entry["message"]
    assert MlflowClient().get_model_version(MODEL, "3").tags["ebmops.promotion.last_decision"] == "refused"


@pytest.mark.slow
def test_rollback_restores_previous_champion_and_history_shows_it(scenario):
    result = scenario["rolled"]
    assert (result.decision, result.champion_before, result.champion_after) == ("rolled_back", "2", "1")
    assert registry.get_alias_version(MODEL, "champion") == "1"
    client = MlflowClient()
    assert "carol" in client.get_model_version(MODEL, "2").tags[ROLLED_BACK_TAG]
    history = [h for h in champion_history(MODEL) if h["action"] != "bootstrap"]
    assert [(h["action"], h["decision"], h["champion_before"], h["champion_after"]) for h in history[:3]] == [
        ("promote", "promoted", "1", "2"),
        ("promote", "refused", "2", "2"),
        ("rollback", "rolled_back", "2", "1"),
    ]
    assert history[2]["reason"] == "v2 misbehaves in production"
    assert audit.champion_stack(audit.read_entries(model_name=MODEL)) == ["1"]


@pytest.mark.slow
def test_rolled_back_version_is_refused_without_override(scenario):
    MlflowClient().set_registered_model_alias(MODEL, "challenger", "2")
    result = promote(actor="dave", reason="retry", **scenario["common"])
    assert result.decision == "refused" and "rolled back" in result.message
    assert registry.get_alias_version(MODEL, "champion") == "1"


@pytest.mark.slow
def test_two_promotions_in_parallel_processes_leave_one_champion_and_two_entries(scenario, tmp_path):
    from prefect.settings import PREFECT_API_URL

    client = MlflowClient()
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    n_before = len(audit.outcomes(audit.read_entries()))
    start_at = time.time() + 12  # both processes import first, then start together
    script = (
        "import sys, time, torch; torch.set_num_threads(1)\n"
        "from flows.ops.promotion import promote\n"
        "start_at, name, data_dir, gates = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]\n"
        "time.sleep(max(0.0, start_at - time.time()))\n"
        "r = promote(data_dir=data_dir, gates_path=gates, n_bootstrap=200, actor=name, reason='race',"
        " allow_rolled_back=True)\n"
        "print('RESULT', r.decision, r.champion_after)\n"
    )
    env = {
        **os.environ,
        "EBMOPS_HOME": str(scenario["home"]),
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": str(REPO),
        "EBMOPS_TORCH_THREADS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    common = scenario["common"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(start_at), name, common["data_dir"], common["gates_path"]],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name in ("proc-a", "proc-b")
    ]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        outputs.append(out)
        assert proc.returncode == 0, out[-3000:]
    results = sorted(line.split()[1:] for out in outputs for line in out.splitlines() if line.startswith("RESULT"))
    assert results == [["noop", "2"], ["promoted", "2"]]
    entries = audit.outcomes(audit.read_entries())[n_before:]
    assert len(entries) == 2 and not audit.open_intents(audit.read_entries())
    assert sorted(e["actor"] for e in entries) == ["proc-a", "proc-b"]
    assert [e["decision"] for e in entries] == ["promoted", "noop"]  # serialised: the second saw the new champion
    assert entries[1]["champion_before"] == "2"
    assert registry.get_alias_version(MODEL, "champion") == "2"
    # every line of the log is one complete JSON document
    lines = audit.audit_log_path().read_text().splitlines()
    assert all(json.loads(line)["audit_id"] for line in lines)


def test_registry_lock_is_exclusive(ebmops_home):
    with audit.registry_lock():
        errors = []

        def contender():
            try:
                with audit.registry_lock(timeout_s=0.3):
                    pass
            except audit.RegistryLockTimeout as error:
                errors.append(error)

        thread = threading.Thread(target=contender)
        thread.start()
        thread.join(timeout=10)
    assert len(errors) == 1 and "registry.lock" in str(errors[0])
    with audit.registry_lock(timeout_s=1):  # released afterwards
        pass


def test_champion_stack_replays_promotions_and_rollbacks():
    entries = [
        {"action": "promote", "champion_before": "1", "champion_after": "2"},
        {"action": "promote", "champion_before": "2", "champion_after": "2"},
        {"action": "promote", "champion_before": "2", "champion_after": "3"},
        {"action": "rollback", "champion_before": "3", "champion_after": "2"},
        {"action": "rollback", "champion_before": "2", "champion_after": "1"},
        {"action": "promote", "champion_before": "1", "champion_after": "4"},
    ]
    assert audit.champion_stack(entries[:3]) == ["1", "2", "3"]
    assert audit.champion_stack(entries[:4]) == ["1", "2"]
    assert audit.champion_stack(entries) == ["1", "4"]


def test_intents_are_settled_by_where_the_alias_is(tmp_path):
    log = tmp_path / "promotions.jsonl"
    moved = {"audit_id": "a1", "model_name": "m", "action": "promote", "decision": "promoted",
             "champion_before": "1", "champion_after": "2", "phase": "intent"}
    audit.append_entry(moved, log)
    assert [e["audit_id"] for e in audit.open_intents(audit.read_entries(log))] == ["a1"]
    assert audit.champion_stack(audit.read_entries(log)) == []  # an intent alone changes nothing
    (done,) = audit.settle_open_intents("m", champion_now="2", path=log)
    assert done["phase"] == "done" and done["decision"] == "promoted"
    assert audit.champion_stack(audit.read_entries(log)) == ["1", "2"]
    audit.append_entry({**moved, "audit_id": "a2", "champion_before": "2", "champion_after": "3"}, log)
    (undone,) = audit.settle_open_intents("m", champion_now="2", path=log)
    assert (undone["phase"], undone["decision"], undone["champion_after"]) == ("undone", "interrupted", "2")
    assert audit.champion_stack(audit.read_entries(log)) == ["1", "2"]
    assert not audit.open_intents(audit.read_entries(log))
    assert audit.settle_open_intents("m", champion_now="2", path=log) == []  # nothing left to settle


def test_a_torn_last_audit_line_is_skipped_but_a_corrupt_middle_line_raises(tmp_path):
    from flows.ops import audit

    log = tmp_path / "promotions.jsonl"
    log.write_text('{"model_name": "m", "n": 1}\n{"model_name": "m", "n": 2}\n{"model_name": "m", "n"')
    with pytest.warns(UserWarning, match="unterminated"):
        assert [e["n"] for e in audit.read_entries(log)] == [1, 2]
    log.write_text('{"model_name": "m", "n": 1}\nnot json\n{"model_name": "m", "n": 3}\n')
    with pytest.raises(ValueError, match=":2: not a valid audit entry"):
        audit.read_entries(log)


def test_the_next_append_sets_a_torn_last_line_aside_instead_of_gluing_onto_it(tmp_path):
    from flows.ops import audit

    log = tmp_path / "promotions.jsonl"
    log.write_text('{"model_name": "m", "n": 1}\n{"model_name": "m", "n"')  # a write cut short by a crash
    audit.append_entry({"model_name": "m", "n": 3}, log)
    assert [e["n"] for e in audit.read_entries(log)] == [1, 3]  # readable, no warning needed any more
    torn = list(tmp_path.glob("promotions.jsonl.torn-*"))
    assert len(torn) == 1 and torn[0].read_text() == '{"model_name": "m", "n"'
    audit.append_entry({"model_name": "m", "n": 4}, log)  # a clean log is left alone
    assert len(list(tmp_path.glob("promotions.jsonl.torn-*"))) == 1
    assert [e["n"] for e in audit.read_entries(log)] == [1, 3, 4]


def test_promotion_data_comes_only_from_completed_runs(ebmops_home):
    from flows import settings
    from flows.ops.promotion import PromotionError, resolve_eval_data
    from flows.pipeline.train_and_register import mark_run
    from flows.pipeline.run_markers import RUN_COMPLETE_MARKER, RUN_FAILED_MARKER, RUN_STARTED_MARKER

    def run_folder(name: str, *markers: str) -> Path:
        data = settings.runs_dir() / name / "data"
        data.mkdir(parents=True)
        for split in ("in_test", "ood_x"):
            (data / f"{split}.parquet").write_bytes(b"placeholder")
        for marker in markers:
            mark_run(data.parent, marker)
        return data

    complete = run_folder("a-complete", RUN_STARTED_MARKER, RUN_COMPLETE_MARKER)
    time.sleep(0.05)
    run_folder("b-killed", RUN_STARTED_MARKER)  # newer, but killed half-way
    run_folder("c-failed", RUN_STARTED_MARKER, RUN_FAILED_MARKER)
    assert resolve_eval_data() == complete
    (complete.parent / RUN_COMPLETE_MARKER).unlink()
    with pytest.raises(PromotionError, match="no completed pipeline run"):
        resolve_eval_data()
    # a text run keeps its embedded splits under embedded/; one without an OOD split is no evaluation data
    text_run = settings.runs_dir() / "d-text"
    (text_run / "embedded").mkdir(parents=True)
    (text_run / "embedded" / "in_test.parquet").write_bytes(b"placeholder")
    mark_run(text_run, RUN_STARTED_MARKER)
    mark_run(text_run, RUN_COMPLETE_MARKER)
    with pytest.raises(PromotionError, match="an ood_\\*.parquet split"):
        resolve_eval_data()
    (text_run / "embedded" / "ood_oos.parquet").write_bytes(b"placeholder")
    assert resolve_eval_data() == text_run / "embedded"
    assert resolve_eval_data(text_run) == text_run / "embedded"


@pytest.mark.slow
def test_history_from_another_machine_comes_from_the_shared_tracking_server(scenario, tmp_path, monkeypatch):
    """A teammate's home has no audit log of its own; the decisions logged to the shared MLflow show."""
    local = [(h["action"], h["decision"], h["champion_before"], h["champion_after"]) for h in champion_history(MODEL)]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{scenario['home'] / 'mlflow.db'}")
    monkeypatch.setenv("EBMOPS_HOME", str(tmp_path / "teammate"))
    registry.configure_tracking()
    assert audit.read_entries(model_name=MODEL) == []
    remote = [(h["action"], h["decision"], h["champion_before"], h["champion_after"]) for h in champion_history(MODEL)]
    assert remote == local and ("rollback", "rolled_back", "2", "1") in remote


# --- alarm-started retrains: cool-down, audit lines, reason chain (plain functions) ---------------------


def _started(model, alarm, run, minutes_ago, now):
    from datetime import timedelta

    return {"audit_id": f"a-{alarm}", "action": "retrain", "model_name": model, "decision": "started", "alarm_id": alarm,
            "retrain_flow_run": run, "time": (now - timedelta(minutes=minutes_ago)).isoformat()}


def test_cooldown_check_known_answers():
    from datetime import datetime, timezone

    now = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
    entries = [_started("m", "alarm-1", "run-1", 90, now), _started("other", "alarm-2", "run-2", 5, now),
               {"audit_id": "x", "action": "retrain", "model_name": "m", "decision": "skipped", "alarm_id": "alarm-3",
                "time": now.isoformat()}]
    allowed, why, previous = audit.cooldown_check(entries, "m", 60, now)  # the last start of m was 90 min ago
    assert allowed and previous["alarm_id"] == "alarm-1" and "90.0 min ago" in why
    allowed, why, previous = audit.cooldown_check(entries, "m", 120, now)
    assert not allowed and why.startswith("cool-down") and "alarm-1" in why and "run-1" in why
    assert audit.cooldown_check(entries, "new-model", 120, now)[0]  # nothing before: allowed
    assert audit.cooldown_check(entries, "other", 4.9, now)[0] and not audit.cooldown_check(entries, "other", 5.1, now)[0]
    # the same alarm delivered again never trains twice, even with no cool-down
    allowed, why, previous = audit.cooldown_check(entries, "m", 0, now, alarm_id="alarm-1")
    assert not allowed and "already started" in why and previous["retrain_flow_run"] == "run-1"
    assert audit.cooldown_check(entries, "m", 0, now, alarm_id="alarm-9")[0]
    with pytest.raises(ValueError, match="cooldown_minutes"):
        audit.cooldown_check(entries, "m", -1, now)


def test_alarm_retrain_lines_and_reason_chain(tmp_path, monkeypatch):
    from flows.ops.promotion import reason_chain_lines

    monkeypatch.setenv("EBMOPS_HOME", str(tmp_path / "home"))
    first = audit.start_alarm_retrain("m", "alarm-1", "run-1", cooldown_minutes=30, actor="prefect-automation")
    second = audit.start_alarm_retrain("m", "alarm-2", "run-2", cooldown_minutes=30, actor="prefect-automation")
    other = audit.start_alarm_retrain("n", "alarm-3", "run-3", cooldown_minutes=30)
    assert (first["decision"], second["decision"], other["decision"]) == ("started", "skipped", "started")
    assert "cool-down" in second["message"] and second["previous_retrain_flow_run"] == "run-1"
    audit.finish_alarm_retrain(first, audit.RETRAIN_REGISTERED, "registered m v2", version="2")
    entries = audit.read_entries(model_name="m")
    assert [(e["action"], e["decision"], e["alarm_id"], e["retrain_flow_run"]) for e in entries] == [
        ("retrain", "started", "alarm-1", "run-1"), ("retrain", "skipped", "alarm-2", "run-2"),
        ("retrain", "registered", "alarm-1", "run-1"),
    ]
    assert all(e["schema_version"] == audit.AUDIT_SCHEMA_VERSION == 3 for e in entries)
    assert not audit.reason_chain(entries, "alarm-1")["complete"]  # no promotion decision yet
    decision = {"audit_id": "p-1", "time": audit.utc_now(), "action": "promote", "phase": "done", "model_name": "m",
                "decision": "promoted", "champion_before": "1", "champion_after": "2", "challenger": "2",
                "alarm_id": "alarm-1", "retrain_flow_run": "run-1"}
    audit.append_entry(decision)
    entries = audit.read_entries(model_name="m")
    chain = audit.reason_chain(entries, "alarm-1")
    assert chain["complete"] and [d["audit_id"] for d in chain["decisions"]] == ["p-1"]
    assert not audit.reason_chain(entries, "alarm-2")["complete"]  # skipped: no retrain, no decision
    # retrain lines move nothing: the champion stack and open intents ignore them
    assert audit.champion_stack(entries) == ["1", "2"] and audit.open_intents(entries) == []
    # an old (schema 2) line without the new fields stays readable
    audit.append_entry({"audit_id": "old", "time": audit.utc_now(), "action": "promote", "model_name": "m",
                        "decision": "noop", "champion_before": "2", "champion_after": "2", "challenger": "2"})
    rows = champion_history("m")
    assert rows[-1]["alarm_id"] is None and rows[-1]["retrain_flow_run"] is None
    assert reason_chain_lines(rows) == [
        "alarm alarm-1: retrain run-1: started -> retrain run-1: registered v2 -> "
        "promote of v2 after retrain run-1: promoted (v1 -> v2)",
        "alarm alarm-2: retrain run-2: skipped",
    ]


def test_retrain_flow_skips_an_alarm_during_the_cooldown(tmp_path, monkeypatch, prefect_harness):
    from flows.ops.deployments import SKIPPED_STATE, retrain

    monkeypatch.setenv("EBMOPS_HOME", str(tmp_path / "home"))
    audit.start_alarm_retrain("ebm-guard", "alarm-1", "run-1", cooldown_minutes=60)
    state = retrain(alarm_id="alarm-2", model_name="ebm-guard", cooldown_minutes=60, return_state=True)
    assert state.is_completed() and state.name == SKIPPED_STATE and "cool-down" in state.message
    last = audit.read_entries(model_name="ebm-guard")[-1]
    assert (last["decision"], last["alarm_id"], last["actor"]) == ("skipped", "alarm-2", "prefect-automation")
    assert last["retrain_flow_run"]  # the flow run id from prefect.runtime


@pytest.mark.slow
def test_holdout_feedback_gates_score_champion_and_challenger_on_the_same_rows(scenario):
    """Hand-labelled holdout rows: the rows version 1 flags are marked problems, the rest fine. So
    version 1 misses no problem and raises no false alarm (rates 0 by construction); version 2's
    rates are what its own flags on those rows say."""
    import numpy as np
    import pandas as pd

    from evaluation.compare import FeedbackGate
    from flows.guard.guard import Guard
    from flows.ops.promotion import holdout_feedback_verdicts

    data = scenario["data"]
    features = list(data.feature_columns)
    rows = pd.concat([pd.read_parquet(data.path(split))[features].head(40) for split in ("in_test", *data.test_ood_splits)],
                     ignore_index=True)
    flags = {v: Guard.load(f"models:/{MODEL}/{v}").score(rows)["is_ood"].to_numpy().astype(bool) for v in ("1", "2")}
    assert flags["1"].any() and not flags["1"].all()
    holdout = rows.assign(feedback=flags["1"].astype(int), is_ood_at_serving=flags["1"])
    missed, false_alarms = holdout_feedback_verdicts(MODEL, "1", "2", FeedbackGate(max_rise=1.0), holdout=holdout)
    problems = flags["1"]
    assert (missed.observed["baseline"], false_alarms.observed["baseline"]) == (0.0, 0.0)
    assert missed.observed["candidate"] == pytest.approx(np.mean(~flags["2"][problems]))
    assert false_alarms.observed["candidate"] == pytest.approx(np.mean(flags["2"][~problems]))
    assert missed.passed and false_alarms.passed  # a tolerance of 1.0 lets anything through
    (skipped,) = holdout_feedback_verdicts(MODEL, "1", "2", FeedbackGate(), holdout=holdout.head(0))
    assert skipped.gate == "feedback_holdout" and skipped.message.startswith("skipped:")


@pytest.mark.slow
def test_the_holdout_gate_scores_the_batches_the_challenger_held_out_not_the_newest(scenario, monkeypatch):
    """A batch that arrived after the retrain is not the challenger's holdout: the gate reads the batch
    ids the challenger's snapshot held out (its tags), and skips when it held none out."""
    import json

    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from flows.monitoring.feedback_store import FeedbackStore
    from flows.ops.promotion import challenger_holdout

    monkeypatch.setenv("EBMOPS_HOME", str(scenario["home"]))
    registry.configure_tracking()
    features = list(scenario["data"].feature_columns)
    rows = pd.read_parquet(scenario["data"].path("in_test"))[features].head(12)
    store = FeedbackStore.for_model(MODEL)
    for batch_id, part in (("held@1", rows.iloc[:5]), ("newer@2", rows.iloc[5:])):
        store.add_batch(part.assign(feedback=1), input_columns=features, batch_id=batch_id, source=batch_id,
                        model_version="2", is_ood=np.zeros(len(part), bool))
    client = MlflowClient()
    client.set_model_version_tag(MODEL, "3", "ebmops.feedback.model", MODEL)
    client.set_model_version_tag(MODEL, "3", "ebmops.feedback.holdout_batch_ids", json.dumps(["held@1"]))
    frame, _ = challenger_holdout(MODEL, "3")
    assert frame[features].to_numpy().tolist() == rows.iloc[:5].to_numpy().tolist()

    newest, _ = challenger_holdout(MODEL, "1")  # trained without feedback: the newest batch
    assert newest[features].to_numpy().tolist() == rows.iloc[5:].to_numpy().tolist()

    client.set_model_version_tag(MODEL, "3", "ebmops.feedback.holdout_batch_ids", "[]")
    none, why = challenger_holdout(MODEL, "3")
    assert none is None and "none held out" in why
