"""MLflow adapter: tracking runs, registering guard versions, aliases. Aliases only, never stages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from flows import settings

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_ARTIFACT_NAME = "guard"
ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")


@dataclass(frozen=True)
class RegisteredVersion:
    model_name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    model_uri: str


def configure_tracking() -> str:
    uri = settings.tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """Experiment id; a new experiment stores artifacts under `$EBMOPS_HOME/artifacts` when local."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if settings.tracking_uri().startswith("sqlite:"):
        artifact_location = settings.artifact_root().as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def guard_signature(feature_names: list[str]) -> ModelSignature:
    inputs = Schema([ColSpec("double", name) for name in feature_names])
    outputs = Schema([ColSpec("double", "energy"), ColSpec("double", "p_value"), ColSpec("boolean", "is_ood")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_and_register(
    *,
    experiment_name: str,
    model_name: str,
    params: dict[str, str],
    metrics: dict[str, float],
    artifacts: dict[str, Path],
    detector_dir: Path,
    feature_names: list[str],
    tags: dict[str, str] | None = None,
    step_metrics: dict[str, list[tuple[int, float]]] | None = None,
    accepts_text: bool = False,
) -> RegisteredVersion:
    """One MLflow run with params, metrics and artifacts; a new model version aliased `challenger`
    (and `champion` when the model has none yet)."""
    configure_tracking()
    experiment_id = ensure_experiment(experiment_name)
    client = MlflowClient()
    with mlflow.start_run(experiment_id=experiment_id, tags=tags or {}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        log_step_metrics(client, run.info.run_id, step_metrics or {})
        for subdir, path in artifacts.items():
            mlflow.log_artifact(str(path), artifact_path=subdir)
        # A text guard takes either a `text` column or the embedding columns, which one signature
        # cannot express; its predict validates the input itself.
        input_example = None if accepts_text else pd.DataFrame([np.zeros(len(feature_names))], columns=feature_names)
        model_info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=str(ENTRY_FILE),
            artifacts={"detector": str(detector_dir)},
            signature=None if accepts_text else guard_signature(feature_names),
            input_example=input_example,
            registered_model_name=model_name,
            pip_requirements=serving_requirements(),
        )
        version = str(model_info.registered_model_version)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    aliases = [CHALLENGER]
    if get_alias_version(model_name, CHAMPION) is None:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        aliases.append(CHAMPION)
    return RegisteredVersion(
        model_name=model_name,
        version=version,
        run_id=run.info.run_id,
        aliases=tuple(aliases),
        model_uri=f"models:/{model_name}/{version}",
    )


def log_step_metrics(client: MlflowClient, run_id: str, series: dict[str, list[tuple[int, float]]]) -> None:
    """Training telemetry (e_pos, e_neg, gradient norms, ...) as step metrics, in batches."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"train.{name}", float(value), now, int(step))
        for name, points in series.items()
        for step, value in points
        if np.isfinite(value)
    ]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def serving_requirements() -> list[str]:
    """Pinned from the running environment; naming them skips MLflow's slow dependency inference."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "torch", "numpy", "pandas", "safetensors")]


def log_failed_validation(experiment_name: str, params: dict[str, str], data_check_path: Path, message: str) -> str:
    """Keep the data-check result of a stopped run in MLflow (a FAILED run, no model version)."""
    configure_tracking()
    experiment_id = ensure_experiment(experiment_name)
    with mlflow.start_run(experiment_id=experiment_id, tags={"ebmops.stage": "validate"}) as run:
        mlflow.log_params(params)
        mlflow.log_artifact(str(data_check_path), artifact_path="data_checks")
        mlflow.set_tag("ebmops.failure", message[:5000])
        mlflow.end_run(status="FAILED")
    return run.info.run_id


def get_alias_version(model_name: str, alias: str) -> str | None:
    """The version behind `alias`, or None when the model or the alias does not exist. Any other
    failure (database, network) is raised: treating it as "no champion" would skip the gates."""
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException as error:
        if error.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise


def version_aliases(model_name: str, version: str) -> tuple[str, ...]:
    return tuple(sorted(MlflowClient().get_model_version(model_name, version).aliases))


def write_json(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path
