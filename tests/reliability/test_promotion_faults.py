"""Promotion, rollback and registration under faults: kill -9 at the points where a crash matters,
an audit log that cannot be written, eight promotions at once, a first version that flags nothing.

Each kill test copies a prepared $EBMOPS_HOME (v1 champion through the audited bootstrap, v2 a better
challenger), runs the real `ebmops` command in a subprocess with EBMOPS_FAULT_POINT set (the process
SIGKILLs itself there, see flows/faults.py), checks what is stored, runs the next command, and checks
the registry invariants (tests/reliability/invariants.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.faults import FAULT_POINT_ENV
from flows.guard import registry
from flows.ops import audit
from flows.ops.promotion import DEFAULT_GATES_PATH, PromotionError, promote
from tests.reliability.invariants import assert_registry_invariants, registry_snapshot

REPO = Path(__file__).resolve().parents[2]
EBMOPS = Path(sys.executable).with_name("ebmops")
MODEL = registry.DEFAULT_MODEL_NAME

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def template(tmp_path_factory, prefect_harness):
    """A home with v1 (champion, through the audited bootstrap) and v2 (challenger, better trained),
    the evaluation data and quick gates; copied by every test that changes it."""
    from tests.flows.guard_factory import prepare_data, register_version

    home = tmp_path_factory.mktemp("faults-home")
    work = tmp_path_factory.mktemp("faults-work")
    gates = yaml.safe_load(DEFAULT_GATES_PATH.read_text())
    gates["bootstrap"]["n_resamples"] = 100
    gates_path = work / "gates.yaml"
    gates_path.write_text(yaml.safe_dump(gates))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        data, data_check = prepare_data(work)
        register_version(data, data_check, work, n_steps=10)
        register_version(data, data_check, work, n_steps=200)
        assert registry.get_alias_version(MODEL, registry.CHAMPION) == "1"
    return {"home": home, "work": work, "data": data, "data_check": data_check, "gates": gates_path}


@pytest.fixture
def home(template, tmp_path, monkeypatch):
    """A private copy of the template home (the sqlite database and the audit log are copied; the
    artifacts stay where the template's runs recorded them, which these tests only read)."""
    copy = tmp_path / "home"
    shutil.copytree(template["home"], copy)
    monkeypatch.setenv("EBMOPS_HOME", str(copy))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry.configure_tracking()
    return copy


def run_ebmops(home: Path, *args: str, fault: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "EBMOPS_HOME": str(home), "PREFECT_API_URL": PREFECT_API_URL.value(), "EBMOPS_TORCH_THREADS": "1",
           "COLUMNS": "250"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop(FAULT_POINT_ENV, None)
    if fault:
        env[FAULT_POINT_ENV] = fault
    return subprocess.run([str(EBMOPS), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def promote_args(template) -> list[str]:
    return ["promote", "--data-dir", str(template["work"] / "data"), "--gates", str(template["gates"]),
            "--n-bootstrap", "100", "--actor", "fault-test"]


def entries() -> list[dict]:
    return audit.read_entries(model_name=MODEL)


# --- kill -9 ------------------------------------------------------------------------------------------


def test_kill_after_the_intent_leaves_the_alias_and_the_next_promotion_settles_it(template, home):
    killed = run_ebmops(home, *promote_args(template), fault="promote.after_intent")
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == "1"
    (intent,) = audit.open_intents(entries())
    assert (intent["champion_before"], intent["champion_after"]) == ("1", "2")  # the record says what was under way

    again = run_ebmops(home, *promote_args(template))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    settled = [e for e in entries() if e["audit_id"] == intent["audit_id"]]
    assert [e["phase"] for e in settled] == ["intent", "undone"] and settled[1]["decision"] == "interrupted"
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == "2"
    assert_registry_invariants(MODEL)


def test_kill_after_the_alias_moved_is_settled_as_done(template, home):
    killed = run_ebmops(home, *promote_args(template), fault="promote.after_alias")
    assert killed.returncode == -9
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == "2"
    (intent,) = audit.open_intents(entries())
    history = run_ebmops(home, "history")
    assert history.returncode == 0 and "unsettled" in history.stdout  # the interrupted decision is visible

    rolled = run_ebmops(home, "rollback", "--actor", "fault-test", "--reason", "after a crash")
    assert rolled.returncode == 0, rolled.stdout[-2000:] + rolled.stderr[-2000:]
    settled = [e for e in entries() if e["audit_id"] == intent["audit_id"]]
    assert [e["phase"] for e in settled] == ["intent", "done"] and settled[1]["decision"] == "promoted"
    # The rollback knew v2 had become champion (from the settled record) and restored v1.
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == "1"
    assert_registry_invariants(MODEL)


def test_kill_after_the_audit_line_keeps_the_decision(template, home):
    killed = run_ebmops(home, *promote_args(template), fault="promote.after_audit")
    assert killed.returncode == -9
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == "2"
    assert not audit.open_intents(entries())
    assert entries()[-1]["decision"] == "promoted"
    assert_registry_invariants(MODEL)  # the MLflow bookkeeping is missing, nothing that matters is


def test_kill_during_a_rollback_after_the_alias_moved(template, home):
    assert run_ebmops(home, *promote_args(template)).returncode == 0
    killed = run_ebmops(home, "rollback", "--actor", "fault-test", fault="rollback.after_alias")
    assert killed.returncode == -9
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == "1"
    again = run_ebmops(home, *promote_args(template))  # settles the rollback first
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert not audit.open_intents(entries())
    assert_registry_invariants(MODEL)


def test_kill_between_version_creation_and_its_digests_leaves_an_unaliased_leftover(template, home):
    script = (
        "import sys; from pathlib import Path\n"
        "from tests.flows.guard_factory import prepare_data, register_version\n"
        "work = Path(sys.argv[1]); data, check = prepare_data(work)\n"
        "register_version(data, check, work, n_steps=5, seed=7)\n"
    )
    env = {**os.environ, "EBMOPS_HOME": str(home), FAULT_POINT_ENV: "register.in_run", "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    before = registry_snapshot(MODEL)
    killed = subprocess.run([sys.executable, "-c", script, str(home.parent / "work3")], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    after = registry_snapshot(MODEL)
    assert after.versions == (*before.versions, "3") and after.aliases == before.aliases
    assert_registry_invariants(MODEL)  # v3 has no digests and holds no alias
    # Its run was left RUNNING by the kill: the next registration closes it as KILLED.
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id = client.get_model_version(MODEL, "3").run_id
    assert client.get_run(run_id).info.status == "RUNNING"
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id).name
    assert registry.close_abandoned_runs(experiment) == [run_id]
    assert client.get_run(run_id).info.status == "KILLED"


# --- an audit log that cannot be written -------------------------------------------------------------


def test_an_unwritable_log_moves_nothing(template, home, monkeypatch):
    before = registry_snapshot(MODEL)

    def refuse(entry, path=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit, "append_entry", refuse)
    with pytest.raises(OSError, match="No space left"):
        promote(data_dir=str(template["work"] / "data"), gates_path=str(template["gates"]), n_bootstrap=100)
    assert registry_snapshot(MODEL) == before


def test_an_outcome_that_cannot_be_written_puts_the_alias_back(template, home, monkeypatch):
    real_append = audit.append_entry
    calls = []

    def fail_on_outcome(entry, path=None):
        calls.append(entry.get("phase"))
        if entry.get("phase") == audit.DONE and entry.get("action") == "promote":
            raise OSError(5, "Input/output error")
        return real_append(entry, path)

    monkeypatch.setattr(audit, "append_entry", fail_on_outcome)
    with pytest.raises(PromotionError, match="put back on version 1"):
        promote(data_dir=str(template["work"] / "data"), gates_path=str(template["gates"]), n_bootstrap=100)
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == "1"
    monkeypatch.setattr(audit, "append_entry", real_append)
    (intent,) = audit.open_intents(entries())  # on record: what was tried
    audit.settle_open_intents(MODEL, registry.get_alias_version(MODEL, registry.CHAMPION))
    assert entries()[-1]["phase"] == "undone"
    assert_registry_invariants(MODEL)


# --- eight promotions at once ------------------------------------------------------------------------


def test_eight_concurrent_promotions_leave_one_champion_and_eight_complete_records(template, home):
    from prefect.settings import PREFECT_API_URL

    n_before = len(audit.outcomes(entries()))
    start_at = time.time() + 25  # every process has imported before they start together
    script = (
        "import sys, time, torch; torch.set_num_threads(1)\n"
        "from flows.ops.promotion import promote\n"
        "start_at, name, data_dir, gates = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]\n"
        "time.sleep(max(0.0, start_at - time.time()))\n"
        "r = promote(data_dir=data_dir, gates_path=gates, n_bootstrap=100, actor=name, reason='race')\n"
        "print('RESULT', r.decision, r.champion_after)\n"
    )
    env = {**os.environ, "EBMOPS_HOME": str(home), "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(start_at), f"proc-{i}", str(template["work"] / "data"),
                          str(template["gates"])], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for i in range(8)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [out[-1500:] for out in outputs]
    results = sorted(line.split()[1:] for out in outputs for line in out.splitlines() if line.startswith("RESULT"))
    assert results == [["noop", "2"]] * 7 + [["promoted", "2"]]
    records = audit.outcomes(entries())[n_before:]
    assert len(records) == 8 and sorted(r["actor"] for r in records) == [f"proc-{i}" for i in range(8)]
    assert [r["decision"] for r in records] == ["promoted"] + ["noop"] * 7  # serialised by the lock
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == "2"
    assert_registry_invariants(MODEL)


# --- a guard that flags nothing ------------------------------------------------------------------------


def test_a_first_version_that_flags_nothing_is_registered_but_never_champion(template, ebmops_home, tmp_path):
    """A stored threshold of 1e9 (every input accepted): the bootstrap gates refuse it on its own report."""
    from dataclasses import replace

    from evaluation.report import EvalReport
    from flows.ops.promotion import bootstrap_champion, evaluate_version
    from tests.flows.guard_factory import register_version

    registered = register_version(template["data"], template["data_check"], tmp_path, n_steps=10)
    assert registry.get_alias_version(MODEL, registry.CHAMPION) == registered.version  # a working guard passes
    report_path = evaluate_version(MODEL, registered.version, template["work"] / "data", tmp_path / "r.json", 50)
    silent = replace(EvalReport.read_json(report_path), threshold=1e9, realised_fpr=0.0)
    silent_path = silent.write_json(tmp_path / "silent.json")
    registry.restore_alias(MODEL, registry.CHAMPION, None)  # as if no champion existed yet
    decision = bootstrap_champion(MODEL, registered.version, silent_path)
    assert decision.decision == "refused" and "flag_rate" in decision.message and "flags too little" in decision.message
    assert registry.get_alias_version(MODEL, registry.CHAMPION) is None
    assert entries()[-1]["action"] == "bootstrap" and entries()[-1]["decision"] == "refused"
