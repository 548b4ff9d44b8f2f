"""Flow: load -> validate -> train -> calibrate -> evaluate -> register. It only wires tasks."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task

from flows import settings

from flows.guard import registry

from flows.pipeline import steps
from flows.pipeline.config import PipelineConfig

load_task = task(name="load")(steps.load_data)
validate_task = task(name="validate")(steps.validate_data)
train_task = task(name="train")(steps.train_detector)
calibrate_task = task(name="calibrate")(steps.calibrate_detector)
evaluate_task = task(name="evaluate")(steps.evaluate_detector)
register_task = task(name="register")(steps.register_model)


@dataclass(frozen=True)
class PipelineResult:
    run_dir: Path
    registered: registry.RegisteredVersion
    report_json: Path
    report_html: Path
    metrics: dict[str, float]
    seconds: float


@flow(name="train_and_register", log_prints=True)
def train_and_register(
    config: PipelineConfig, data_dir: Path | None = None, progress: bool = True
) -> PipelineResult:
    started = time.perf_counter()
    settings.configure_torch_threads()
    run_dir = new_run_dir()
    registry.configure_tracking()
    data = load_task(config, run_dir, data_dir)
    try:
        data_check_path = validate_task(data, run_dir)
    except steps.DataCheckFailed as failure:
        registry.log_failed_validation(config.experiment_name, config.to_params(), failure.result_path, str(failure))
        raise
    t0 = time.perf_counter()
    detector_dir = train_task(data, config.detector, config.seed, run_dir / "detector", progress)
    timings = {"train_seconds": time.perf_counter() - t0}
    detector_dir = calibrate_task(detector_dir, data, config.alpha)
    outputs = evaluate_task(detector_dir, data, config, run_dir, timings)
    registered = register_task(config, data, detector_dir, outputs, data_check_path)
    return PipelineResult(
        run_dir=run_dir,
        registered=registered,
        report_json=outputs.report_json,
        report_html=outputs.report_html,
        metrics=outputs.metrics,
        seconds=time.perf_counter() - started,
    )


def new_run_dir() -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    run_dir = settings.runs_dir() / f"{stamp}-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir
