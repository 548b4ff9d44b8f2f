"""The MLflow adapter: tracking runs, registering guard versions, aliases, version tags, artifacts.
Aliases only, never stages. The rest of the code reaches MLflow through the functions here (and a
registered model through `flows.guard.guard.Guard.load`); nothing outside `flows/guard/` imports mlflow.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from flows import settings
from flows.faults import fault_point
from flows.guard.names import (  # noqa: F401 - re-exported: the registry's names live with it
    CHALLENGER,
    CHAMPION,
    DEFAULT_CHALLENGER_URI,
    DEFAULT_CHAMPION_URI,
    DEFAULT_MODEL_NAME,
    alias_uri,
    parse_model_uri,
    version_uri,
)

MODEL_ARTIFACT_NAME = "guard"
# Which process owns a registration run, so a later run can tell a killed one from one in progress.
OWNER_PID_TAG, OWNER_HOST_TAG = "ebmops.pid", "ebmops.host"
ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")
METRICS_PER_BATCH = 1000

# What the registry raises for a missing version, a bad request or a server error.
RegistryError = MlflowException


@dataclass(frozen=True)
class RegisteredVersion:
    model_name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    model_uri: str
    # Why the version did or did not become champion (set by the pipeline after its audited decision).
    note: str = ""


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


def guard_signature(feature_names: list[str], accepts_text: bool = False) -> ModelSignature:
    """A vector guard takes one (-1, D) float64 tensor, its columns the features in order (a request
    `{"inputs": [[...], ...]}`; the serving middleware matches named-column forms into it). A text
    guard takes either a `text` column or the embedding columns, which one signature cannot express:
    it declares no inputs, and its predict validates the input itself. Both declare the params
    (`explain`: nearest training examples of flagged rows, 0 = off) and the outputs."""
    from mlflow.types import ParamSchema, ParamSpec, TensorSpec

    from flows.guard.input_checks import EXPLAIN_PARAM

    outputs = Schema([
        ColSpec("double", "energy"), ColSpec("double", "p_value"), ColSpec("boolean", "is_ood"),
        ColSpec("string", "neighbours", required=False),  # only with params explain > 0
    ])
    params = ParamSchema([ParamSpec(EXPLAIN_PARAM, "long", 0)])
    inputs = None if accepts_text else Schema([TensorSpec(np.dtype(np.float64), (-1, len(feature_names)))])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def guard_input_example(feature_names: list[str], accepts_text: bool = False):
    """One all-zero row in the tensor form (None for a text guard: its example would need the embedder)."""
    return None if accepts_text else np.zeros((1, len(feature_names)), dtype=np.float64)


def column_signature(feature_names: list[str]) -> ModelSignature:
    """The signature versions had before the tensor form (one double column per feature, no params).
    Such versions still load and serve; kept so tests can register one."""
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
    candidate_runs: list[dict] | None = None,
) -> RegisteredVersion:
    """One MLflow run with params, metrics and artifacts; a new model version aliased `challenger`.
    Whether a first version also becomes `champion` is decided by the audited gates of
    `flows.ops.promotion.bootstrap_champion`, never here. `candidate_runs` (the selection stage's candidate
    summaries) become nested runs of that run, one per candidate, with its validation figures."""
    configure_tracking()
    experiment_id = ensure_experiment(experiment_name)
    client = MlflowClient()
    owner = {OWNER_PID_TAG: str(os.getpid()), OWNER_HOST_TAG: socket.gethostname()}
    with mlflow.start_run(experiment_id=experiment_id, tags={**(tags or {}), **owner}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        log_step_metrics(client, run.info.run_id, step_metrics or {})
        for subdir, path in artifacts.items():
            mlflow.log_artifact(str(path), artifact_path=subdir)
        _log_candidate_runs(client, experiment_id, run.info.run_id, candidate_runs or [])
        model_info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=str(ENTRY_FILE),
            artifacts={"detector": str(detector_dir)},
            signature=guard_signature(feature_names, accepts_text),
            input_example=guard_input_example(feature_names, accepts_text),
            registered_model_name=model_name,
            pip_requirements=serving_requirements(),
        )
        version = str(model_info.registered_model_version)
        fault_point("register.in_run")  # version created, run still RUNNING
    fault_point("register.after_version")
    record_artifact_digests(model_name, version)  # before any alias points at it
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    return RegisteredVersion(
        model_name=model_name,
        version=version,
        run_id=run.info.run_id,
        aliases=(CHALLENGER,),
        model_uri=version_uri(model_name, version),
    )


def close_abandoned_runs(experiment_name: str) -> list[str]:
    """Mark KILLED the runs of `experiment_name` still RUNNING whose registering process, on this host,
    is gone (a kill -9 inside `log_model` leaves its run RUNNING). Returns their ids."""
    configure_tracking()
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    host, closed = socket.gethostname(), []
    for run in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if tags.get(OWNER_HOST_TAG) != host or not tags.get(OWNER_PID_TAG, "").isdigit():
            continue
        if _process_alive(int(tags[OWNER_PID_TAG])):
            continue
        client.set_tag(run.info.run_id, "ebmops.abandoned", "its process ended before the run finished")
        client.set_terminated(run.info.run_id, status="KILLED")
        closed.append(run.info.run_id)
    return closed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _log_candidate_runs(client: MlflowClient, experiment_id: str, parent_run_id: str, candidates: list[dict]) -> None:
    """One nested run per selection candidate: validation figures as metrics (per-fold ones as steps),
    how it was built as params. Three store calls per candidate (create, one batch, end) and the run
    context (user, source, git commit) resolved once, instead of a fluent call per value."""
    if not candidates:
        return
    import time

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking.context.registry import resolve_tags

    context = {**resolve_tags(), "mlflow.parentRunId": parent_run_id}
    for candidate in candidates:
        status = "FAILED" if candidate.get("error") else "FINISHED"
        tags = {**context, "ebmops.stage": "selection", "ebmops.candidate": candidate["name"][:5000]}
        run_id = client.create_run(experiment_id, tags=tags, run_name=candidate["name"][:250]).info.run_id
        params = {
            "family": candidate["family"],
            "kind": candidate["kind"],
            "members": ",".join(candidate.get("members") or []) or "-",
            "weights": ",".join(f"{w:.6g}" for w in candidate.get("weights") or []) or "-",
        }
        values = {
            "val_auroc": candidate.get("val_auroc"),
            "val_fpr95": candidate.get("val_fpr95"),
            "fit_seconds": candidate.get("fit_seconds"),
            "score_us_per_row": candidate.get("score_us_per_row"),
        }
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None and np.isfinite(v)]
        for i, (a, f) in enumerate(zip(candidate.get("fold_auroc") or [], candidate.get("fold_fpr95") or [])):
            if a is not None:
                metrics.append(Metric("fold_auroc", float(a), now, i))
            if f is not None:
                metrics.append(Metric("fold_fpr95", float(f), now, i))
        failure = [RunTag("ebmops.failure", str(candidate["error"])[:5000])] if candidate.get("error") else []
        client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()], tags=failure)
        client.set_terminated(run_id, status=status)


def log_step_metrics(client: MlflowClient, run_id: str, series: dict[str, list[tuple[int, float]]]) -> None:
    """Training telemetry (e_pos, e_neg, gradient norms, ...) as step metrics, in batches."""
    points = [(f"train.{name}", value, step) for name, values in series.items() for step, value in values]
    _log_metric_points(client, run_id, points)


def _log_metric_points(client: MlflowClient, run_id: str, points: list[tuple[str, float, int]]) -> None:
    """(key, value, step) triples, finite values only, in batches of METRICS_PER_BATCH."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, int(step)) for key, value, step in points if np.isfinite(value)]
    for start in range(0, len(metrics), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_BATCH])


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


def set_alias(model_name: str, alias: str, version: str) -> None:
    """Point `alias` at `version` (moving it when it points elsewhere)."""
    MlflowClient().set_registered_model_alias(model_name, alias, str(version))


def restore_alias(model_name: str, alias: str, version: str | None) -> None:
    """Put `alias` back where it was: on `version`, or removed when it did not exist (None)."""
    if version is None:
        MlflowClient().delete_registered_model_alias(model_name, alias)
    else:
        set_alias(model_name, alias, version)


def resolve_model_uri(model_uri: str) -> tuple[str, str]:
    """models:/<name>@<alias> or models:/<name>/<version> -> (name, fixed version). ValueError for any
    other form, LookupError when the alias does not exist."""
    name, alias, version = parse_model_uri(model_uri)
    if alias is not None:
        configure_tracking()
        version = get_alias_version(name, alias)
        if version is None:
            raise LookupError(f"model {name!r} has no alias {alias!r} (nothing registered yet?)")
    return name, str(version)


@dataclass(frozen=True)
class VersionInfo:
    model_name: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]


def get_version(model_name: str, version: str) -> VersionInfo:
    """A registered version's run, aliases and tags; raises RegistryError when it does not exist."""
    found = MlflowClient().get_model_version(model_name, str(version))
    return VersionInfo(
        model_name=model_name,
        version=str(found.version),
        run_id=found.run_id or None,
        aliases=tuple(sorted(found.aliases)),
        tags=dict(found.tags),
    )


def version_aliases(model_name: str, version: str) -> tuple[str, ...]:
    return get_version(model_name, version).aliases


def tag_version(model_name: str, version: str, tags: dict[str, object]) -> None:
    """Set tags on a model version (values as strings)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, str(value))


def load_pyfunc(model_uri: str):
    """The MLflow pyfunc of a registered version, loaded from a copy whose every file matches the
    digests recorded at registration (`Guard.load` is the way in for the rest of the code)."""
    import tempfile

    configure_tracking()
    name, version = resolve_model_uri(model_uri)
    holder = tempfile.TemporaryDirectory(prefix="ebmops-model-")
    local = verified_model_copy(name, version, Path(holder.name))
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # ebmops stores no pickle: never load one
    model = mlflow.pyfunc.load_model(str(local))
    model._ebmops_verified_copy = holder  # the copy lives as long as the model
    return model


# --- artifact integrity: digests recorded at registration, checked before every load or serve -------
ARTIFACT_DIGESTS_TAG = "ebmops.artifact_sha256"


class IntegrityError(RuntimeError):
    """A registered version's stored files are not the ones registered (edited, added or removed), or no
    digests were recorded for it. Loading it could run code someone planted, so it is refused."""


def artifact_manifest(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory`, by path relative to it."""
    from evaluation.files import file_sha256

    directory = Path(directory)
    return {
        path.relative_to(directory).as_posix(): file_sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _download_version(model_name: str, version: str, dst: Path) -> Path:
    configure_tracking()
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=version_uri(model_name, version), dst_path=str(dst)))


def record_artifact_digests(model_name: str, version: str) -> dict[str, str]:
    """Tag the version with the sha256 of each of its stored files (the registry's database holds the tag,
    the artifact store the files, so editing the files alone is detected)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ebmops-digest-") as tmp:
        manifest = artifact_manifest(_download_version(model_name, version, Path(tmp)))
    MlflowClient().set_model_version_tag(
        model_name, version, ARTIFACT_DIGESTS_TAG, json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    )
    return manifest


def verified_model_copy(model_name: str, version: str, dst: Path) -> Path:
    """Download the version's files into dst and check them against the recorded digests."""
    configure_tracking()
    recorded = get_version(model_name, version).tags.get(ARTIFACT_DIGESTS_TAG)
    if recorded is None:
        raise IntegrityError(
            f"{model_name} version {version} has no recorded artifact digests (registered before ebmops recorded "
            "them, or the tag was removed): it cannot be verified and is not loaded; register it again"
        )
    try:
        expected = json.loads(recorded)
    except ValueError:
        expected = None
    if not (
        isinstance(expected, dict) and expected
        and all(isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in expected.items())
    ):
        raise IntegrityError(
            f"{model_name} version {version}: its recorded artifact digests ({ARTIFACT_DIGESTS_TAG}) are not a "
            "manifest of sha256 digests (the tag was edited): it cannot be verified and is not loaded"
        )
    try:
        local = _download_version(model_name, version, dst)
    except MlflowException as error:
        # MLflow refuses a stored file that resolves outside the artifact folder (a planted symlink)
        text = str(error)
        if "outside the artifact directory" not in text:
            raise
        import re

        files = sorted(set(re.findall(r"##### File (.+?) #####", text))) or ["(unnamed)"]
        raise IntegrityError(
            f"{model_name} version {version}: stored files differ from the ones registered (resolve outside the "
            f"artifact folder: {', '.join(files[:5])}); it is not loaded"
        ) from None
    found = artifact_manifest(local)
    changed = sorted(p for p in expected.keys() & found.keys() if expected[p] != found[p])
    added, removed = sorted(found.keys() - expected.keys()), sorted(expected.keys() - found.keys())
    if changed or added or removed:
        parts = [f"{what}: {', '.join(paths[:5])}" + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
                 for what, paths in
                 (("changed", changed), ("added", added), ("removed", removed)) if paths]
        raise IntegrityError(
            f"{model_name} version {version}: stored files differ from the ones registered ({'; '.join(parts)}); "
            "it is not loaded"
        )
    return local


def download_artifact(run_id: str, artifact_path: str, dst_dir: Path) -> Path:
    """One artifact of a run, copied under dst_dir; raises when the run or the artifact is missing."""
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst_dir)))


# --- runs outside `log_and_register`: promotion audit runs, monitoring runs --------------------


def create_run(experiment_name: str, run_name: str | None = None, tags: dict[str, str] | None = None) -> str:
    """A new run (status RUNNING until `finish_run`) in `experiment_name`, created when missing."""
    experiment_id = ensure_experiment(experiment_name)
    return MlflowClient().create_run(experiment_id, run_name=run_name, tags=tags or {}).info.run_id


def run_exists(run_id: str) -> bool:
    """False for a deleted run or one on a different tracking server."""
    try:
        MlflowClient().get_run(run_id)
    except Exception:  # noqa: BLE001 - any failure to read it means "look it up again"
        return False
    return True


def find_run(experiment_name: str, tags: dict[str, str]) -> str | None:
    """The id of one run of `experiment_name` carrying all `tags`, or None."""
    experiment_id = ensure_experiment(experiment_name)
    filter_string = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    found = MlflowClient().search_runs([experiment_id], filter_string=filter_string, max_results=1)
    return found[0].info.run_id if found else None


def runs_with_tags(experiment_name: str, tag_prefix: str, max_results: int = 5000) -> list[tuple[int, dict[str, str]]]:
    """(start time in ms, tags starting with `tag_prefix`) of every run of `experiment_name`, oldest
    first; empty when the experiment does not exist."""
    experiment = MlflowClient().get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    runs = MlflowClient().search_runs([experiment.experiment_id], max_results=max_results, order_by=["attributes.start_time ASC"])
    return [
        (int(run.info.start_time or 0), {k: v for k, v in run.data.tags.items() if k.startswith(tag_prefix)})
        for run in runs
    ]


def log_params(run_id: str, params: dict[str, object]) -> None:
    from mlflow.entities import Param

    MlflowClient().log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Metrics at one step, in one batch; non-finite values are skipped."""
    _log_metric_points(MlflowClient(), run_id, [(key, value, step) for key, value in metrics.items()])


def log_artifacts(run_id: str, directory: Path, artifact_path: str | None = None) -> None:
    MlflowClient().log_artifacts(run_id, str(directory), artifact_path=artifact_path)


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    MlflowClient().set_terminated(run_id, status)


def write_json(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path


def metric_steps(run_id: str, key: str) -> list[int]:
    """The steps at which metric `key` was logged in run `run_id`, one per logged point (a step
    logged twice appears twice); empty when the metric was never logged."""
    return [int(m.step) for m in MlflowClient().get_metric_history(run_id, key)]
