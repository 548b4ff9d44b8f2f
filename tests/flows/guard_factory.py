"""Register guard versions quickly for guard, promotion, monitoring and serving tests: the pipeline's
data steps (digits splits, data checks), an `ebm_core.EnergyDetector` fitted and calibrated directly,
and `registry.log_and_register`; no Prefect, no evaluation report, no baselines."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ebm_core import EnergyDetector, LangevinSampler, TrainConfig
from flows.data.datasets import read_vectors
from flows.guard import registry
from flows.pipeline import steps
from flows.pipeline.config import demo_config


def small_config(n_steps: int = 200, seed: int = 0):
    config = demo_config()
    detector = replace(
        config.detector,
        hidden_dims=(64, 64),
        sampler=LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=10),
        objective=replace(config.detector.objective, buffer_capacity=2000),
        train=TrainConfig(n_steps=n_steps, batch_size=64, learning_rate=1e-3),
    )
    return replace(config, detector=detector, seed=seed)


def prepare_data(work_dir: Path, config=None, check: bool = True):
    """Digits splits under work_dir/data (+ data_checks.json); returns (PreparedData, data_check_path)."""
    config = config or small_config()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    data = steps.load_data(config, work_dir)
    if check:
        data_check_path = steps.validate_data(data, work_dir)
    else:
        data_check_path = work_dir / steps.DATA_CHECK_FILE
        data_check_path.write_text(json.dumps({"success": True, "splits": {}}))
    return data, data_check_path


def register_version(data, data_check_path: Path, work_dir: Path, n_steps: int, seed: int = 0):
    """Train (n_steps) and register one version; returns registry.RegisteredVersion."""
    config = small_config(n_steps, seed)
    out = Path(work_dir) / f"detector-{n_steps}-{seed}"
    features = list(data.feature_columns)
    x_train = pd.read_parquet(data.path("train"))[features].to_numpy(dtype=np.float64)
    detector = EnergyDetector(config.detector).fit(x_train, seed=seed, feature_names=features)
    detector.calibrate(read_vectors(data.path("calibration"), features), alpha=config.alpha)
    detector_dir = detector.save(out)
    registered = registry.log_and_register(
        experiment_name=config.experiment_name,
        model_name=config.model_name,
        params=config.to_params(),
        metrics={},
        artifacts={"data_checks": data_check_path},
        detector_dir=detector_dir,
        feature_names=list(data.feature_columns),
    )
    if registry.get_alias_version(config.model_name, registry.CHAMPION) is not None:
        return registered
    # A first version becomes champion as in the pipeline: through the audited gates, on its own report.
    from flows.ops.promotion import evaluate_version

    report = evaluate_version(
        config.model_name, registered.version, Path(data.path("in_test")).parent,
        Path(work_dir) / f"report-v{registered.version}.json", n_bootstrap=50,
    )
    return steps.bootstrap_champion_if_none(registered, report)
