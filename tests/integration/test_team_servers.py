"""ebmops against the team servers (infra/servers-up.sh): PostgreSQL, MLflow with basic auth and proxied
artifacts, Prefect server and a process worker. Clients run in their own folders, never the servers',
with MLFLOW_TRACKING_URI / PREFECT_API_URL (and credentials) pointing at the servers.

Order matters inside this module: the `demo` fixture registers version 1 (champion + challenger) once;
`second_version` adds version 2 (challenger) for the promotion refusals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from tests.integration.conftest import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    as_client,
    client_folder,
    parse_exports,
    run_client,
    servers_up,
    isolated,
)

pytestmark = [pytest.mark.integration, pytest.mark.server, pytest.mark.slow, pytest.mark.timeout(1200)]

MODEL = "ebm-guard"
EBMOPS = str(Path(sys.executable).with_name("ebmops"))
READER, READER_PASSWORD = "reader", "reader-password-123"

LOAD_AND_SCORE = """
import json, os, sys
import pandas as pd
from flows.guard.guard import Guard
from flows.guard import registry
from mlflow import MlflowClient

server_artifacts, data_path = sys.argv[1], sys.argv[2]
guard = Guard.load("models:/ebm-guard@champion")
frame = pd.read_parquet(data_path)[guard.feature_names]
scores = guard.score(frame)
version = MlflowClient().get_model_version("ebm-guard", guard.version)
print(json.dumps({
    "version": str(guard.version),
    "energy": [float(e) for e in scores["energy"]],
    "is_ood_rate": float(scores["is_ood"].mean()),
    "source": version.source,
    "server_artifacts_visible": os.path.exists(server_artifacts) and os.access(server_artifacts, os.R_OK),
}))
"""


def tail(result: subprocess.CompletedProcess, n: int = 3000) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-n:]}\n--- stderr\n{result.stderr[-n:]}"


def last_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stdout + "\n" + result.stderr).splitlines() if line.startswith("error:")]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def demo(team_servers):
    """`ebmops demo` (one small detector) run by the admin from its own folder; version 1."""
    home = client_folder("demo")
    result = run_client(
        [EBMOPS, "demo", "--objective", "cd", "--steps", "50", "--no-progress"],
        team_servers, home, ADMIN_USER, ADMIN_PASSWORD, timeout=900,
    )
    assert result.returncode == 0, tail(result)
    run_dirs = sorted((home / "ebmops-home" / "runs").iterdir())
    assert len(run_dirs) == 1, run_dirs
    return {"home": home, "run_dir": run_dirs[0], "result": result}


@pytest.fixture(scope="module")
def second_version(team_servers, demo):
    """Version 2 (challenger; version 1 stays champion), registered by the admin in this process."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
    import guard_factory

    work = client_folder("v2")
    with as_client(team_servers, ADMIN_USER, ADMIN_PASSWORD, home=work):
        data, checks = guard_factory.prepare_data(work / "work", check=False)
        registered = guard_factory.register_version(data, checks, work / "work", n_steps=20, seed=1)
    assert registered.version == "2" and registered.aliases == ("challenger",), registered
    return registered


@pytest.fixture(scope="module")
def reader_home():
    """The read-only user's client folder (its EBMOPS_HOME holds its audit log)."""
    return client_folder("reader")


def snapshot(servers, home: Path):
    from tests.reliability.invariants import registry_snapshot

    with as_client(servers, ADMIN_USER, ADMIN_PASSWORD, home=home):
        return registry_snapshot(MODEL)


def loopback_listeners() -> dict[int, set[str]]:
    """Listening TCP ports -> local addresses, from /proc/net/tcp and tcp6."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address, port = fields[1].rsplit(":", 1)
                found.setdefault(int(port, 16), set()).add(address)
    return found


def test_servers_restart_idempotently_on_loopback(team_servers):
    again = servers_up(team_servers.folder)
    assert again.returncode == 0, tail(again)
    assert again.stderr.count("already running") == 4, again.stderr
    exports = parse_exports(again.stdout)
    assert exports["MLFLOW_TRACKING_URI"] == team_servers.mlflow_uri
    assert exports["PREFECT_API_URL"] == team_servers.prefect_api

    ports = dict(line.split("=") for line in (team_servers.folder / "ports.env").read_text().split())
    listeners = loopback_listeners()
    for name, port in ports.items():
        assert listeners.get(int(port)) == {"0100007F"}, f"{name} port {port} listens on {listeners.get(int(port))}"

    assert requests.get(f"{team_servers.mlflow_uri}/api/2.0/mlflow/experiments/search", timeout=30).status_code == 401


def test_demo_registers_through_the_servers(team_servers, demo):
    from mlflow import MlflowClient

    with as_client(team_servers, ADMIN_USER, ADMIN_PASSWORD):
        client = MlflowClient()
        model = client.get_registered_model(MODEL)
        assert dict(model.aliases) == {"champion": "1", "challenger": "1"}
        version = client.get_model_version(MODEL, "1")
        run = client.get_run(version.run_id)
        experiment = client.get_experiment(run.info.experiment_id)
        assert version.source.startswith("models:/m-"), version.source  # MLflow 3: a logged model
        logged_model = client.get_logged_model(version.source.removeprefix("models:/"))
    # Every stored location is the server's proxy, never a path of the client or of the server.
    for uri in (experiment.artifact_location, run.info.artifact_uri, logged_model.artifact_location):
        assert uri.startswith("mlflow-artifacts:/"), uri
        assert str(team_servers.folder) not in uri
    # The files landed in the server's artifact folder; the client's folder holds no model copy.
    on_server = [p for p in team_servers.artifacts_dir.rglob("MLmodel")]
    assert len(on_server) == 1, on_server
    assert not list(demo["home"].rglob("MLmodel"))
    assert not (demo["home"] / "ebmops-home" / "artifacts").exists()

    # The flow run is recorded on the Prefect server, completed.
    api = team_servers.prefect_api
    flows = requests.post(f"{api}/flows/filter", json={"flows": {"name": {"any_": ["train_and_register"]}}}, timeout=30)
    flows.raise_for_status()
    assert len(flows.json()) == 1, flows.json()
    runs = requests.post(
        f"{api}/flow_runs/filter", json={"flows": {"id": {"any_": [flows.json()[0]["id"]]}}}, timeout=30
    ).json()
    assert [r["state_type"] for r in runs] == ["COMPLETED"], runs


def test_history_and_evaluate_from_the_command_line(team_servers, demo):
    home, data = demo["home"], demo["run_dir"] / "data"
    history = run_client([EBMOPS, "history"], team_servers, home, ADMIN_USER, ADMIN_PASSWORD)
    assert history.returncode == 0, tail(history)
    assert "champion v1, challenger v1" in " ".join(history.stdout.split()), history.stdout

    report = home / "evaluation" / "report.json"
    evaluated = run_client(
        [EBMOPS, "evaluate", "--model", "models:/ebm-guard@champion", "--data", str(data / "in_test.parquet"),
         "--ood-data", str(data / "ood_digits.parquet"), "--ood-data", str(data / "ood_uniform_noise.parquet"),
         "--vector-columns", "pixel_*", "--report", str(report)],
        team_servers, home, ADMIN_USER, ADMIN_PASSWORD,
    )
    assert evaluated.returncode == 0, tail(evaluated)
    payload = json.loads(report.read_text())
    assert "ood_uniform_noise" in json.dumps(payload)


def test_another_client_loads_the_champion_over_http(team_servers, demo):
    other = client_folder("loader")
    in_test = demo["run_dir"] / "data" / "in_test.parquet"
    loaded = run_client(
        [sys.executable, "-c", LOAD_AND_SCORE, str(team_servers.artifacts_dir), str(in_test)],
        team_servers, other, ADMIN_USER, ADMIN_PASSWORD,
    )
    assert loaded.returncode == 0, tail(loaded)
    found = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert found["version"] == "1"
    assert found["source"].startswith("models:/m-"), found["source"]
    if isolated():  # the client could not even see the server's folder: the files came over HTTP
        assert found["server_artifacts_visible"] is False
    assert not list(other.rglob("MLmodel")), "the downloaded copy was not cleaned up"
    # The same model scored in this process (as root, same server) gives the same energies.
    from flows.guard.guard import Guard

    with as_client(team_servers, ADMIN_USER, ADMIN_PASSWORD, home=other):
        guard = Guard.load("models:/ebm-guard/1")
        expected = guard.score(pd.read_parquet(in_test)[guard.feature_names])["energy"].to_numpy()
    np.testing.assert_allclose(found["energy"], expected, rtol=1e-6)
    assert found["is_ood_rate"] < 0.2


def test_without_credentials_nothing_is_written(team_servers, demo, second_version):
    from mlflow.exceptions import MlflowException

    from flows.guard import registry

    home = client_folder("anonymous")
    before = snapshot(team_servers, home)
    assert before.aliases == {"champion": "1", "challenger": "2"}

    refused = run_client(
        [EBMOPS, "promote", "--data-dir", str(demo["run_dir"]), "--n-bootstrap", "100"],
        team_servers, home, None, None,
    )
    assert refused.returncode == 2, tail(refused)
    assert "401" in last_error_line(refused) and "not authenticated" in last_error_line(refused), tail(refused)

    with as_client(team_servers, None, None, home=home):
        with pytest.raises(MlflowException, match="401"):
            registry.set_alias(MODEL, "champion", "2")
        with pytest.raises(MlflowException, match="401"):
            registry.ensure_experiment("anonymous-experiment")
    assert snapshot(team_servers, home) == before


def test_read_only_user_loads_and_scores_but_cannot_promote(team_servers, demo, second_version, reader_home):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    from flows.guard import registry

    with as_client(team_servers, ADMIN_USER, ADMIN_PASSWORD):
        auth = AuthServiceClient(team_servers.mlflow_uri)
        auth.create_user(READER, READER_PASSWORD)
        experiment_id = MlflowClient().get_experiment_by_name("ebm-guard").experiment_id

    # No grant yet, and the server gives none by default: the reader cannot even read.
    with as_client(team_servers, READER, READER_PASSWORD):
        with pytest.raises(MlflowException, match="403|PERMISSION_DENIED"):
            MlflowClient().get_registered_model(MODEL)

    with as_client(team_servers, ADMIN_USER, ADMIN_PASSWORD):
        auth.grant_user_permission(READER, "registered_model", MODEL, "READ")
        auth.grant_user_permission(READER, "experiment", experiment_id, "READ")

    home = reader_home
    in_test = demo["run_dir"] / "data" / "in_test.parquet"
    loaded = run_client(
        [sys.executable, "-c", LOAD_AND_SCORE, str(team_servers.artifacts_dir), str(in_test)],
        team_servers, home, READER, READER_PASSWORD,
    )
    assert loaded.returncode == 0, tail(loaded)
    found = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert found["version"] == "1" and len(found["energy"]) == len(pd.read_parquet(in_test))

    before = snapshot(team_servers, home)
    refused = run_client(
        [EBMOPS, "promote", "--data-dir", str(demo["run_dir"]), "--n-bootstrap", "100", "--reason", "reader tries"],
        team_servers, home, READER, READER_PASSWORD,
    )
    assert refused.returncode == 2, tail(refused)
    assert "403" in last_error_line(refused) and "Permission denied" in last_error_line(refused), tail(refused)
    with as_client(team_servers, READER, READER_PASSWORD, home=home):
        with pytest.raises(MlflowException, match="403"):
            registry.set_alias(MODEL, "champion", "2")
    after = snapshot(team_servers, home)
    assert (after.versions, after.aliases) == (before.versions, before.aliases) == (("1", "2"), {"champion": "1", "challenger": "2"})


def test_refused_promotion_leaves_no_open_intent(team_servers, reader_home):
    from flows.ops import audit

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EBMOPS_HOME", str(reader_home / "ebmops-home"))
        entries = audit.read_entries(model_name=MODEL)
    assert audit.open_intents(entries) == []
    refused = [e for e in entries if e.get("phase") == "undone"]
    assert refused and "refused the move" in refused[-1]["settle_note"]


def test_batch_scoring_on_a_dask_scheduler_with_two_workers_equals_in_process(team_servers, demo, dask_scheduler):
    """`ebmops score` with EBMOPS_DASK_ADDRESS pointing at a running scheduler: the row groups go to the two
    workers, and the output equals the in-process one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    home = client_folder("score")
    frame = pd.read_parquet(demo["run_dir"] / "data" / "in_test.parquet").drop(columns=["label"], errors="ignore")
    frame = pd.concat([frame] * 8, ignore_index=True)
    traffic = home / "traffic.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), traffic, row_group_size=256)
    outputs = {}
    for name, extra in (("in-process", {}), ("dask", {"EBMOPS_DASK_ADDRESS": dask_scheduler})):
        out = home / f"scores-{name}.parquet"
        env_args = [f"{k}={v}" for k, v in extra.items()]
        result = run_client(
            ["env", *env_args, EBMOPS, "score", "--model", "models:/ebm-guard/1", "--input", str(traffic),
             "--output", str(out), "--batch-rows", "256"],
            team_servers, home, ADMIN_USER, ADMIN_PASSWORD, timeout=900,
        )
        assert result.returncode == 0, tail(result)
        outputs[name] = pd.read_parquet(out)
    assert len(outputs["dask"]) == len(frame) and pq.ParquetFile(traffic).num_row_groups > 2
    pd.testing.assert_frame_equal(outputs["dask"], outputs["in-process"])
    from distributed import Client

    with Client(dask_scheduler, timeout=30) as client:
        assert len(client.scheduler_info()["workers"]) == 2


def test_worker_runs_a_deployment(team_servers, demo):
    home = client_folder("deploy")
    deployed = run_client([EBMOPS, "deploy"], team_servers, home, ADMIN_USER, ADMIN_PASSWORD)
    assert deployed.returncode == 0, tail(deployed)
    ran = run_client(
        [str(Path(sys.executable).with_name("prefect")), "deployment", "run", "monitor-traffic/hourly-monitoring",
         "--watch", "--watch-timeout", "600"],
        team_servers, home, ADMIN_USER, ADMIN_PASSWORD, timeout=700,
    )
    assert ran.returncode == 0, tail(ran)
    assert "Completed" in ran.stdout, tail(ran)
    # The worker ran it: the monitoring pass loaded the champion through the server and logged a run.
    from mlflow import MlflowClient

    with as_client(team_servers, ADMIN_USER, ADMIN_PASSWORD):
        experiments = [e.name for e in MlflowClient().search_experiments()]
    assert any("monitor" in name for name in experiments), experiments


FETCH_VERSION = """
import json, sys
from mlflow import MlflowClient
from flows.guard.guard import Guard

version = sys.argv[1]
guard = Guard.load(f"models:/ebm-guard/{version}")
print(json.dumps({"version": str(guard.version), "source": MlflowClient().get_model_version("ebm-guard", version).source,
                  "features": len(guard.feature_names)}))
"""


def test_nightly_retrain_triggers_a_promotion_run_by_the_worker(team_servers, demo):
    """The retraining deployment runs on the worker; its completion event starts the promotion deployment
    (a Prefect automation on the server); the new version's files reach a client in another folder over HTTP."""
    import time

    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    home = client_folder("nightly")
    with as_client(team_servers, ADMIN_USER, ADMIN_PASSWORD):
        versions_before = {str(v.version) for v in MlflowClient().search_model_versions(f"name='{MODEL}'")}
    # The nightly retraining trains one small detector (no selection stage) so the test stays short.
    nightly_config = home / "nightly.yaml"
    demo_yaml = (Path(__file__).resolve().parents[2] / "flows" / "pipeline" / "configs" / "demo.yaml").read_text()
    nightly_config.write_text(demo_yaml.replace("selection:\n", "selection:\n  enabled: false\n", 1))
    deployed = run_client([EBMOPS, "deploy", "--training-steps", "60", "--config", str(nightly_config)],
                          team_servers, home, ADMIN_USER, ADMIN_PASSWORD)
    assert deployed.returncode == 0, tail(deployed)
    started = time.time()
    ran = run_client(
        [str(Path(sys.executable).with_name("prefect")), "deployment", "run", "retrain/nightly-retrain",
         "--watch", "--watch-timeout", "900"],
        team_servers, home, ADMIN_USER, ADMIN_PASSWORD, timeout=1000,
    )
    assert ran.returncode == 0 and "Completed" in ran.stdout, tail(ran)

    # The promotion the completion event triggered: wait for it to finish on the worker.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    promotion = None
    # Prefect reads its settings once: point this process's client at the team server explicitly.
    with as_client(team_servers, ADMIN_USER, ADMIN_PASSWORD), temporary_settings({PREFECT_API_URL: team_servers.prefect_api}):
        deadline = time.time() + 600
        while time.time() < deadline:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["promote-after-retrain"]))
                )
            finished = [r for r in runs if r.state and r.state.is_final() and r.created.timestamp() >= started - 5]
            if finished:
                promotion = finished[0]
                break
            time.sleep(5)
        if promotion is None:
            with get_client(sync_client=True) as client:
                seen = [(r.name, str(r.deployment_id), r.state.type if r.state else None, str(r.created))
                        for r in client.read_flow_runs(limit=50)]
                automations = [(a.name, a.enabled, str(a.trigger)) for a in client.read_automations()]
            pytest.fail(f"no promote-after-retrain flow run finished within 10 minutes of the retraining; "
                        f"flow runs: {seen}; automations: {automations}")
        assert promotion.state.is_completed(), promotion.state
        client = MlflowClient()
        new_versions = {str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")} - versions_before
        assert len(new_versions) == 1, new_versions
        (new_version,) = new_versions
        # The decision is on record in the shared MLflow audit runs, made by the automation.
        from flows.ops.promotion import champion_history

        decisions = [h for h in champion_history(MODEL) if h["actor"] == "prefect-automation"]
        assert decisions and decisions[-1]["challenger"] == new_version, decisions
        assert decisions[-1]["decision"] in ("promoted", "refused", "noop")
    fetched = run_client([sys.executable, "-c", FETCH_VERSION, new_version], team_servers, client_folder("fetch"),
                         ADMIN_USER, ADMIN_PASSWORD)
    assert fetched.returncode == 0, tail(fetched)
    loaded = json.loads(fetched.stdout.strip().splitlines()[-1])
    assert loaded["version"] == new_version and loaded["source"].startswith(("mlflow-artifacts:", "models:/"))
    print(f"nightly retrain -> v{new_version}; triggered promotion {promotion.name}: {decisions[-1]['decision']}")


def test_admin_trains_rolls_back_and_serves_through_the_servers(team_servers, demo, second_version):
    """`ebmops train`, `rollback` and `serve` from a client folder, as on the embedded default."""
    import signal
    import socket
    import time

    from flows.guard import registry

    home = client_folder("admin-ops")
    trained = run_client(
        [EBMOPS, "train", "--data-dir", str(demo["run_dir"] / "data"), "--objective", "cd", "--steps", "30",
         "--no-progress"],
        team_servers, home, ADMIN_USER, ADMIN_PASSWORD, timeout=900,
    )
    assert trained.returncode == 0, tail(trained)
    assert "Registered ebm-guard version" in " ".join(trained.stdout.split()), tail(trained)

    with as_client(team_servers, ADMIN_USER, ADMIN_PASSWORD):
        champion = registry.get_alias_version(MODEL, "champion")
    target = "2" if champion != "2" else "1"
    rolled = run_client([EBMOPS, "rollback", "--to", target, "--reason", "integration test"],
                        team_servers, home, ADMIN_USER, ADMIN_PASSWORD)
    assert rolled.returncode == 0, tail(rolled)
    with as_client(team_servers, ADMIN_USER, ADMIN_PASSWORD):
        assert registry.get_alias_version(MODEL, "champion") == target

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from tests.integration.conftest import client_env

    server = subprocess.Popen(
        [EBMOPS, "serve", "--port", str(port)], cwd=home, env=client_env(team_servers, home, ADMIN_USER, ADMIN_PASSWORD),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "ebmops serve did not answer /ping within 5 minutes"
            time.sleep(2)
        rows = pd.read_parquet(demo["run_dir"] / "data" / "in_test.parquet").drop(columns=["label"], errors="ignore").head(3)
        answer = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text[:2000]
        predictions = answer.json()["predictions"]
        assert len(predictions) == 3 and all(np.isfinite(p["energy"]) for p in predictions)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
