"""The registry invariants every fault test checks afterwards (issue 12):

- every model version that holds an alias loads through the one door (`Guard.load`, digests verified);
- every other version either loads too or is a leftover a crash made (no recorded digests) that holds
  no alias;
- the audit log reads without error, and every intent record has its outcome (completed or undone);
- the champion alias points where the audit log says it does (when the log has an entry for the model).

`registry_snapshot` captures what a "registry unchanged" assertion compares: versions, aliases, the
audit log's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.guard import registry
from flows.guard.names import DEFAULT_MODEL_NAME


@dataclass(frozen=True)
class RegistrySnapshot:
    versions: tuple[str, ...]
    aliases: dict
    audit_bytes: bytes

    def describe(self) -> str:
        return f"versions={list(self.versions)} aliases={self.aliases} audit_bytes={len(self.audit_bytes)}"


def _model_versions(model_name: str) -> list:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    registry.configure_tracking()
    try:
        return list(MlflowClient().search_model_versions(f"name='{model_name}'"))
    except MlflowException:
        return []


def _aliases(model_name: str) -> dict:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    registry.configure_tracking()
    try:
        return {alias: str(version) for alias, version in MlflowClient().get_registered_model(model_name).aliases.items()}
    except MlflowException:
        return {}


def registry_snapshot(model_name: str = DEFAULT_MODEL_NAME) -> RegistrySnapshot:
    from flows.ops import audit

    path = audit.audit_log_path()
    return RegistrySnapshot(
        versions=tuple(sorted((str(v.version) for v in _model_versions(model_name)), key=int)),
        aliases=_aliases(model_name),
        audit_bytes=path.read_bytes() if path.exists() else b"",
    )


def assert_registry_invariants(model_name: str = DEFAULT_MODEL_NAME) -> RegistrySnapshot:
    """Raise AssertionError naming the broken invariant; return the snapshot that held."""
    from flows.guard.guard import Guard
    from flows.ops import audit

    aliases = _aliases(model_name)
    aliased = set(aliases.values())
    for info in _model_versions(model_name):
        version = str(info.version)
        has_digests = registry.ARTIFACT_DIGESTS_TAG in (info.tags or {})
        if version in aliased or has_digests:
            try:
                Guard.load(registry.version_uri(model_name, version))
            except Exception as error:  # noqa: BLE001 - any failure to load breaks the invariant
                raise AssertionError(
                    f"version {version} (aliases {[a for a, v in aliases.items() if v == version]}) does not load: {error}"
                ) from error
        else:
            assert version not in aliased, f"version {version} has no recorded digests but holds an alias"

    entries = audit.read_entries(model_name=model_name)  # raises on a corrupt log
    open_intents = audit.open_intents(entries)
    assert not open_intents, f"audit intents without an outcome: {[e['audit_id'] for e in open_intents]}"
    stack = audit.champion_stack(entries)
    if stack:
        assert aliases.get(registry.CHAMPION) == stack[-1], (
            f"champion alias is {aliases.get(registry.CHAMPION)} but the audit log says {stack[-1]}"
        )
    return registry_snapshot(model_name)


def audit_lines(path: Path | None = None) -> list[str]:
    from flows.ops import audit

    path = path or audit.audit_log_path()
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
