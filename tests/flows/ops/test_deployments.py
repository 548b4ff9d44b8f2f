"""A real Prefect server on loopback (its own PREFECT_HOME): the repository's deployments are created
(`deploy` to a work pool, and `deploy --serve` in a separate process), one retraining run is triggered
and completes, and the completed retraining triggers the promotion deployment.

This module does not use Prefect's test harness: it talks to the real server through subprocess
environments and `temporary_settings` only."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows.ops.deployments import (
    ALARM_EVENT,
    ALARM_PROMOTE_DEPLOYMENT,
    ALARM_RETRAIN_DEPLOYMENT,
    MONITOR_CRON,
    MONITOR_DEPLOYMENT,
    PROMOTE_DEPLOYMENT,
    RETRAIN_CRON,
    RETRAIN_DEPLOYMENT,
)
from flows.guard.serving import free_port

# A real Prefect server process (and workers started by `ebmops deploy --serve`), for the whole module.
pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def wait_for(predicate, timeout_s, what, interval=1.0, proc=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) while waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def healthy(url):
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(proc, timeout_s=30):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "EBMOPS_HOME": str(root / "ebmops-home"),
        "EBMOPS_TORCH_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "wb")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
    )
    try:
        wait_for(lambda: healthy(api_url), 120, "the Prefect server's /api/health", proc=server)
        yield {"api_url": api_url, "env": env, "root": root}
    finally:
        stop(server)
        log.close()


def run_cli(env, *args, timeout=180):
    script = (
        "import sys, typer\nfrom flows.cli.ops import deploy_command\n"
        "app = typer.Typer(); app.command()(deploy_command); app()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def client_for(api_url):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class Client:
        def __enter__(self):
            self._settings = temporary_settings({PREFECT_API_URL: api_url})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return Client()


def test_served_deployments_run_a_retraining_that_triggers_the_promotion(prefect_server):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    env = prefect_server["env"]
    log = open(prefect_server["root"] / "serve.log", "wb")
    served = subprocess.Popen(
        [sys.executable, "-c",
         "import typer\nfrom flows.cli.ops import deploy_command\n"
         "app = typer.Typer(); app.command()(deploy_command); app()\n",
         "--serve", "--training-steps", "20"],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        with client_for(prefect_server["api_url"]) as client:
            # `serve` (re)creates the deployments, then polls for their runs
            serve_log = prefect_server["root"] / "serve.log"
            wait_for(lambda: b"being served" in serve_log.read_bytes(), 120, "the served deployments", proc=served)
            retrain = client.read_deployment_by_name(f"retrain/{RETRAIN_DEPLOYMENT}")
            promote = client.read_deployment_by_name(f"promote/{PROMOTE_DEPLOYMENT}")
            run = client.create_flow_run_from_deployment(retrain.id, parameters={"training_steps": 20})

            def finished():
                state = client.read_flow_run(run.id).state
                return state if state is not None and state.is_final() else None

            state = wait_for(finished, 300, "the retraining run", interval=2, proc=served)
            assert state.is_completed(), f"{state.type}: {state.message}"

            # the completed retraining fires the promotion deployment's trigger
            def promotion_runs():
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[promote.id]))
                )
                return runs or None

            promotion = wait_for(promotion_runs, 120, "a triggered promotion run", interval=2, proc=served)[0]

            def promotion_finished():
                state = client.read_flow_run(promotion.id).state
                return state if state is not None and state.is_final() else None

            state = wait_for(promotion_finished, 180, "the promotion run", interval=2, proc=served)
            assert state.is_completed(), f"{state.type}: {state.message}"
    finally:
        stop(served)
        log.close()
    audit_log = Path(env["EBMOPS_HOME"]) / "audit" / "promotions.jsonl"
    assert audit_log.exists() and "prefect-automation" in audit_log.read_text()


def test_deploy_creates_scheduled_and_triggered_deployments_on_the_server(prefect_server):
    # runs after the served test: a deployment created for a work pool (pull from this checkout)
    # is then re-created here, and served runs are not mixed with pool runs
    done = run_cli(prefect_server["env"], "--work-pool", "ebmops-test")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with client_for(prefect_server["api_url"]) as client:
        retrain = client.read_deployment_by_name(f"retrain/{RETRAIN_DEPLOYMENT}")
        promote = client.read_deployment_by_name(f"promote/{PROMOTE_DEPLOYMENT}")
        assert retrain.work_pool_name == promote.work_pool_name == "ebmops-test"
        assert [s.schedule.cron for s in retrain.schedules] == [RETRAIN_CRON]
        monitoring = client.read_deployment_by_name(f"monitor-traffic/{MONITOR_DEPLOYMENT}")
        assert [s.schedule.cron for s in monitoring.schedules] == [MONITOR_CRON]
        automations = client.read_automations_by_name(
            "promote after a completed nightly retraining"
        )
        assert automations, "the promotion trigger was not created"
        trigger = automations[0].trigger
        assert trigger.expect == {"prefect.flow-run.Completed"}
        assert trigger.match_related.get("prefect.resource.name") in (RETRAIN_DEPLOYMENT, [RETRAIN_DEPLOYMENT])

        # retrain on a monitoring alarm: one in flight (the server cancels a second), feedback on, a
        # cool-down, and the alarm's id and model passed from the event
        alarm = client.read_deployment_by_name(f"retrain/{ALARM_RETRAIN_DEPLOYMENT}")
        assert alarm.global_concurrency_limit.limit == 1
        assert alarm.concurrency_options.collision_strategy.value == "CANCEL_NEW"
        assert alarm.parameters["use_feedback"] is True and alarm.parameters["cooldown_minutes"] == 60.0
        (on_alarm,) = client.read_automations_by_name("retrain on a monitoring alarm")
        assert on_alarm.trigger.expect == {ALARM_EVENT}
        assert on_alarm.actions[0].parameters == {
            "alarm_id": "{{ event.id | string }}", "model_name": "{{ event.payload.model_name }}"
        }
        client.read_deployment_by_name(f"promote/{ALARM_PROMOTE_DEPLOYMENT}")
        (after_alarm,) = client.read_automations_by_name("promote after a completed alarm retraining")
        assert after_alarm.trigger.match_related.get("prefect.resource.name") in (
            ALARM_RETRAIN_DEPLOYMENT, [ALARM_RETRAIN_DEPLOYMENT]
        )
        assert after_alarm.actions[0].parameters == {"retrain_flow_run": "{{ event.resource.id }}"}
