"""Tampered model files are refused before anything of them runs.

One guard is registered (tests/flows/guard_factory.py); each case then edits its stored files under
$EBMOPS_HOME/artifacts (or its digest tag) in one way, and checks that

- `Guard.load` raises `registry.IntegrityError` whose message is one line naming the file (or the tag);
- `ebmops serve` refuses in at most 3 lines, exit status 2, before any server process starts;
- the payload planted by the case (code that would create a marker file) never runs.

The store is copied before each case and put back after it; the last test loads the restored guard
again. A control test shows the payloads are live: loaded with MLflow directly, without the digest
check, the appended code does run.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.guard import registry
from flows.guard.guard import Guard

pytestmark = pytest.mark.slow  # registers a guard (trains a small energy), then ~20 loads

KINDS_REFUSED: list[str] = []


def _payload_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('payload ran')"


class _Payload:
    """Unpickling this runs the payload (what a planted pickle would do)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A registered guard; yields (model folder in the store, registered version, backup of the store)."""
    from tests.flows.guard_factory import prepare_data, register_version

    root = tmp_path_factory.mktemp("tamper")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EBMOPS_HOME", str(root / "home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        data, check = prepare_data(root / "data", check=False)
        registered = register_version(data, check, root / "work", n_steps=20)
        artifacts = root / "home" / "artifacts"
        folders = [p.parent for p in artifacts.rglob("MLmodel")]
        assert len(folders) == 1, folders
        backup = root / "artifacts-backup"
        shutil.copytree(artifacts, backup, symlinks=True)
        yield {"folder": folders[0], "registered": registered, "artifacts": artifacts, "backup": backup,
               "root": root}


@pytest.fixture
def restore(stored):
    """Put the store and the digest tag back as they were, whatever the case did."""
    registered = stored["registered"]
    tag = registry.get_version(registered.model_name, registered.version).tags[registry.ARTIFACT_DIGESTS_TAG]
    yield
    shutil.rmtree(stored["artifacts"])
    shutil.copytree(stored["backup"], stored["artifacts"], symlinks=True)
    registry.tag_version(registered.model_name, registered.version, {registry.ARTIFACT_DIGESTS_TAG: tag})


def _detector_dir(folder: Path) -> Path:
    return next(folder.rglob("detector.json")).parent


def _edit_detector_json(folder: Path, edit) -> str:
    path = _detector_dir(folder) / "detector.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, allow_nan=True))
    return "detector.json"


def _edit_mlmodel(folder: Path, edit) -> None:
    import yaml

    path = folder / "MLmodel"
    meta = yaml.safe_load(path.read_text())
    edit(meta)
    path.write_text(yaml.safe_dump(meta))


# --- the kinds of tampering: name -> (folder, marker, version info) -> the file (or tag) the refusal names ----

def plant_pickle(folder, marker, registered):
    (folder / "python_model.pkl").write_bytes(pickle.dumps(_Payload(_payload_code(marker))))

    def to_pickle(meta):
        flavor = meta["flavors"]["python_function"]
        flavor.pop("model_code_path", None)
        flavor["loader_module"] = "mlflow.pyfunc.model"
        flavor["python_model"] = "python_model.pkl"

    _edit_mlmodel(folder, to_pickle)
    return "MLmodel"


def append_code_to_entry(folder, marker, registered):
    entry = folder / "pyfunc_entry.py"
    entry.write_text(entry.read_text() + "\n" + _payload_code(marker) + "\n")
    return "pyfunc_entry.py"


def replace_entry(folder, marker, registered):
    entry = folder / "pyfunc_entry.py"
    entry.write_text(_payload_code(marker) + "\n" + entry.read_text())
    return "pyfunc_entry.py"


def edit_weights(folder, marker, registered):
    path = _detector_dir(folder) / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one byte of the last tensor
    path.write_bytes(bytes(data))
    return "weights.safetensors"


def truncate_weights(folder, marker, registered):
    (_detector_dir(folder) / "weights.safetensors").write_bytes(b"")
    return "weights.safetensors"


def threshold_nan(folder, marker, registered):
    return _edit_detector_json(folder, lambda meta: meta.update(threshold=float("nan")))


def threshold_inf_string(folder, marker, registered):
    return _edit_detector_json(folder, lambda meta: meta.update(threshold="inf"))


def threshold_huge(folder, marker, registered):
    return _edit_detector_json(folder, lambda meta: meta.update(threshold=1e9))


def config_edited(folder, marker, registered):
    return _edit_detector_json(folder, lambda meta: meta["config"].update(hidden_dims=[0]))


def file_removed(folder, marker, registered):
    (folder / "python_env.yaml").unlink()
    return "python_env.yaml"


def file_added(folder, marker, registered):
    (_detector_dir(folder) / "sitecustomize.py").write_text(_payload_code(marker) + "\n")
    return "sitecustomize.py"


def mlmodel_flavor_changed(folder, marker, registered):
    (folder / "model.pkl").write_bytes(pickle.dumps(_Payload(_payload_code(marker))))

    def to_sklearn(meta):
        meta["flavors"]["python_function"] = {
            "loader_module": "mlflow.sklearn", "model_path": "model.pkl", "env": {"conda": "conda.yaml"},
            "python_version": "3.11.7",
        }
        meta["flavors"]["sklearn"] = {"pickled_model": "model.pkl", "serialization_format": "cloudpickle"}

    _edit_mlmodel(folder, to_sklearn)
    return "MLmodel"


def mlmodel_code_path_added(folder, marker, registered):
    code = folder / "code"
    code.mkdir()
    (code / "numpy.py").write_text(_payload_code(marker) + "\n")
    _edit_mlmodel(folder, lambda meta: meta["flavors"]["python_function"].update(code="code"))
    return "MLmodel"


def requirements_edited(folder, marker, registered):
    path = folder / "requirements.txt"
    path.write_text(path.read_text() + "evil-package==6.6.6\n")
    return "requirements.txt"


def conda_edited(folder, marker, registered):
    path = folder / "conda.yaml"
    path.write_text(path.read_text().replace("dependencies:", "dependencies:\n- pip: [evil-package]", 1))
    return "conda.yaml"


def symlinked_detector_json(folder, marker, registered):
    target = _detector_dir(folder) / "detector.json"
    elsewhere = folder.parent / "elsewhere.json"
    meta = json.loads(target.read_text())
    meta["threshold"] = 1e9
    elsewhere.write_text(json.dumps(meta))
    target.unlink()
    target.symlink_to(elsewhere)
    return "detector.json"


def digest_tag_removed(folder, marker, registered):
    from mlflow import MlflowClient

    MlflowClient().delete_model_version_tag(registered.model_name, registered.version, registry.ARTIFACT_DIGESTS_TAG)
    return "digests"


def digest_tag_garbled(folder, marker, registered):
    registry.tag_version(registered.model_name, registered.version, {registry.ARTIFACT_DIGESTS_TAG: "{not json"})
    return "digests"


def digest_tag_emptied(folder, marker, registered):
    registry.tag_version(registered.model_name, registered.version, {registry.ARTIFACT_DIGESTS_TAG: "{}"})
    return "digests"


KINDS = {f.__name__: f for f in (
    plant_pickle, append_code_to_entry, replace_entry, edit_weights, truncate_weights, threshold_nan,
    threshold_inf_string, threshold_huge, config_edited, file_removed, file_added, mlmodel_flavor_changed,
    mlmodel_code_path_added, requirements_edited, conda_edited, symlinked_detector_json, digest_tag_removed,
    digest_tag_garbled, digest_tag_emptied,
)}


def _lines(text: str) -> list[str]:
    return [line for line in (l.rsplit("\r", 1)[-1].strip() for l in text.splitlines())
            if line and not re.search(r"\d+%\|", line)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_tampered_store_is_refused_and_nothing_of_it_runs(kind, stored, restore, tmp_path, monkeypatch):
    import flows.guard.serving as serving
    from flows.cli.app import app

    registered = stored["registered"]
    marker = tmp_path / "payload-ran"
    named = KINDS[kind](stored["folder"], marker, registered)

    with pytest.raises(registry.IntegrityError) as refused:
        Guard.load(registered.model_uri)
    message = str(refused.value)
    assert "\n" not in message, message
    assert named in message, f"{kind}: the refusal does not name {named!r}: {message}"
    with pytest.raises(registry.IntegrityError):
        Guard.load(registry.alias_uri(registry.CHALLENGER, registered.model_name))

    def no_server(*args, **kwargs):
        raise AssertionError("a server process was started for a tampered version")

    monkeypatch.setattr(serving.subprocess, "Popen", no_server)
    result = CliRunner().invoke(app, ["serve", "--model-uri", registered.model_uri, "--port", "5999"])
    lines = _lines(result.output)
    assert result.exit_code == 2, f"{kind}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert len(lines) <= 3 and "Traceback" not in result.output, "\n".join(lines)
    assert named in result.output.replace("\n", "") and "Not serving" in result.output, "\n".join(lines)

    assert not marker.exists(), f"{kind}: the planted payload ran"
    KINDS_REFUSED.append(kind)


def test_the_payloads_are_live_without_the_digest_check(stored, restore, tmp_path):
    """The control: MLflow loading the tampered folder directly (no digest check) runs the appended code,
    and unpickling the planted pickle runs its payload. So the refusals above are what stops them."""
    import mlflow

    marker = tmp_path / "payload-ran"
    append_code_to_entry(stored["folder"], marker, stored["registered"])
    mlflow.pyfunc.load_model(str(stored["folder"]))
    assert marker.exists()
    marker.unlink()
    pickle.loads(pickle.dumps(_Payload(_payload_code(marker))))
    assert marker.exists()


def test_zz_restored_guard_loads_and_counts(stored):
    registered = stored["registered"]
    assert Guard.load(registered.model_uri).version == registered.version
    print(f"\ntampering kinds: {len(KINDS)}, refused by Guard.load and `ebmops serve` without running the "
          f"payload: {len(KINDS_REFUSED)}")
    assert len(KINDS) >= 10  # each case fails on its own when its kind is not refused
