"""Prefect deployments of the guard's life cycle, defined in the repository.

- `retrain/nightly-retrain`: the train_and_register pipeline every night (cron "0 3 * * *", UTC).
- `promote/promote-after-retrain`: the promotion flow (flows/ops/promotion.py), started by an event
  trigger whenever a run of the nightly-retrain deployment completes (`prefect.flow-run.Completed`
  related to that deployment). It scores champion and challenger on the data of the latest run.
- `monitor-traffic/hourly-monitoring`: the monitoring flow (flows/monitoring/monitor.py) every hour over the
  traffic folder (default `$EBMOPS_HOME/traffic`); an alarm emits `ebmops.monitor.alarm` and, when
  `trigger_retraining` is true, starts the nightly-retrain deployment at once.

`ebmops deploy` registers them on the Prefect server at PREFECT_API_URL, to run on a process work pool
(`prefect worker start --pool ebmops`) from this checkout; `ebmops deploy --serve` serves them from
the current process instead (schedules and triggers included; no worker needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.ops.promotion import promote

REPO_ROOT = Path(__file__).resolve().parents[2]
RETRAIN_DEPLOYMENT = "nightly-retrain"
PROMOTE_DEPLOYMENT = "promote-after-retrain"
RETRAIN_CRON = "0 3 * * *"
MONITOR_DEPLOYMENT = "hourly-monitoring"
MONITOR_CRON = "0 * * * *"
DEFAULT_WORK_POOL = "ebmops"
TAGS = ["ebmops"]


@flow(name="retrain", log_prints=True)
def retrain(
    config_path: str | None = None, data_dir: str | None = None, training_steps: int | None = None
) -> dict[str, Any]:
    """The train_and_register pipeline with JSON-friendly parameters: a pipeline YAML (default: the
    packaged demo config), an optional folder of Parquet splits, an optional training budget."""
    from flows.pipeline.config import PipelineConfig, demo_config
    from flows.pipeline.train_and_register import train_and_register

    config = PipelineConfig.from_yaml(config_path) if config_path else demo_config()
    if training_steps is not None:
        config = config.with_training_steps(int(training_steps))
    result = train_and_register(config, data_dir=Path(data_dir) if data_dir else None, progress=False)
    summary = {
        "model_name": result.registered.model_name,
        "version": result.registered.version,
        "aliases": list(result.registered.aliases),
        "run_dir": str(result.run_dir),
        "report_json": str(result.report_json),
    }
    print(f"registered {summary['model_name']} v{summary['version']} ({', '.join(summary['aliases'])})")
    return summary


@flow(name="monitor-traffic", log_prints=True)
def monitor_traffic(
    directory: str | None = None, expected_run_length: float = 150.0, trigger_retraining: bool = False
) -> dict[str, Any]:
    """The monitoring pass with JSON-friendly parameters, for the hourly deployment."""
    from flows import settings
    from flows.monitoring.monitor import MonitorConfig, monitor

    folder = Path(directory) if directory else settings.ebmops_home() / "traffic"
    folder.mkdir(parents=True, exist_ok=True)
    config = MonitorConfig(expected_run_length=expected_run_length, trigger_retraining=trigger_retraining)
    return monitor(folder, config)


def promote_trigger():
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="promote after a completed nightly retraining",
        expect={"prefect.flow-run.Completed"},
        match_related={"prefect.resource.role": "deployment", "prefect.resource.name": RETRAIN_DEPLOYMENT},
    )


def deployment_specs(retrain_parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """What each deployment is: the flow, its entrypoint, and keyword arguments shared by
    `to_deployment` (serve) and `deploy` (work pool)."""
    return [
        {
            "flow": retrain,
            "entrypoint": "flows/ops/deployments.py:retrain",
            "kwargs": {
                "name": RETRAIN_DEPLOYMENT,
                "cron": RETRAIN_CRON,
                "parameters": dict(retrain_parameters or {}),
                "description": "Nightly retraining: validate, train, calibrate, evaluate, register a challenger.",
                "tags": TAGS,
            },
        },
        {
            "flow": promote,
            "entrypoint": "flows/ops/promotion.py:promote",
            "kwargs": {
                "name": PROMOTE_DEPLOYMENT,
                "triggers": [promote_trigger()],
                "parameters": {"actor": "prefect-automation", "reason": "a nightly retraining completed"},
                "description": "Challenger vs champion on the latest data; moves champion when every gate passes.",
                "tags": TAGS,
            },
        },
        {
            "flow": monitor_traffic,
            "entrypoint": "flows/ops/deployments.py:monitor_traffic",
            "kwargs": {
                "name": MONITOR_DEPLOYMENT,
                "cron": MONITOR_CRON,
                "parameters": {"trigger_retraining": False},
                "description": "Hourly: score new traffic batches with the champion; flag-rate, drift and "
                "sequential alarms; optional retraining on alarm.",
                "tags": TAGS,
            },
        },
    ]


def build_deployments(retrain_parameters: dict[str, Any] | None = None) -> list:
    """RunnerDeployments for `prefect.serve`."""
    return [spec["flow"].to_deployment(**spec["kwargs"]) for spec in deployment_specs(retrain_parameters)]


def serve_deployments(retrain_parameters: dict[str, Any] | None = None, limit: int | None = 1) -> None:
    """Serve every deployment from this process until interrupted (runs execute in subprocesses)."""
    from prefect import serve

    serve(*build_deployments(retrain_parameters), limit=limit)


def deploy_to_server(
    work_pool: str = DEFAULT_WORK_POOL, retrain_parameters: dict[str, Any] | None = None, source: Path = REPO_ROOT
) -> dict[str, str]:
    """Create (or update) the deployments on the server at PREFECT_API_URL, to be run by a process
    worker of `work_pool` from `source` (this checkout). Creates the work pool when missing.
    Returns deployment name -> id."""
    from prefect import Flow

    ensure_process_work_pool(work_pool)
    ids = {}
    for spec in deployment_specs(retrain_parameters):
        remote = Flow.from_source(source=str(source), entrypoint=spec["entrypoint"])
        deployment_id = remote.deploy(
            work_pool_name=work_pool, build=False, push=False, print_next_steps=False, **spec["kwargs"]
        )
        ids[f"{spec['flow'].name}/{spec['kwargs']['name']}"] = str(deployment_id)
    return ids


def ensure_process_work_pool(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
