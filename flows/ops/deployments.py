"""Prefect deployments of the guard's life cycle, defined in the repository.

- `retrain/nightly-retrain`: the train_and_register pipeline every night (cron "0 3 * * *", UTC).
- `promote/promote-after-retrain`: the promotion flow (flows/ops/promotion.py), started by an event
  trigger whenever a run of the nightly-retrain deployment completes (`prefect.flow-run.Completed`
  related to that deployment). It scores champion and challenger on the data of the latest run.
- `monitor-traffic/hourly-monitoring`: the monitoring flow (flows/monitoring/monitor.py) every hour over the
  traffic folder (default `$EBMOPS_HOME/traffic`); an alarm emits `ebmops.monitor.alarm` and, when
  `trigger_retraining` is true, starts the nightly-retrain deployment at once.

- `retrain/retrain-on-alarm`: the same retraining flow, started by an automation on the monitor's alarm
  event `ebmops.monitor.alarm` (any model: resource `ebmops.model.<name>.<version>`), with the alarm's
  event id and model name as parameters (`{{ event.id }}`, `{{ event.payload.model_name }}`) and
  `use_feedback=True` (the feedback store's training rows; its holdout stays out). Guard rails: the
  deployment's concurrency limit is 1 with collision strategy CANCEL_NEW, so the Prefect server
  cancels a run that would start while another is in flight (at most one alarm retrain in flight, so
  at most one per model); a cool-down (`cooldown_minutes`, default 60): a run whose model had an
  alarm-started retrain start less than that before is skipped, ending in a Completed state named
  "Skipped" (its event, `prefect.flow-run.Skipped`, starts no promotion). Every decision (started /
  skipped, then registered / failed) is an audit line with the alarm id and the flow run id
  (flows/ops/audit.py); the registered version is tagged `ebmops.alarm_id` and `ebmops.retrain_flow_run`.
- `promote/promote-after-alarm-retrain`: the promotion, started when a run of retrain-on-alarm
  completes, with that run's id (`{{ event.resource.id }}`); it reads the run's parameters (model,
  alarm id) from the Prefect API and records them in its audit entry: alarm -> retrain -> decision.

`ebmops deploy` registers them on the Prefect server at PREFECT_API_URL, to run on a process work pool
(`prefect worker start --pool ebmops`) from this checkout; `ebmops deploy --serve` serves them from
the current process instead (schedules and triggers included; no worker needed).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow

from flows.ops.promotion import promote

REPO_ROOT = Path(__file__).resolve().parents[2]
RETRAIN_DEPLOYMENT = "nightly-retrain"
PROMOTE_DEPLOYMENT = "promote-after-retrain"
RETRAIN_CRON = "0 3 * * *"
ALARM_RETRAIN_DEPLOYMENT = "retrain-on-alarm"
ALARM_PROMOTE_DEPLOYMENT = "promote-after-alarm-retrain"
ALARM_EVENT = "ebmops.monitor.alarm"  # flows/monitoring/monitor.py emits it
DEFAULT_COOLDOWN_MINUTES = 60.0
SKIPPED_STATE = "Skipped"
MONITOR_DEPLOYMENT = "hourly-monitoring"
MONITOR_CRON = "0 * * * *"
DEFAULT_WORK_POOL = "ebmops"
TAGS = ["ebmops"]


@flow(name="retrain", log_prints=True)
def retrain(
    config_path: str | None = None,
    data_dir: str | None = None,
    training_steps: int | None = None,
    use_feedback: bool = False,
    alarm_id: str | None = None,
    model_name: str | None = None,
    cooldown_minutes: float = DEFAULT_COOLDOWN_MINUTES,
) -> Any:
    """The train_and_register pipeline with JSON-friendly parameters: a pipeline YAML (default: the
    packaged demo config), an optional folder of Parquet splits, an optional training budget,
    `use_feedback` (train on the feedback store's rows too), `model_name` (overrides the config's).
    With `alarm_id` (a run started by a monitoring alarm) the cool-down is checked first and every
    step is audited with the alarm id and this flow run's id (see the module docstring)."""
    from prefect.runtime import flow_run
    from prefect.states import Completed

    from flows.guard import registry
    from flows.ops import audit
    from flows.pipeline.config import PipelineConfig, demo_config
    from flows.pipeline.train_and_register import train_and_register

    config = PipelineConfig.from_yaml(config_path) if config_path else demo_config()
    if training_steps is not None:
        config = config.with_training_steps(int(training_steps))
    if model_name:
        config = replace(config, model_name=model_name)
    run_id = flow_run.get_id()
    started = None
    if alarm_id:
        started = audit.start_alarm_retrain(
            config.model_name, alarm_id, run_id, float(cooldown_minutes), actor="prefect-automation"
        )
        print(started["message"])
        if started["decision"] == audit.RETRAIN_SKIPPED:
            return Completed(name=SKIPPED_STATE, message=started["message"])
    try:
        result = train_and_register(
            config, data_dir=Path(data_dir) if data_dir else None, progress=False,
            use_feedback=True if use_feedback else None,  # False: the config's own `feedback.use`
        )
        version = str(result.registered.version)
        origin = {"ebmops.retrain_flow_run": run_id or "", **({"ebmops.alarm_id": alarm_id} if alarm_id else {})}
        registry.tag_version(result.registered.model_name, version, origin)
    except BaseException as error:
        if started is not None:
            audit.finish_alarm_retrain(started, audit.RETRAIN_FAILED, f"retrain failed: {type(error).__name__}: {error}"[:2000])
        raise
    summary = {
        "model_name": result.registered.model_name,
        "version": version,
        "aliases": list(result.registered.aliases),
        "run_dir": str(result.run_dir),
        "report_json": str(result.report_json),
        "alarm_id": alarm_id,
        "retrain_flow_run": run_id,
    }
    if started is not None:
        audit.finish_alarm_retrain(
            started, audit.RETRAIN_REGISTERED, f"registered {summary['model_name']} v{version} for alarm {alarm_id}", version
        )
    print(f"registered {summary['model_name']} v{version} ({', '.join(summary['aliases'])})")
    return summary


@flow(name="monitor-traffic", log_prints=True)
def monitor_traffic(
    directory: str | None = None, expected_run_length: float = 150.0, trigger_retraining: bool = False,
    model_uri: str | None = None,
) -> dict[str, Any]:
    """The monitoring pass with JSON-friendly parameters, for the hourly deployment."""
    from flows import settings
    from flows.monitoring.monitor import MonitorConfig, monitor

    folder = Path(directory) if directory else settings.ebmops_home() / "traffic"
    folder.mkdir(parents=True, exist_ok=True)
    config = MonitorConfig(expected_run_length=expected_run_length, trigger_retraining=trigger_retraining)
    if model_uri:
        config = replace(config, model_uri=model_uri)
    return monitor(folder, config)


def promote_trigger():
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="promote after a completed nightly retraining",
        expect={"prefect.flow-run.Completed"},
        match_related={"prefect.resource.role": "deployment", "prefect.resource.name": RETRAIN_DEPLOYMENT},
    )


def retrain_on_alarm_trigger():
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="retrain on a monitoring alarm",
        expect={ALARM_EVENT},
        match={"prefect.resource.id": "ebmops.model.*"},
        # `| string`: the event id is a UUID, which the template's JSON step would not take as is
        parameters={"alarm_id": "{{ event.id | string }}", "model_name": "{{ event.payload.model_name }}"},
    )


def promote_after_alarm_trigger():
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="promote after a completed alarm retraining",
        expect={"prefect.flow-run.Completed"},
        match_related={"prefect.resource.role": "deployment", "prefect.resource.name": ALARM_RETRAIN_DEPLOYMENT},
        parameters={"retrain_flow_run": "{{ event.resource.id }}"},
    )


def alarm_retrain_concurrency():
    """At most one alarm retrain in flight: the server cancels a run that would start beside another."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def deployment_specs(
    retrain_parameters: dict[str, Any] | None = None, cooldown_minutes: float = DEFAULT_COOLDOWN_MINUTES
) -> list[dict[str, Any]]:
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
            "flow": retrain,
            "entrypoint": "flows/ops/deployments.py:retrain",
            "kwargs": {
                "name": ALARM_RETRAIN_DEPLOYMENT,
                "triggers": [retrain_on_alarm_trigger()],
                "parameters": {**dict(retrain_parameters or {}), "use_feedback": True, "cooldown_minutes": cooldown_minutes},
                "concurrency_limit": alarm_retrain_concurrency(),
                "description": "Retraining started by a monitoring alarm (current data plus feedback), one in flight, "
                "with a cool-down; audited with the alarm id.",
                "tags": TAGS,
            },
        },
        {
            "flow": promote,
            "entrypoint": "flows/ops/promotion.py:promote",
            "kwargs": {
                "name": ALARM_PROMOTE_DEPLOYMENT,
                "triggers": [promote_after_alarm_trigger()],
                "parameters": {"actor": "prefect-automation", "reason": "a retrain started by a monitoring alarm completed"},
                "description": "Challenger vs champion after an alarm retrain (evaluation sets and holdout feedback); "
                "the audit entry names the alarm and the retrain run.",
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


def build_deployments(
    retrain_parameters: dict[str, Any] | None = None, cooldown_minutes: float = DEFAULT_COOLDOWN_MINUTES
) -> list:
    """RunnerDeployments for `prefect.serve`."""
    return [spec["flow"].to_deployment(**spec["kwargs"]) for spec in deployment_specs(retrain_parameters, cooldown_minutes)]


def serve_deployments(
    retrain_parameters: dict[str, Any] | None = None, limit: int | None = 1,
    cooldown_minutes: float = DEFAULT_COOLDOWN_MINUTES,
) -> None:
    """Serve every deployment from this process until interrupted (runs execute in subprocesses)."""
    from prefect import serve

    serve(*build_deployments(retrain_parameters, cooldown_minutes), limit=limit)


def deploy_to_server(
    work_pool: str = DEFAULT_WORK_POOL, retrain_parameters: dict[str, Any] | None = None, source: Path = REPO_ROOT,
    cooldown_minutes: float = DEFAULT_COOLDOWN_MINUTES,
) -> dict[str, str]:
    """Create (or update) the deployments on the server at PREFECT_API_URL, to be run by a process
    worker of `work_pool` from `source` (this checkout). Creates the work pool when missing.
    Returns deployment name -> id."""
    from prefect import Flow

    ensure_process_work_pool(work_pool)
    ids = {}
    for spec in deployment_specs(retrain_parameters, cooldown_minutes):
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
