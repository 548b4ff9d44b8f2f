"""The selection stage inside the flow: candidates are chosen on validation data, the winner is
registered, and whatever kind wins (kernel density, composition) loads back through MLflow's pyfunc
with scores identical to the in-memory detector."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from ebm_core import ComposedDetector, KernelDensityDetector, load_detector
from evaluation.report import EvalReport
from flows.data.datasets import pixel_columns
from flows.guard import registry
from flows.pipeline import selection, steps
from flows.pipeline.config import SelectionConfig, demo_config
from flows.pipeline.train_and_register import train_and_register

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

TINY_CE = {
    "hidden_dims": [16],
    "objective": {"name": "ce"},
    "train": {"n_steps": 30, "batch_size": 64, "learning_rate": 0.01},
}


def write_space(path: Path, candidates: list[dict], weights=(0.5,)) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "rule": "highest mean validation AUROC",
                "validation": {"n_splits": 2},
                "composition_weights": list(weights),
                "budgets": {"default": 1.0},
                "candidates": candidates,
            }
        )
    )
    return path


def pyfunc_scores(model_uri: str, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(mlflow.pyfunc.load_model(model_uri).predict(frame)["energy"], dtype=np.float64)


def test_kernel_density_wins_is_registered_and_scores_identically_through_the_pyfunc(ebmops_home, tmp_path):
    space = write_space(
        tmp_path / "space.yaml",
        [
            {"name": "kde_narrow", "kind": "kernel_density", "family": "label_free", "params": {"temperature": 0.01}},
            {"name": "kde_wide", "kind": "kernel_density", "family": "label_free", "params": {"temperature": 1.0}},
        ],
    )
    config = replace(demo_config(), selection=SelectionConfig(search_space=str(space)))
    result = train_and_register(config, progress=False)

    report = EvalReport.read_json(result.report_json)
    assert report.selection["scheme"] == "held_out_classes"
    assert report.selection["winner"] == "kde_narrow"  # on digits a wide kernel blurs the classes together
    names = {c["name"] for c in report.selection["candidates"]}
    assert {"kde_narrow", "kde_wide"} <= names
    detector = load_detector(result.run_dir / "detector")
    assert isinstance(detector, KernelDensityDetector)

    test_frame = pd.read_parquet(result.run_dir / "data" / "in_test.parquet")[pixel_columns()]
    expected = detector.score(test_frame.to_numpy(np.float64))
    registry.configure_tracking()
    np.testing.assert_array_equal(pyfunc_scores(result.registered.model_uri, test_frame), expected)

    client = MlflowClient()
    children = client.search_runs(
        [client.get_run(result.registered.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.registered.run_id}'",
    )
    assert sorted(r.data.tags["ebmops.candidate"] for r in children) == sorted(names)
    assert all("val_auroc" in r.data.metrics for r in children)


def test_a_composed_winner_is_registered_by_the_pipeline_steps_and_scores_identically(ebmops_home, tmp_path):
    space = write_space(
        tmp_path / "space.yaml",
        [
            {"name": "kde", "kind": "kernel_density", "family": "label_free", "params": {"temperature": 0.01}},
            {"name": "ce", "kind": "energy", "family": "labelled", "params": TINY_CE},
        ],
    )
    config = replace(demo_config(), selection=SelectionConfig(search_space=str(space)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = steps.load_data(config, run_dir)
    data_check_path = steps.validate_data(data, run_dir)
    plan = steps.plan_selection(data, config, run_dir)
    results = [selection.evaluate_candidate(spec, plan.folds_path, plan.step_scale, config.seed) for spec in plan.candidates]
    composition = next(r for r in selection.compositions(results, (0.5,)))
    # The rule may prefer a single candidate on digits; register the composition to check its round trip.
    outcome = selection.SelectionOutcome(
        scheme=plan.scheme, rule="forced for the test", winner=composition.name,
        candidates=tuple(r.summary() for r in [*results, composition]), n_folds=plan.n_folds,
        held_out=plan.held_out, budget=plan.budget, seconds=0.0,
    )
    selection_path = outcome.write_json(run_dir / steps.SELECTION_FILE)
    detector_dir = steps.fit_selected(data, plan, selection_path, config.seed, run_dir / "detector", progress=False)
    detector_dir = steps.calibrate_detector(detector_dir, data, config.alpha)
    outputs = steps.evaluate_detector(detector_dir, data, config, run_dir, {}, selection_path)
    registered = steps.register_model(config, data, detector_dir, outputs, data_check_path, selection_path)

    detector = load_detector(detector_dir)
    assert isinstance(detector, ComposedDetector)
    test_frame = pd.read_parquet(data.path("in_test"))[pixel_columns()]
    x = test_frame.to_numpy(np.float64)
    members = [(w, m.score(x)) for w, m in detector.members]
    np.testing.assert_allclose(detector.score(x), sum(w * s for w, s in members), rtol=1e-12)
    registry.configure_tracking()
    np.testing.assert_array_equal(pyfunc_scores(registered.model_uri, test_frame), detector.score(x))
