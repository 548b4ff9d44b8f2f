"""Register guard versions quickly for promotion and serving tests: the pipeline's own steps (digits
splits, data checks, train, calibrate, log_and_register) without Prefect and without the baselines."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ebm_core import LangevinSampler, TrainConfig
from flows.guard import registry
from flows.pipeline import steps
from flows.pipeline.config import demo_config


def small_config(n_steps: int = 200, seed: int = 0):
    config = demo_config()
    detector = replace(
        config.detector,
        hidden_dims=(64, 64),
        sampler=LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=10),
        buffer_capacity=2000,
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
    detector_dir = steps.train_detector(data, config.detector, seed, out, progress=False)
    steps.calibrate_detector(detector_dir, data, config.alpha)
    return registry.log_and_register(
        experiment_name=config.experiment_name,
        model_name=config.model_name,
        params=config.to_params(),
        metrics={},
        artifacts={"data_checks": data_check_path},
        detector_dir=detector_dir,
        feature_names=list(data.feature_columns),
    )
