"""The closed loop on the team servers, unattended: monitor alarm -> Prefect automation -> retrain (with
feedback) -> promotion, and the audit chain alarm id -> retrain flow run -> promotion decision.

On servers of its own (`own_team_servers`: this module registers versions and runs flows that
tests/integration/test_team_servers.py would otherwise count). A small vector guard (digits, `ebmops
demo --objective cd`) is champion; `ebmops deploy` registers every deployment for the process worker;
the monitoring deployment runs on the worker over a traffic folder with an in-distribution batch and a
batch of uniform-noise rows (feedback 1), which raises the alarm. Everything after that is the
server's automations and the worker: no call of this test starts the retrain or the promotion.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USER, as_client, client_folder, run_client

pytestmark = [pytest.mark.integration, pytest.mark.server, pytest.mark.slow, pytest.mark.timeout(2400)]

MODEL = "ebm-guard"
EBMOPS = str(Path(sys.executable).with_name("ebmops"))
PREFECT = str(Path(sys.executable).with_name("prefect"))
ALARM_RETRAIN = "retrain-on-alarm"
ALARM_PROMOTE = "promote-after-alarm-retrain"


def tail(result: subprocess.CompletedProcess, n: int = 3000) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-n:]}\n--- stderr\n{result.stderr[-n:]}"


@contextlib.contextmanager
def prefect(servers):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: servers.prefect_api}), get_client(sync_client=True) as client:
        yield client


def runs_of(servers, deployment: str, since: float = 0.0) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with prefect(servers) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))
    return sorted((r for r in runs if r.created.timestamp() >= since), key=lambda r: r.created)


def wait_for(predicate, timeout_s: float, what: str, servers=None, interval: float = 3.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    seen = ""
    if servers is not None:
        with prefect(servers) as client:
            seen = [(r.name, r.parameters, r.state.name if r.state else None) for r in client.read_flow_runs(limit=30)]
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}; flow runs: {seen}")


def final_runs(servers, deployment: str, since: float, n: int = 1):
    runs = runs_of(servers, deployment, since)
    return runs if len(runs) >= n and all(r.state and r.state.is_final() for r in runs) else None


def alarm_event_ids(servers) -> list[str]:
    import requests

    answer = requests.post(
        f"{servers.prefect_api}/events/filter",
        json={"filter": {"event": {"name": ["ebmops.monitor.alarm"]}, "order": "ASC"}, "limit": 50}, timeout=30,
    )
    answer.raise_for_status()
    return [event["id"] for event in answer.json()["events"]]


def run_monitoring(servers, home: Path, traffic: Path) -> subprocess.CompletedProcess:
    """The monitoring deployment, run by the worker over `traffic` (`prefect deployment run --watch`)."""
    return run_client(
        [PREFECT, "deployment", "run", "monitor-traffic/hourly-monitoring", "--params",
         json.dumps({"directory": str(traffic), "expected_run_length": 20.0}), "--watch", "--watch-timeout", "600"],
        servers, home, ADMIN_USER, ADMIN_PASSWORD, timeout=700,
    )


def worker_audit(servers) -> list[dict]:
    from flows.ops import audit

    return audit.read_entries(servers.folder / "worker-home" / "audit" / audit.AUDIT_LOG_NAME, model_name=MODEL)


def versions(servers) -> dict[str, dict[str, str]]:
    from mlflow import MlflowClient

    with as_client(servers, ADMIN_USER, ADMIN_PASSWORD):
        return {str(v.version): dict(v.tags) for v in MlflowClient().search_model_versions(f"name='{MODEL}'")}


@pytest.fixture(scope="module")
def loop(own_team_servers):
    servers = own_team_servers
    started = time.time()
    home = client_folder("loop")
    demo = run_client([EBMOPS, "demo", "--objective", "cd", "--steps", "50", "--no-progress"],
                      servers, home, ADMIN_USER, ADMIN_PASSWORD, timeout=900)
    assert demo.returncode == 0, tail(demo)
    (run_dir,) = sorted((home / "ebmops-home" / "runs").iterdir())
    # The retrain trains one small detector (no selection stage), few steps.
    config = home / "retrain.yaml"
    demo_yaml = (Path(__file__).resolve().parents[2] / "flows" / "pipeline" / "configs" / "demo.yaml").read_text()
    config.write_text(demo_yaml.replace("selection:\n", "selection:\n  enabled: false\n", 1))
    deployed = run_client([EBMOPS, "deploy", "--training-steps", "40", "--config", str(config)],
                          servers, home, ADMIN_USER, ADMIN_PASSWORD)
    assert deployed.returncode == 0, tail(deployed)

    traffic = home / "traffic"
    traffic.mkdir()
    data = run_dir / "data"
    fine = pd.read_parquet(data / "in_test.parquet").drop(columns=["label"], errors="ignore").head(60)
    noise = pd.read_parquet(data / "ood_uniform_noise.parquet").drop(columns=["label"], errors="ignore")
    noise = noise[list(fine.columns)]
    fine.assign(feedback=0).to_parquet(traffic / "batch-000.parquet", index=False)
    noise.head(60).assign(feedback=1).to_parquet(traffic / "batch-001.parquet", index=False)

    versions_before = versions(servers)
    t_alarm = time.time()
    monitored = run_monitoring(servers, home, traffic)
    assert monitored.returncode == 0 and "Completed" in monitored.stdout, tail(monitored)
    retrains = wait_for(lambda: final_runs(servers, ALARM_RETRAIN, t_alarm - 5), 900,
                        "the retrain the alarm's automation started", servers)
    promotions = wait_for(lambda: final_runs(servers, ALARM_PROMOTE, t_alarm - 5), 600,
                          "the promotion the retrain's completion started", servers)
    return {
        "servers": servers, "home": home, "traffic": traffic, "noise": noise, "retrains": retrains,
        "promotions": promotions, "versions_before": versions_before, "t_alarm": t_alarm,
        "setup_s": time.time() - started,
    }


def test_alarm_starts_retrain_then_promotion_with_a_complete_audit_chain(loop):
    from flows.ops import audit

    servers = loop["servers"]
    (retrain,) = loop["retrains"]
    (promotion,) = loop["promotions"]
    assert retrain.state.is_completed() and retrain.state.name == "Completed", retrain.state
    assert promotion.state.is_completed(), promotion.state

    # The automation passed the alarm event's id and the model, and the deployment's feedback setting.
    alarms = alarm_event_ids(servers)
    alarm_id = retrain.parameters["alarm_id"]
    assert alarm_id in alarms, (alarm_id, alarms)
    assert retrain.parameters["model_name"] == MODEL and retrain.parameters["use_feedback"] is True

    # The new version carries its origin.
    new = {v: tags for v, tags in versions(servers).items() if v not in loop["versions_before"]}
    assert len(new) == 1, new
    ((version, tags),) = new.items()
    assert tags["ebmops.alarm_id"] == alarm_id and tags["ebmops.retrain_flow_run"] == str(retrain.id)

    # The audit log of the worker: alarm -> retrain run -> promotion decision, complete.
    entries = worker_audit(servers)
    chain = audit.reason_chain(entries, alarm_id)
    assert chain["complete"], json.dumps(chain, indent=1)[:4000]
    assert [(e["decision"], e["retrain_flow_run"]) for e in chain["retrains"]] == [
        ("started", str(retrain.id)), ("registered", str(retrain.id))
    ]
    assert chain["retrains"][1]["challenger"] == version
    (decision,) = chain["decisions"]
    assert decision["retrain_flow_run"] == str(retrain.id) and decision["challenger"] == version
    assert decision["actor"] == "prefect-automation" and decision["decision"] in ("promoted", "refused")
    assert decision["challenger_origin"] == {"alarm_id": alarm_id, "retrain_flow_run": str(retrain.id)}
    gates = {row["gate"] for row in decision["gate_table"]}
    assert {"auroc", "realised_fpr", "feedback_missed_problems", "feedback_false_alarms"} <= gates, gates  # not skipped

    # `ebmops history` shows the chain (as the worker's audit log holds it).
    from flows.ops.promotion import champion_history, reason_chain_lines

    with as_client(servers, ADMIN_USER, ADMIN_PASSWORD), pytest.MonkeyPatch.context() as patch:
        patch.setenv("EBMOPS_HOME", str(servers.folder / "worker-home"))
        lines = reason_chain_lines(champion_history(MODEL))
    assert any(line.startswith(f"alarm {alarm_id}: retrain {retrain.id}: started -> retrain {retrain.id}: "
                               f"registered v{version} -> promote of v{version} after retrain {retrain.id}")
               for line in lines), lines
    print(f"alarm {alarm_id} -> retrain {retrain.name} (v{version}) -> promotion {promotion.name}: "
          f"{decision['decision']}; setup and loop took {loop['setup_s']:.0f} s")


def test_a_second_alarm_during_the_cooldown_starts_no_second_retrain(loop):
    servers, home, traffic = loop["servers"], loop["home"], loop["traffic"]
    versions_before = versions(servers)
    loop["noise"].tail(60).assign(feedback=1).to_parquet(traffic / "batch-002.parquet", index=False)
    since = time.time()
    monitored = run_monitoring(servers, home, traffic)
    assert monitored.returncode == 0 and "Completed" in monitored.stdout, tail(monitored)
    retrains = wait_for(lambda: final_runs(servers, ALARM_RETRAIN, since - 5), 600,
                        "the retrain runs the new alarm(s) started", servers)
    # Each run the new alarms started was skipped for the cool-down (or cancelled by the server's
    # one-in-flight limit), and registered nothing.
    assert {r.state.name for r in retrains} <= {"Skipped", "Cancelled"}, [(r.name, r.state) for r in retrains]
    skipped = [e for e in worker_audit(servers) if e["action"] == "retrain" and e["decision"] == "skipped"]
    for run in retrains:
        if run.state.name == "Skipped":
            (line,) = [e for e in skipped if e["retrain_flow_run"] == str(run.id)]
            assert line["alarm_id"] == run.parameters["alarm_id"] and "cool-down" in line["message"], line
        else:
            assert "concurrency limit" in (run.state.message or ""), run.state
    assert versions(servers) == versions_before
    time.sleep(20)  # a Skipped run emits prefect.flow-run.Skipped: no promotion may follow
    assert runs_of(servers, ALARM_PROMOTE, since - 5) == []
