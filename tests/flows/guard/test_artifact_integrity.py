"""Stored model files are checked against the sha256 digests recorded at registration before any load:
an edited detector, code appended to the stored entry file, or an MLmodel pointing at a planted file is
refused with a message naming the file, and nothing of it runs."""

from __future__ import annotations

import json
import pickle

import pytest

from flows.guard import registry
from flows.guard.guard import Guard
from tests.flows.guard_factory import prepare_data, register_version

pytestmark = pytest.mark.slow


@pytest.fixture
def registered(ebmops_home, tmp_path):
    data, data_check_path = prepare_data(tmp_path / "data")
    return register_version(data, data_check_path, tmp_path / "work", n_steps=20)


def test_digests_are_recorded_and_an_untouched_version_loads(registered):
    version = registry.get_version(registered.model_name, registered.version)
    manifest = json.loads(version.tags[registry.ARTIFACT_DIGESTS_TAG])
    assert "MLmodel" in manifest and any(p.endswith("weights.safetensors") for p in manifest)
    assert Guard.load(registered.model_uri).version == registered.version


def test_a_version_uri_loads_in_a_fresh_process(registered, ebmops_home):
    """As `ebmops evaluate --model models:/ebm-guard/1` does: nothing has configured tracking yet."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["EBMOPS_HOME"] = str(ebmops_home)
    code = "from flows.guard.guard import Guard; import sys; print(Guard.load(sys.argv[1]).version)"
    result = subprocess.run(
        [sys.executable, "-c", code, registered.model_uri], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == registered.version


@pytest.mark.parametrize("tamper", ["edit_detector_json", "append_code", "plant_pickle"])
def test_tampered_files_are_refused_before_anything_runs(registered, ebmops_home, tmp_path, tamper):
    marker = tmp_path / "pwned"
    # find the stored copy through the artifact root (local store)
    candidates = [p.parent for p in (ebmops_home / "artifacts").rglob("MLmodel")]
    assert candidates, "the local artifact store holds the model"
    for folder in candidates:
        if tamper == "edit_detector_json":
            path = next(folder.rglob("detector.json"))
            meta = json.loads(path.read_text())
            meta["alpha"] = 0.5
            path.write_text(json.dumps(meta))
        elif tamper == "append_code":
            entry = next(p for p in folder.rglob("*.py"))
            entry.write_text(entry.read_text() + f"\nopen({str(marker)!r}, 'w').write('ran')\n")
        else:
            (folder / "python_model.pkl").write_bytes(pickle.dumps({"planted": True}))
    with pytest.raises(registry.IntegrityError, match="differ from the ones registered"):
        Guard.load(registered.model_uri)
    assert not marker.exists()
