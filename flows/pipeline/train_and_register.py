"""Flow: load -> (text: text checks -> embed) -> validate -> select (candidates mapped) -> refit the
winner -> calibrate -> evaluate -> register. It only wires tasks; each task is a plain function of
flows.data, flows.pipeline.steps or flows.pipeline.selection."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task, unmapped

from evaluation.files import write_json_atomic
from flows import settings
from flows.data import text_splits
from flows.data.sources import TEXT_SOURCES, DataSource, VectorDirSource
from flows.guard import registry
from flows.monitoring import feedback_store
from flows.pipeline import selection, steps, task_runners
from flows.pipeline.config import PipelineConfig
from flows.pipeline.run_markers import RUN_COMPLETE_MARKER, RUN_FAILED_MARKER, RUN_STARTED_MARKER

split_text_task = task(name="load text")(text_splits.write_text_splits)
check_text_task = task(name="text checks")(text_splits.check_text_splits)
embed_task = task(name="embed")(text_splits.embed_text_splits)
load_task = task(name="load")(steps.load_data)
validate_task = task(name="validate")(steps.validate_data)
train_task = task(name="train")(steps.train_detector)
plan_selection_task = task(name="plan selection")(steps.plan_selection)


def evaluate_candidate(
    spec: selection.CandidateSpec, folds_path: str | Path, step_scale: float = 1.0, seed: int = 0
) -> selection.CandidateResult:
    """`selection.evaluate_candidate` wherever the task runner puts it (a Dask worker process too):
    torch threads set as in the flow's process, one candidate at a time per process."""
    settings.configure_torch_threads()
    with task_runners.one_task_at_a_time():
        return selection.evaluate_candidate(spec, folds_path, step_scale, seed)


candidate_task = task(name="candidate", task_run_name="candidate {spec.name}")(evaluate_candidate)
validation_baselines_task = task(name="validation baselines")(selection.validation_baselines)
finish_selection_task = task(name="choose")(steps.finish_selection)
fit_selected_task = task(name="refit winner")(steps.fit_selected)
calibrate_task = task(name="calibrate")(steps.calibrate_detector)
evaluate_task = task(name="evaluate")(steps.evaluate_detector)
register_task = task(name="register")(steps.register_model)
neighbours_task = task(name="neighbour bank")(steps.write_neighbour_bank)
feedback_snapshot_task = task(name="feedback snapshot")(feedback_store.take_snapshot)
feedback_text_task = task(name="feedback text")(text_splits.add_feedback_text_splits)
feedback_task = task(name="add feedback")(steps.add_feedback)


@dataclass(frozen=True)
class PipelineResult:
    run_dir: Path
    registered: registry.RegisteredVersion
    report_json: Path
    report_html: Path
    metrics: dict[str, float]
    seconds: float


# One task at a time in-process: parameter initialisation draws from torch's global generator (forked
# and seeded per model), which threads would interleave, and the same seed must give the same winner.
# EBMOPS_DASK_ADDRESS (`local` or a scheduler address) sends the candidates to Dask worker processes
# instead, with the same results (flows/pipeline/task_runners.py).
@flow(name="train_and_register", log_prints=True, task_runner=task_runners.FanOutTaskRunner())
def train_and_register(
    config: PipelineConfig,
    source: DataSource | None = None,
    data_dir: Path | None = None,
    progress: bool = True,
    nproc: int = 1,
    use_feedback: bool | None = None,
) -> PipelineResult:
    """source: where the data comes from (default: the digits demo); data_dir is short for
    VectorDirSource(data_dir). Text sources are checked and embedded here, inside the flow.
    use_feedback: True/False overrides `config.feedback.use` (train on the feedback store's snapshot:
    its problems join `outliers`, its fine flagged inputs `train`; its holdout never trains).
    nproc > 1 trains the one configured detector on that many processes (torchrun DDP); the selection
    stage fans its candidates out through the task runner instead, so it takes nproc = 1 only."""
    if nproc > 1 and config.selection.enabled:
        raise ValueError("nproc > 1 trains one detector (selection off, e.g. --objective); the selection stage "
                         "fans out its candidates through the task runner (Dask) instead")
    started = time.perf_counter()
    settings.configure_torch_threads()
    if use_feedback is not None:
        config = config.with_feedback(bool(use_feedback))
    if data_dir is not None:
        if source is not None:
            raise ValueError("give source or data_dir, not both")
        source = VectorDirSource(str(data_dir))
    clock = StageClock()
    run_dir = new_run_dir()
    registry.configure_tracking()
    registry.close_abandoned_runs(config.experiment_name)
    clock.mark("setup (run folder, tracking store)")
    try:
        result = _run_stages(config, source, run_dir, progress, started, nproc, clock)
    except BaseException as error:
        clock.write(run_dir / STAGE_TIMINGS_FILE)
        mark_run(run_dir, RUN_FAILED_MARKER, error=f"{type(error).__name__}: {error}"[:2000])
        raise
    clock.write(run_dir / STAGE_TIMINGS_FILE)
    mark_run(run_dir, RUN_COMPLETE_MARKER, model_uri=result.registered.model_uri, version=result.registered.version)
    return result


def _run_stages(
    config: PipelineConfig, source: DataSource | None, run_dir: Path, progress: bool, started: float,
    nproc: int = 1, clock: StageClock | None = None,
) -> PipelineResult:
    clock = clock or StageClock()
    text_check_path = text_train = feedback_path = None
    if config.feedback.use:  # the store as it is now; its rows are written into the run folder
        feedback_path = feedback_snapshot_task(
            config.feedback_model_name, config.feedback.holdout_batches, run_dir / "feedback"
        )
    if isinstance(source, TEXT_SOURCES):
        text_files = split_text_task(source, run_dir / "text", config.seed, config.alpha)
        if feedback_path is not None:  # checked as text, embedded, merged after embedding
            text_files = feedback_text_task(text_files, feedback_path)
        try:
            text_check_path = check_text_task(text_files, run_dir / text_splits.TEXT_CHECK_FILE, config.alpha)
        except text_splits.TextCheckFailed as failure:
            registry.log_failed_validation(
                config.experiment_name, config.to_params(), failure.result_path, str(failure)
            )
            raise
        embed_task(text_files, run_dir / "embedded", progress)
        text_train = text_files.paths["train"]  # the raw queries of the neighbour bank
        if text_splits.FEEDBACK_FINE_SPLIT in text_files.paths:  # merged train = train + feedback_fine
            text_train = str(text_splits.train_texts_with_feedback(text_files, run_dir / "text" / "train_with_feedback.parquet"))
        source = VectorDirSource(str(run_dir / "embedded"))
        config = replace(config, featurizer=text_splits.FEATURIZER_NAME)
        clock.mark("text checks and embedding")
    data = load_task(config, run_dir, source)
    if feedback_path is not None:  # before the data checks: the merged splits are checked like any data
        data, feedback_path = feedback_task(data, feedback_path, run_dir)
    try:
        data_check_path = validate_task(data, run_dir, config.alpha)
    except steps.DataCheckFailed as failure:
        registry.log_failed_validation(config.experiment_name, config.to_params(), failure.result_path, str(failure))
        raise
    clock.mark("load and validate")
    t0 = time.perf_counter()
    timings = {}
    selection_path = None
    if config.selection.enabled:
        plan = plan_selection_task(data, config, run_dir)
        with task_runners.workers_use_this_api():
            futures = candidate_task.map(
                plan.candidates, folds_path=unmapped(plan.folds_path), step_scale=unmapped(plan.step_scale),
                seed=unmapped(config.seed),
            )
            results = [future.result() for future in futures]
        baselines = validation_baselines_task(plan.folds_path)
        timings["selection_seconds"] = time.perf_counter() - t0
        selection_path = finish_selection_task(plan, results, baselines, run_dir, timings["selection_seconds"])
        clock.mark("selection (candidate fits)", training=True)
        t1 = time.perf_counter()
        detector_dir = fit_selected_task(data, plan, selection_path, config.seed, run_dir / "detector", progress)
        timings["train_seconds"] = time.perf_counter() - t1
    else:
        detector_dir = train_task(data, config.detector, config.seed, run_dir / "detector", progress, nproc)
        timings["train_seconds"] = time.perf_counter() - t0
    clock.mark("training (the chosen detector)", training=True)
    detector_dir = calibrate_task(detector_dir, data, config.alpha)
    neighbours_task(detector_dir, data, text_train, config.seed)  # after the last save, before registration
    clock.mark("calibrate")
    outputs = evaluate_task(detector_dir, data, config, run_dir, timings, selection_path)
    clock.mark("evaluate")
    registered = register_task(
        config, data, detector_dir, outputs, data_check_path, selection_path, text_check_path, feedback_path
    )
    clock.mark("register")
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
    mark_run(run_dir, RUN_STARTED_MARKER, pid=os.getpid(), host=socket.gethostname())
    return run_dir


def mark_run(run_dir: Path, marker: str, **fields: object) -> Path:
    """Say how a run folder ended: started, complete (its model was registered) or failed (with the
    error). A folder with only the started marker belongs to a run still going or one that was killed;
    promotion takes its data only from complete runs."""
    return write_json_atomic(Path(run_dir) / marker, {"time": datetime.now(timezone.utc).isoformat(), **fields})


STAGE_TIMINGS_FILE = "stage_timings.json"


class StageClock:
    """Seconds per pipeline stage, for `stage_timings.json` in the run folder: `mark(name)` closes the
    stage that began at the previous mark (or at the flow body's start). Training stages (the fits)
    are counted in `training_seconds`; everything else is overhead (benchmarks/demo_overhead.py)."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self._last, self._last_cpu = time.perf_counter(), time.process_time()
        self.stages: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # this process's CPU seconds (all its threads) per stage
        self.training: set[str] = set()

    def mark(self, stage: str, training: bool = False) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.stages[stage] = self.stages.get(stage, 0.0) + (now - self._last)
        self.cpu[stage] = self.cpu.get(stage, 0.0) + (cpu - self._last_cpu)
        self._last, self._last_cpu = now, cpu
        if training:
            self.training.add(stage)

    def write(self, path: Path) -> Path | None:
        """Best effort: a timing file is never a reason for a run to fail."""
        try:
            return write_json_atomic(Path(path), {
                "flow_started_at": self.started_at,
                "flow_finished_at": time.time(),
                "stages": {name: round(seconds, 4) for name, seconds in self.stages.items()},
                "cpu_seconds": {name: round(seconds, 4) for name, seconds in self.cpu.items()},
                "training_stages": sorted(self.training),
                "training_seconds": round(sum(self.stages[name] for name in self.training), 4),
            }, indent=2)
        except OSError:
            return None
