"""The demo pipeline end to end under Prefect's test harness, on a reduced training budget."""

import json
from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ebm_core import LangevinSampler, TrainConfig
from evaluation.report import EvalReport
from flows.guard import registry
from flows.pipeline.config import demo_config
from flows.data.datasets import prepare_digits
from flows.pipeline.steps import DataCheckFailed
from flows.pipeline.train_and_register import train_and_register

# Runs the train_and_register flow (twice, module-wide): Prefect's test harness, and slow.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def small_config():
    """The demo's configured detector (no selection stage) on a small budget."""
    config = demo_config()
    detector = replace(
        config.detector,
        hidden_dims=(64, 64),
        sampler=LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=10),
        objective=replace(config.detector.objective, buffer_capacity=2000),
        train=TrainConfig(n_steps=200, batch_size=64, learning_rate=1e-3),
    )
    return replace(config, detector=detector, selection=replace(config.selection, enabled=False))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two pipeline runs in one $EBMOPS_HOME (module-scoped: training is the slow part)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        first = train_and_register(small_config(), progress=False)
        second = train_and_register(small_config(), progress=False)
        registry.configure_tracking()
        yield first, second


def test_first_run_registers_version_1_as_challenger_and_champion(two_runs):
    first, _ = two_runs
    assert first.registered.version == "1"
    assert set(first.registered.aliases) == {"challenger", "champion"}
    assert "passes the gates on its own" in first.registered.note
    assert (first.run_dir / "run_complete.json").exists() and not (first.run_dir / "run_failed.json").exists()
    run = MlflowClient().get_run(first.registered.run_id)
    assert run.data.params["alpha"] == "0.05"
    assert run.data.params["detector.train.n_steps"] == "200"
    assert 0.5 < run.data.metrics["ood_uniform_noise.auroc"] <= 1.0
    artifacts = {a.path for a in MlflowClient().list_artifacts(first.registered.run_id)}
    assert {"report", "report_html", "data_checks"} <= artifacts
    nested = {
        a.path for folder in ("report", "report_html", "data_checks")
        for a in MlflowClient().list_artifacts(first.registered.run_id, folder)
    }
    assert {"report/report.json", "report_html/report.html", "data_checks/data_checks.json"} <= nested


def test_second_run_adds_version_2_and_leaves_version_1_champion(two_runs):
    first, second = two_runs
    client = MlflowClient()
    assert second.registered.version == "2"
    assert str(client.get_model_version_by_alias("ebm-guard", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("ebm-guard", "challenger").version) == "2"
    assert client.get_model_version("ebm-guard", "1").status == "READY"


def test_report_is_complete_and_matches_logged_metrics(two_runs):
    first, _ = two_runs
    report = EvalReport.read_json(first.report_json)
    assert set(report.ood_metrics) == {"ood_digits", "ood_uniform_noise", "ood_inverted"}
    assert report.calibration_split == "calibration"
    assert 0.0 <= report.realised_fpr <= 1.0
    assert first.metrics["ood_digits.auroc"] == report.ood_metrics["ood_digits"].auroc
    assert first.report_html.read_text().count("data:image/png;base64,") >= 2


def test_registered_pyfunc_scores_pixel_frames(two_runs):
    first, _ = two_runs
    model = mlflow.pyfunc.load_model("models:/ebm-guard@champion")
    frame = pd.read_parquet(first.run_dir / "data" / "in_test.parquet").drop(columns="label").head(20)
    out = model.predict(frame)
    assert list(out.columns) == ["energy", "p_value", "is_ood"]
    assert len(out) == 20
    assert out["p_value"].between(0, 1).all()
    assert out["is_ood"].dtype == bool
    noise = pd.DataFrame(np.random.default_rng(0).uniform(0, 16, (20, 64)), columns=frame.columns)
    assert model.predict(noise)["energy"].mean() > out["energy"].mean()


def test_registered_pyfunc_rejects_bad_frames_with_named_reasons(two_runs):
    first, _ = two_runs
    model = mlflow.pyfunc.load_model("models:/ebm-guard@champion")
    frame = pd.read_parquet(first.run_dir / "data" / "in_test.parquet").drop(columns="label").head(5)

    # a vector guard's signature is one tensor of 64 values per row: MLflow itself refuses a frame of 63
    # columns by its width (named columns are matched by name in `Guard.score` and by `ebmops serve`)
    with pytest.raises(MlflowException, match=r"63 columns[\s\S]*\(-1, 64\)|\(-1, 64\)[\s\S]*63"):
        model.predict(frame.drop(columns="pixel_63"))
    with_nan = frame.copy()
    with_nan.loc[with_nan.index[2], "pixel_10"] = np.nan
    with pytest.raises(MlflowException, match=r"pixel_10.*rows \[2\]"):
        model.predict(with_nan)
    text = frame.astype({"pixel_5": object})
    text.loc[text.index[1], "pixel_5"] = "dark"
    with pytest.raises(MlflowException, match="dtype of input object does not match expected dtype float64"):
        model.predict(text)  # MLflow's own tensor check; `Guard.score` and `ebmops serve` name the column


def test_nan_in_training_data_stops_at_validation_and_registry_is_unchanged(two_runs, tmp_path):
    config = small_config()
    data_dir = tmp_path / "bad-data"
    paths = prepare_digits(config.data, data_dir, seed=0)
    train = pd.read_parquet(paths["train"])
    train.loc[[3, 7], "pixel_20"] = np.nan
    train.to_parquet(paths["train"], index=False)
    client = MlflowClient()
    versions_before = {v.version for v in client.search_model_versions("name='ebm-guard'")}

    with pytest.raises(DataCheckFailed, match="pixel_20") as failure:
        train_and_register(config, data_dir=data_dir, progress=False)

    versions_after = {v.version for v in client.search_model_versions("name='ebm-guard'")}
    assert versions_after == versions_before
    assert str(client.get_model_version_by_alias("ebm-guard", "champion").version) == "1"
    assert failure.value.result_path.exists()
    failed_dir = failure.value.result_path.parent
    assert (failed_dir / "run_failed.json").exists() and not (failed_dir / "run_complete.json").exists()
    assert "pixel_20" in json.loads((failed_dir / "run_failed.json").read_text())["error"]
    failed_runs = client.search_runs(
        [client.get_experiment_by_name("ebm-guard").experiment_id], "attributes.status = 'FAILED'"
    )
    assert len(failed_runs) == 1
    assert "pixel_20" in failed_runs[0].data.tags["ebmops.failure"]
