"""Day-to-day operations on the command line: `ebmops promote | rollback | history | serve | deploy`.

Plain typer-compatible functions; flows/cli/app.py registers them, e.g.
`app.command("promote")(promote_command)`. Exit status of `promote`: 0 when the challenger was promoted
(or already was the champion), 1 when a gate refused it, 2 for unusable input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from flows.cli.summary import print_comparison, print_decision, print_history, refuse
from flows.guard.names import DEFAULT_CHAMPION_URI, DEFAULT_MODEL_NAME

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


def promote_command(
    model_name: str = typer.Option(DEFAULT_MODEL_NAME, "--model", help="Registered model name."),
    data_dir: Optional[Path] = typer.Option(
        None,
        "--data-dir",
        help="Current evaluation data: a folder with in_test.parquet and ood_*.parquet (or a pipeline run "
        "folder holding data/). Default: the data of the latest pipeline run in $EBMOPS_HOME/runs.",
    ),
    gates: Optional[Path] = typer.Option(None, "--gates", help="Gates YAML (default: flows/pipeline/configs/gates.yaml)."),
    actor: Optional[str] = typer.Option(None, "--actor", help="Who decides (default: the login name)."),
    reason: str = typer.Option("", "--reason", help="Why (kept in the audit log)."),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", min=100, help="Bootstrap resamples per report."),
    allow_rolled_back: bool = typer.Option(
        False, "--allow-rolled-back", help="Consider a challenger that was rolled back before."
    ),
) -> None:
    """Score champion and challenger on the same current data, compare them with the gates, and move
    `champion` to the challenger only when every gate passes. Audited (log, MLflow run, version tags)."""
    from evaluation.compare import ReportComparison
    from flows.guard.registry import IntegrityError, RegistryError
    from flows.ops.promotion import PromotionError, promote

    console = Console()
    try:
        result = promote(
            model_name=model_name,
            data_dir=None if data_dir is None else str(data_dir),
            gates_path=None if gates is None else str(gates),
            actor=actor,
            reason=reason,
            n_bootstrap=n_bootstrap,
            allow_rolled_back=allow_rolled_back,
        )
    except (PromotionError, OSError, ValueError, LookupError, RegistryError, IntegrityError) as error:
        refuse(error, code=EXIT_BAD_INPUT)
    if result.comparison_json:
        comparison = ReportComparison.read_json(result.comparison_json)
        print_comparison(
            comparison,
            console,
            Path(result.report_paths["champion"]),
            Path(result.report_paths["challenger"]),
            Path(result.entry["gates_file"]),
        )
    print_decision(result, console)
    if result.decision == "refused":
        raise typer.Exit(code=EXIT_REFUSED)


def rollback_command(
    model_name: str = typer.Option(DEFAULT_MODEL_NAME, "--model", help="Registered model name."),
    to_version: Optional[str] = typer.Option(
        None, "--to", help="Version to restore (default: the previous champion in the audit log)."
    ),
    actor: Optional[str] = typer.Option(None, "--actor", help="Who decides (default: the login name)."),
    reason: str = typer.Option("", "--reason", help="Why (kept in the audit log)."),
) -> None:
    """Restore the previous champion (audited; the removed version is tagged so promote refuses it)."""
    from flows.guard.registry import IntegrityError, RegistryError
    from flows.ops.promotion import PromotionError, rollback

    console = Console()
    try:
        result = rollback(model_name=model_name, to_version=to_version, actor=actor, reason=reason)
    except (PromotionError, RegistryError, IntegrityError, OSError, ValueError, LookupError) as error:
        refuse(error, code=EXIT_BAD_INPUT)
    print_decision(result, console)


def history_command(
    model_name: str = typer.Option(DEFAULT_MODEL_NAME, "--model", help="Registered model name."),
    limit: int = typer.Option(50, "--limit", min=1, help="Show the latest N entries."),
) -> None:
    """The champion's history from the audit log: every promotion decision and rollback."""
    from flows.guard import registry
    from flows.ops.audit import audit_log_path
    from flows.ops.promotion import champion_history, reason_chain_lines

    console = Console()
    try:
        registry.configure_tracking()
        rows = champion_history(model_name)[-limit:]
        champion = registry.get_alias_version(model_name, registry.CHAMPION)
        challenger = registry.get_alias_version(model_name, registry.CHALLENGER)
    except (registry.RegistryError, OSError, ValueError, LookupError) as error:
        refuse(error, code=EXIT_BAD_INPUT)  # an unreadable audit log or registry
    print_history([row for row in rows if row["action"] != "retrain"], console, model_name)
    for line in reason_chain_lines(rows):  # alarm -> retrain -> promotion, one line per alarm
        console.print(escape(line), soft_wrap=True)
    console.print(f"Now: champion v{champion}, challenger v{challenger}.  Log: {escape(str(audit_log_path()))}")


def serve_command(
    port: int = typer.Option(5000, "--port", "-p", help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 for every interface)."),
    model_uri: str = typer.Option(DEFAULT_CHAMPION_URI, "--model-uri", help="Model to serve."),
    workers: int = typer.Option(1, "--workers", min=1, help="uvicorn worker processes."),
    max_rows: Optional[int] = typer.Option(
        None, "--max-rows", min=1, help="Largest request in rows (default: $EBMOPS_MAX_ROWS or 10000)."
    ),
) -> None:
    """Serve the champion over HTTP with MLflow's scoring server: POST /invocations with
    {"inputs": [[...], ...]} (one feature vector per row; named columns as "dataframe_split" are also accepted,
    a text guard takes {"dataframe_split": {"columns": ["text"], "data": [["..."]]}}), optional
    "params": {"explain": k} for the k nearest training examples of flagged rows -> energy, p_value, is_ood
    per row; GET /ping."""
    from flows import settings
    from flows.guard.serving import serve_forever

    from flows.guard import registry

    tracking = os.environ.get("MLFLOW_TRACKING_URI") or settings.tracking_uri()
    Console(soft_wrap=True).print(
        f"Serving {escape(model_uri)} from {escape(tracking)} on http://{host}:{port} once its files are "
        "verified (Ctrl-C stops)"
    )
    try:
        status = serve_forever(model_uri, host, port, workers, max_rows)
    except (registry.IntegrityError, registry.RegistryError, LookupError, ValueError, OSError) as error:
        refuse(error, "Not serving", code=EXIT_BAD_INPUT)
    raise typer.Exit(code=status)


def deploy_command(
    serve: bool = typer.Option(
        False, "--serve", help="Serve the deployments from this process (until Ctrl-C) instead of registering "
        "them on the Prefect server for a worker."
    ),
    work_pool: str = typer.Option("ebmops", "--work-pool", help="Process work pool for `deploy` (created if missing)."),
    training_steps: Optional[int] = typer.Option(
        None, "--training-steps", min=1, help="Default training budget of the nightly retraining."
    ),
    config: Optional[Path] = typer.Option(None, "--config", help="Pipeline YAML for the nightly retraining."),
    cooldown_minutes: float = typer.Option(
        60.0, "--cooldown-minutes", min=0.0,
        help="Retrain-on-alarm: an alarm within this many minutes of the previous alarm-started retraining of "
        "the same model starts no new one (the skip is written to the audit log).",
    ),
) -> None:
    """Scheduled operations as Prefect deployments: nightly retraining (cron 0 3 * * *) and a promotion
    triggered by each completed retraining; hourly monitoring; a retraining on the feedback store started
    by each monitoring alarm (one at a time, with a cool-down) and a promotion after it. Without --serve
    they are created on the server at PREFECT_API_URL (start a worker: `prefect worker start --pool ebmops`)."""
    from flows.ops.deployments import (
        ALARM_PROMOTE_DEPLOYMENT,
        ALARM_RETRAIN_DEPLOYMENT,
        MONITOR_CRON,
        MONITOR_DEPLOYMENT,
        PROMOTE_DEPLOYMENT,
        RETRAIN_CRON,
        RETRAIN_DEPLOYMENT,
        deploy_to_server,
        serve_deployments,
    )

    console = Console()
    parameters = {}
    if training_steps is not None:
        parameters["training_steps"] = training_steps
    if config is not None:
        parameters["config_path"] = str(config.resolve())
    console.print(
        f"retrain/{RETRAIN_DEPLOYMENT} (cron {RETRAIN_CRON}); promote/{PROMOTE_DEPLOYMENT} "
        f"(on prefect.flow-run.Completed of {RETRAIN_DEPLOYMENT}); monitor-traffic/{MONITOR_DEPLOYMENT} (cron {MONITOR_CRON}); "
        f"retrain/{ALARM_RETRAIN_DEPLOYMENT} (on ebmops.monitor.alarm, cool-down {cooldown_minutes:g} min); "
        f"promote/{ALARM_PROMOTE_DEPLOYMENT} (after it)"
    )
    if serve:
        serve_deployments(parameters, cooldown_minutes=cooldown_minutes)
        return
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        console.print("[bold red]error:[/bold red] PREFECT_API_URL is not set: point it at a Prefect server, or use --serve")
        raise typer.Exit(code=EXIT_BAD_INPUT)
    ids = deploy_to_server(work_pool, parameters, cooldown_minutes=cooldown_minutes)
    for name, deployment_id in ids.items():
        console.print(f"created {escape(name)}: {deployment_id}")
    console.print(f"Run them with a worker: prefect worker start --pool {escape(work_pool)}")
