"""The pipeline's steps as plain functions. Each Prefect task wraps one of these; each is tested
without Prefect. Steps exchange paths, never large objects."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ebm_core import DetectorConfig, EnergyDetector, load_detector
from evaluation.files import file_fingerprint, write_text_atomic
from evaluation.report import EvalReport, build_report
from flows.guard import registry
from flows.pipeline.config import PipelineConfig
from flows.data.datasets import (
    DIGITS_OOD_SPLITS,
    DIGITS_PIXEL_MAX,
    IN_DISTRIBUTION_SPLITS,
    LABEL_COLUMN,
    pixel_columns,
    prepare_digits,
    read_vectors,
)
from flows.data.data_checks import ChecksFailed
from flows.data.sources import DataSource, DigitsSource, VectorDirSource
from flows.data.text_splits import FEEDBACK_OUTLIERS_SPLIT, OOD_VAL_PREFIX, min_calibration_rows
from flows.pipeline import selection

DATA_CHECK_FILE = "data_checks.json"
MIN_TRAIN_ROWS = 50



SELECTION_FILE = "selection.json"


@dataclass(frozen=True)
class PreparedData:
    split_paths: dict[str, str]
    feature_columns: tuple[str, ...]
    ood_splits: tuple[str, ...]
    value_range: tuple[float, float] | None
    allowed_labels: tuple[int, ...] | None
    fingerprints: dict[str, str]

    def path(self, split: str) -> Path:
        return Path(self.split_paths[split])

    @property
    def test_ood_splits(self) -> list[str]:
        """OOD sets for the report; `ood_val_*` sets chose the detector and are never scored as tests."""
        return [s for s in self.ood_splits if not s.startswith(OOD_VAL_PREFIX)]


class DataCheckFailed(ChecksFailed):
    """One or more splits failed their data checks; the run stops before training."""

    what = "data checks"


@dataclass(frozen=True)
class EvaluationOutputs:
    report_json: Path
    report_html: Path
    metrics: dict[str, float]
    step_metrics: dict[str, list[tuple[int, float]]]  # training curve of the registered detector


def load_data(config: PipelineConfig, run_dir: Path, source: DataSource | None = None) -> PreparedData:
    """Digits splits written for this run, or the `<split>.parquet` files of a prepared folder
    (train, calibration, in_test; OOD sets named ood_*.parquet, of which ood_val_* are validation
    sets the selection stage may use; optionally outliers for margin-style objectives)."""
    source = source or DigitsSource()
    if isinstance(source, DigitsSource):
        split_paths = prepare_digits(config.data, Path(run_dir) / "data", seed=config.seed)
        feature_columns = tuple(pixel_columns())
        value_range, ood_splits = (0.0, DIGITS_PIXEL_MAX), DIGITS_OOD_SPLITS
        allowed_labels = tuple(int(d) for d in config.data.in_distribution_digits)
    elif isinstance(source, VectorDirSource):
        data_dir = Path(source.directory)
        split_paths = {p.stem: p for p in sorted(data_dir.glob("*.parquet"))}
        missing = [s for s in IN_DISTRIBUTION_SPLITS if s not in split_paths]
        if missing:
            raise FileNotFoundError(
                f"{data_dir}: missing {', '.join(f'{s}.parquet' for s in missing)} "
                f"(need {', '.join(IN_DISTRIBUTION_SPLITS)}; OOD sets are files named ood_*.parquet)"
            )
        ood_splits = tuple(s for s in split_paths if s.startswith("ood_"))
        train = pd.read_parquet(split_paths["train"])
        feature_columns = tuple(
            c for c in train.columns if c != LABEL_COLUMN and pd.api.types.is_numeric_dtype(train[c])
        )
        value_range = None
        allowed_labels = None
        if LABEL_COLUMN in train.columns:
            allowed_labels = tuple(sorted(train[LABEL_COLUMN].dropna().unique().tolist()))
    else:
        raise TypeError(f"load_data takes a DigitsSource or VectorDirSource, got {type(source).__name__}")
    return PreparedData(
        split_paths={k: str(v) for k, v in split_paths.items()},
        feature_columns=feature_columns,
        ood_splits=ood_splits,
        value_range=value_range,
        allowed_labels=allowed_labels,
        fingerprints={split: file_fingerprint(path) for split, path in split_paths.items()},
    )


def known_outliers(data: PreparedData) -> np.ndarray | None:
    """Every known-bad row margin-style objectives train against: the user's `outliers` and the
    confirmed problems from feedback (`outliers_feedback`); None when there are none."""
    features = list(data.feature_columns)
    parts = [read_vectors(data.path(s), features) for s in ("outliers", FEEDBACK_OUTLIERS_SPLIT) if s in data.split_paths]
    return np.concatenate(parts) if parts else None


def add_feedback(data: PreparedData, snapshot_json: Path, run_dir: Path) -> tuple[PreparedData, Path]:
    """The data with a feedback snapshot's training rows added (problems -> `outliers_feedback`, which
    margin-style objectives train against and the selection stage cross-fits on; fine flagged inputs ->
    `train`; `flows.monitoring.feedback_store.merge_into_vector_splits` says how), written
    under `<run_dir>/data_feedback/`; the data checks run on the result like on any split. Returns the
    data and `<run_dir>/feedback_snapshot.json`, the record the registered version names."""
    from flows.monitoring.feedback_store import SNAPSHOT_FILE, merge_into_vector_splits

    out_dir = Path(run_dir) / "data_feedback"
    paths, label, record = merge_into_vector_splits(
        data.split_paths, data.feature_columns, snapshot_json, out_dir, LABEL_COLUMN
    )
    allowed = data.allowed_labels
    if label is not None and allowed is not None:
        allowed = (*allowed, label)
    merged = PreparedData(
        split_paths=paths,
        feature_columns=data.feature_columns,
        ood_splits=data.ood_splits,
        value_range=data.value_range,
        allowed_labels=allowed,
        fingerprints={split: file_fingerprint(path) for split, path in paths.items()},
    )
    return merged, Path(write_text_atomic(Path(run_dir) / SNAPSHOT_FILE, Path(record).read_text()))


def validate_data(data: PreparedData, run_dir: Path, alpha: float = 0.05) -> Path:
    """Run the Great Expectations checks on every split; write the result; raise if any failed.

    The calibration split needs enough rows for a finite threshold at `alpha`."""
    from flows.data.data_checks import VectorDatasetSpec, check_vector_dataset

    results = {}
    # known outliers may be few (a handful of confirmed problems from feedback)
    min_rows = {"train": MIN_TRAIN_ROWS, "calibration": min_calibration_rows(alpha), "outliers": 1, FEEDBACK_OUTLIERS_SPLIT: 1}
    for split, path in data.split_paths.items():
        frame = pd.read_parquet(path)
        spec = VectorDatasetSpec(
            feature_columns=data.feature_columns,
            min_rows=min_rows.get(split, 10),
            value_range=data.value_range,
            label_column=LABEL_COLUMN if LABEL_COLUMN in frame.columns else None,
            allowed_labels=data.allowed_labels if split in IN_DISTRIBUTION_SPLITS else None,
        )
        results[split] = check_vector_dataset(frame, spec, dataset_name=f"{split} ({Path(path).name})")
    out_path = Path(run_dir) / DATA_CHECK_FILE
    write_text_atomic(
        out_path,
        json.dumps(
            {
                "success": all(r.success for r in results.values()),
                "splits": {split: r.to_dict() for split, r in results.items()},
            },
            indent=2,
        )
    )
    failed = [r for r in results.values() if not r.success]
    if failed:
        raise DataCheckFailed(failed, out_path)
    return out_path


def train_detector(
    data: PreparedData,
    detector_config: DetectorConfig,
    seed: int,
    out_dir: Path,
    progress: bool = True,
    nproc: int = 1,
) -> Path:
    """Train the one configured EnergyDetector (the selection stage turned off).

    nproc > 1: data-parallel on that many processes under torchrun (`train_detector_distributed`)."""
    if nproc > 1:
        return train_detector_distributed(data, detector_config, seed, out_dir, nproc)
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    x_train, labels = read_training_rows(data)
    callbacks = (TqdmProgress(f"training ({detector_config.objective_name})"),) if progress else ()
    outliers = None
    if detector_config.objective_name == "margin":
        outliers = known_outliers(data)
    try:
        detector = EnergyDetector(detector_config).fit(
            x_train,
            labels,
            outliers=outliers,
            seed=seed,
            feature_names=list(data.feature_columns),
            callbacks=callbacks,
        )
    finally:
        for callback in callbacks:
            callback.close()
    return detector.save(out_dir)


class DistributedTrainingError(RuntimeError):
    """A rank of a torchrun training failed; the message is that rank's error, in one line."""


def train_detector_distributed(
    data: PreparedData, detector_config: DetectorConfig, seed: int, out_dir: Path, nproc: int
) -> Path:
    """Train the detector on `nproc` processes: `torchrun --standalone` runs `flows.pipeline.ddp_train`.

    Same global batch (`train.batch_size`, split B/nproc per rank) and seed as one process. Rank 0 saves
    into a staging folder; the detector moves to `out_dir` only when every rank exited 0, so a failure
    leaves no detector folder behind, and raises `DistributedTrainingError` naming the failing rank's
    error. The job file, torchrun's log and any per-rank traceback stay in `<out_dir>.ddp/`."""
    import os
    import shutil
    import subprocess
    import sys
    import uuid

    import torch

    if nproc > detector_config.train.batch_size:
        raise ValueError(
            f"--nproc {nproc} exceeds the global batch size {detector_config.train.batch_size}: "
            "every process needs rows of each batch"
        )
    if detector_config.device.startswith("cuda") and torch.cuda.device_count() < nproc:
        raise ValueError(f"--nproc {nproc} needs {nproc} GPUs for device {detector_config.device!r}; "
                         f"torch sees {torch.cuda.device_count()}")
    out_dir = Path(out_dir)
    job_dir = out_dir.with_name(out_dir.name + ".ddp")
    shutil.rmtree(job_dir, ignore_errors=True)
    job_dir.mkdir(parents=True)
    staging = out_dir.with_name(f".{out_dir.name}.ddp-{uuid.uuid4().hex[:8]}")
    job_path = job_dir / "job.json"
    write_text_atomic(job_path, json.dumps(ddp_job(data, detector_config, seed, staging), indent=2))
    log_path = job_dir / "torchrun.log"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
        "-m", "flows.pipeline.ddp_train", "--job", str(job_path),
    ]
    repo_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)}
    env.setdefault("OMP_NUM_THREADS", "1")
    print(f"training on {nproc} processes (torchrun); log: {log_path}")
    try:
        with open(log_path, "w") as log:
            returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=repo_root).returncode
        if returncode != 0:
            raise DistributedTrainingError(_ddp_failure(job_dir, returncode, log_path, nproc))
        if not (staging / "detector.json").exists():
            raise DistributedTrainingError(f"torchrun exited 0 but rank 0 saved no detector (see {log_path})")
        return load_detector(staging).save(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ddp_job(data: PreparedData, detector_config: DetectorConfig, seed: int, staging_dir: Path) -> dict:
    """What the ranks of `flows.pipeline.ddp_train` need, as JSON (paths and plain config, no pickles)."""
    return {
        "data": {
            "split_paths": dict(data.split_paths),
            "feature_columns": list(data.feature_columns),
            "ood_splits": list(data.ood_splits),
            "value_range": list(data.value_range) if data.value_range is not None else None,
            "allowed_labels": list(data.allowed_labels) if data.allowed_labels is not None else None,
            "fingerprints": dict(data.fingerprints),
        },
        "detector_config": detector_config.to_dict(),
        "seed": int(seed),
        "staging_dir": str(staging_dir),
    }


def _ddp_failure(job_dir: Path, returncode: int, log_path: Path, nproc: int) -> str:
    """One line: the failing rank's own error, not the connection errors its exit caused on the others."""
    import re

    errors = {int(p.name[4:].split(".")[0]): p.read_text().strip() for p in job_dir.glob("rank*.error")}
    secondary = ("Connection reset by peer", "Connection closed by peer", "DistBackendError", "DistNetworkError",
                 "DistStoreError")
    primary = {rank: e for rank, e in errors.items() if not any(s in e for s in secondary)}
    if primary:
        rank = min(primary)
        return f"distributed training failed on rank {rank}: {primary[rank]} (log: {log_path})"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    killed = sorted({int(r) for r in re.findall(r"exitcode: -9\)? local_rank: (\d+)", log)}
                    | {r for r in range(nproc) if r not in errors and f"local_rank: {r}" in log})
    if killed:
        return (f"distributed training failed: rank {', '.join(map(str, killed))} stopped without reporting an "
                f"error (killed?); no detector was saved (log: {log_path})")
    if errors:
        rank = min(errors)
        return f"distributed training failed on rank {rank}: {errors[rank]} (log: {log_path})"
    return (f"distributed training failed: torchrun exited with status {returncode} and no rank reported an "
            f"error; no detector was saved (log: {log_path})")


def read_training_rows(data: PreparedData) -> tuple[np.ndarray, np.ndarray | None]:
    """The training features (N, D) and labels (N,), or None when the data has no usable labels."""
    train = pd.read_parquet(data.path("train"))
    x_train = train[list(data.feature_columns)].to_numpy(dtype=np.float64)
    labels = None
    if LABEL_COLUMN in train.columns:
        column = train[LABEL_COLUMN]
        if column.isna().any():
            print(f"train: {int(column.isna().sum())} rows have no label: the labels are not used")
        elif column.nunique() < 2:
            print(f"train: one label only ({column.iloc[0]!r}): the labels are not used")
        else:
            # one type for every fit (selection folds and the refit see the same class order)
            labels = column.astype(str).to_numpy()
    return x_train, labels


# ---- the selection stage ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SelectionPlan:
    folds_path: str
    scheme: str
    candidates: tuple[selection.CandidateSpec, ...]
    step_scale: float
    budget: str
    search_space_path: str
    n_folds: int
    held_out: tuple


def plan_selection(data: PreparedData, config: PipelineConfig, run_dir: Path) -> SelectionPlan:
    """Choose the validation scheme, cut the folds and write them for the candidate tasks."""
    space_path = Path(config.selection.search_space or selection.SEARCH_SPACE_PATH)
    space = selection.SearchSpace.from_yaml(space_path)
    x_train, labels = read_training_rows(data)
    ood_val_splits = [s for s in data.ood_splits if s.startswith(OOD_VAL_PREFIX)]
    ood_val = (
        np.concatenate([read_vectors(data.path(s), list(data.feature_columns)) for s in ood_val_splits])
        if ood_val_splits
        else None
    )
    # Held-out classes need at least 3 classes (one out, two or more kept); with fewer, k-means
    # clusters of the rows stand in for them (the labelled candidates still train on the labels).
    enough_classes = labels is not None and len(np.unique(labels)) >= 3
    scheme = selection.validation_scheme(enough_classes, ood_val is not None)
    features = list(data.feature_columns)
    outliers = read_vectors(data.path("outliers"), features) if "outliers" in data.split_paths else None
    known = read_vectors(data.path(FEEDBACK_OUTLIERS_SPLIT), features) if FEEDBACK_OUTLIERS_SPLIT in data.split_paths else None
    cross_fit = known is not None and len(known) >= selection.MIN_KNOWN_PROBLEMS
    base_space = replace(space, n_splits=space.n_splits_with_ood_val) if cross_fit else space
    folds, _ = selection.make_folds(x_train, labels, scheme, base_space, config.seed)
    if cross_fit:  # confirmed problems validate half the folds and train the margin candidates on the rest
        folds = selection.known_problem_folds(x_train, len(known), space, config.seed) + folds
        scheme = f"{selection.KNOWN_PROBLEMS_SCHEME}+{scheme}"
    folds_path = selection.save_folds(
        Path(run_dir) / "selection_folds.npz", x_train, labels, ood_val, folds, outliers=outliers, known_problems=known
    )
    return SelectionPlan(
        folds_path=str(folds_path),
        scheme=scheme,
        candidates=space.usable(labels is not None),
        step_scale=space.step_scale(config.selection.budget),
        budget=config.selection.budget,
        search_space_path=str(space_path),
        n_folds=len(folds),
        held_out=tuple(f.held_out for f in folds),
    )


def finish_selection(
    plan: SelectionPlan,
    results: list[selection.CandidateResult],
    validation_baselines: dict[str, dict[str, float]],
    run_dir: Path,
    seconds: float,
) -> Path:
    """Add the compositions, apply the rule, compare with the baselines and write `selection.json`."""
    space = selection.SearchSpace.from_yaml(plan.search_space_path)
    results = list(results) + selection.compositions(list(results), space.composition_weights)
    winner = selection.choose(results, space.tie_tolerance, space.fpr_tie_tolerance)
    rank, warning = selection.baseline_warning(winner, validation_baselines)
    outcome = selection.SelectionOutcome(
        scheme=plan.scheme,
        rule=space.rule,
        winner=winner.name,
        candidates=tuple(r.summary() for r in sorted(results, key=lambda r: -(r.auroc if r.ok else -1.0))),
        n_folds=plan.n_folds,
        held_out=plan.held_out,
        budget=plan.budget,
        seconds=seconds,
        validation_baselines=validation_baselines,
        validation_rank=rank,
        warning=warning,
    )
    return outcome.write_json(Path(run_dir) / SELECTION_FILE)


def fit_selected(
    data: PreparedData, plan: SelectionPlan, selection_path: Path, seed: int, out_dir: Path, progress: bool = True
) -> Path:
    """Refit the chosen candidate on all the training rows and save it."""
    space = selection.SearchSpace.from_yaml(plan.search_space_path)
    outcome = selection.SelectionOutcome.read_json(selection_path)
    chosen = next(c for c in outcome.candidates if c["name"] == outcome.winner)
    winner = selection.CandidateResult(
        name=chosen["name"], family=chosen["family"], kind=chosen["kind"], fold_auroc=(), fold_fpr95=(),
        fit_seconds=0.0, score_us_per_row=0.0, score_cost=0.0,
        members=tuple(chosen["members"]), weights=tuple(chosen["weights"]),
    )
    x_train, labels = read_training_rows(data)
    outliers = known_outliers(data)
    callbacks = (TqdmProgress(f"training the winner ({outcome.winner})"),) if progress else ()
    try:
        detector = selection.refit_winner(
            winner, space, x_train, labels, plan.step_scale, seed,
            feature_names=list(data.feature_columns), outliers=outliers, callbacks=callbacks,
        )
    finally:
        for callback in callbacks:
            callback.close()
    return detector.save(out_dir)


def calibrate_detector(detector_dir: Path, data: PreparedData, alpha: float) -> Path:
    detector = load_detector(detector_dir)
    x_cal = read_vectors(data.path("calibration"), list(data.feature_columns))
    return detector.calibrate(x_cal, alpha=alpha).save(detector_dir)


def evaluate_detector(
    detector_dir: Path,
    data: PreparedData,
    config: PipelineConfig,
    run_dir: Path,
    timings: dict[str, float],
    selection_path: Path | None = None,
) -> EvaluationOutputs:
    """Score every split, run the baselines on the same features, and write the report (JSON + HTML).

    The baselines are fitted on the train split (with its `label` column when there is one, so the
    classifier baselines run too) and scored on the held-out in-distribution split and every OOD
    split. OOD splits whose names contain "noise", "inverted" or "far" are far OOD, the others near.
    """
    from evaluation.baselines import run_baselines
    from evaluation.render.report_page import write_html

    started = time.perf_counter()
    features = list(data.feature_columns)
    detector = load_detector(detector_dir)
    split_features = {
        split: read_vectors(path, features)
        for split, path in data.split_paths.items()
        # outliers (the user's and confirmed problems) trained the margin objective and OOD validation sets
        # chose the detector: neither is test data
        if split not in ("train", "outliers", FEEDBACK_OUTLIERS_SPLIT) and not split.startswith(OOD_VAL_PREFIX)
    }
    split_scores = {split: detector.score(x) for split, x in split_features.items()}
    score_seconds = time.perf_counter() - started

    baselines_started = time.perf_counter()
    x_train, y_train = read_training_rows(data)
    test_ood_splits = data.test_ood_splits
    baselines = run_baselines(x_train, y_train, split_features, "in_test", test_ood_splits)
    baselines_seconds = time.perf_counter() - baselines_started

    history = detector.history_.to_dict() if "history_" in vars(detector) else {}
    training_curve = None
    if history.get("steps"):
        training_curve = {"step": history["steps"], "loss": history["loss"], **history["stats"]}
    data_check_path = Path(run_dir) / DATA_CHECK_FILE
    data_checks_passed = (
        bool(json.loads(data_check_path.read_text())["success"]) if data_check_path.exists() else None
    )
    timings = {
        **timings,
        "score_seconds": score_seconds,
        "baselines_seconds": baselines_seconds,
        "evaluate_seconds": time.perf_counter() - started,
    }
    report = build_report(
        split_scores,
        in_distribution_split="in_test",
        ood_splits=test_ood_splits,
        threshold=detector.threshold_,
        alpha=detector.alpha_,
        model_uri=Path(detector_dir).resolve().as_uri(),
        config=config.to_dict(),
        training_curve=training_curve,
        dataset_fingerprints=data.fingerprints,
        timings=timings,
        calibration_split="calibration",
        baselines=baselines,
        seed=config.seed,
        data_checks_passed=data_checks_passed,
        device=config.detector.device,
        selection=selection.SelectionOutcome.read_json(selection_path).to_dict() if selection_path else None,
    )
    report = _with_model_samples(report, detector, x_train, data, config.seed)
    report_json = report.write_json(Path(run_dir) / "report.json")
    report_html = write_html(report, Path(run_dir) / "report.html")
    metrics = report_metrics(report)
    for split, cis in report.metric_cis.items():
        for name in ("auroc", "fpr95"):
            metrics[f"{split}.{name}_ci_low"] = cis[name].low
            metrics[f"{split}.{name}_ci_high"] = cis[name].high
        metrics[f"{split}.detection_error"] = cis["detection_error"].estimate
    if report.baselines is not None:
        metrics.update({f"{split}.ebm_auroc_rank": float(rank) for split, rank in report.baselines.ebm_rank.items()})
    return EvaluationOutputs(report_json, report_html, metrics, training_step_metrics(history))


def _with_model_samples(report: EvalReport, detector, x_train: np.ndarray, data: PreparedData, seed: int) -> EvalReport:
    """The report with Langevin samples of the energy when the features are an image (digits)."""
    from dataclasses import replace

    from flows.guard.explanations import langevin_pictures

    pictures = langevin_pictures(detector, x_train, list(data.feature_columns), seed=seed, value_range=data.value_range)
    return report if pictures is None else replace(report, model_samples=pictures)


def write_neighbour_bank(
    detector_dir: Path, data: PreparedData, text_path: str | Path | None = None, seed: int = 0
) -> Path:
    """Store the training rows that "why was this flagged" searches (flows.guard.explanations) in the
    detector folder, so they are registered with it: their labels when the data has them and, for text
    data, the raw training queries (`text_path`: the text split the embeddings were made from, same
    rows in the same order). Call it after the last `Detector.save` (a save keeps files, not folders)."""
    from flows.guard.explanations import save_neighbour_bank

    train = pd.read_parquet(data.path("train"))
    x = train[list(data.feature_columns)].to_numpy(dtype=np.float64)
    labels = None
    if LABEL_COLUMN in train.columns:
        labels = [None if pd.isna(v) else v for v in train[LABEL_COLUMN].tolist()]
    texts = None
    if text_path is not None:
        texts = pd.read_parquet(text_path)["text"].astype(str).tolist()
        if len(texts) != len(x):
            raise ValueError(f"{text_path}: {len(texts)} training texts for {len(x)} embedded training rows")
    return save_neighbour_bank(detector_dir, x, labels, texts, seed=seed)


def register_model(
    config: PipelineConfig,
    data: PreparedData,
    detector_dir: Path,
    evaluation_outputs: EvaluationOutputs,
    data_check_path: Path,
    selection_path: Path | None = None,
    text_check_path: Path | None = None,
    feedback_path: Path | None = None,
) -> registry.RegisteredVersion:
    """Log the run (config, metrics, report, checks, the selection record and one nested run per
    candidate) and register the detector as a new version aliased `challenger`. A model's first
    version becomes `champion` only through the audited gates of `promotion.bootstrap_champion`.
    `feedback_path` (feedback_snapshot.json of a run trained on feedback): logged, and its snapshot id,
    holdout batch ids and counts become tags of the run and the version, and params of the run."""
    if config.featurizer is not None:
        write_featurizer(detector_dir, config.featurizer)
    artifacts = {
        "report": evaluation_outputs.report_json,
        "report_html": evaluation_outputs.report_html,
        "data_checks": data_check_path,
    }
    candidate_runs = None
    tags = {f"fingerprint.{k}": v for k, v in data.fingerprints.items()}
    if selection_path is not None:
        artifacts["selection"] = Path(selection_path)
        outcome = selection.SelectionOutcome.read_json(selection_path)
        candidate_runs = [dict(c) for c in outcome.candidates]
        tags.update({"ebmops.selection.winner": outcome.winner[:5000], "ebmops.selection.scheme": outcome.scheme})
    if text_check_path is not None:
        artifacts["text_checks"] = Path(text_check_path)
    params, version_tags = config.to_params(), {}
    if feedback_path is not None:
        from flows.monitoring.feedback_store import registry_records

        artifacts["feedback"] = Path(feedback_path)
        version_tags, feedback_params = registry_records(feedback_path)
        tags.update(version_tags)
        params.update(feedback_params)
    registered = registry.log_and_register(
        experiment_name=config.experiment_name,
        model_name=config.model_name,
        params=params,
        metrics=evaluation_outputs.metrics,
        artifacts=artifacts,
        detector_dir=detector_dir,
        feature_names=list(data.feature_columns),
        accepts_text=config.featurizer is not None,
        tags=tags,
        step_metrics=evaluation_outputs.step_metrics,
        candidate_runs=candidate_runs,
    )
    if version_tags:  # before any alias but challenger points at it
        registry.tag_version(registered.model_name, registered.version, version_tags)
    return bootstrap_champion_if_none(registered, evaluation_outputs.report_json)


def bootstrap_champion_if_none(registered: registry.RegisteredVersion, report_json: Path) -> registry.RegisteredVersion:
    """The registered version, with `champion` among its aliases when it became the first champion."""
    from dataclasses import replace

    from flows.ops.promotion import PROMOTED, bootstrap_champion

    decision = bootstrap_champion(registered.model_name, registered.version, report_json)
    if decision is None:
        return registered
    aliases = (*registered.aliases, registry.CHAMPION) if decision.decision == PROMOTED else registered.aliases
    return replace(registered, aliases=aliases, note=decision.message)


def write_featurizer(detector_dir: Path, featurizer: str) -> Path:
    """Record which text embedder produced the features, so the served guard embeds raw text too."""
    from flows.guard.pyfunc import FEATURIZER_FILE, KNOWN_FEATURIZERS

    if featurizer not in KNOWN_FEATURIZERS:
        raise ValueError(f"unknown featurizer {featurizer!r}; known: {sorted(KNOWN_FEATURIZERS)}")
    path = Path(detector_dir) / FEATURIZER_FILE
    write_text_atomic(path, json.dumps({"name": featurizer, "model_id": KNOWN_FEATURIZERS[featurizer]}))
    return path


def training_step_metrics(history: dict) -> dict[str, list[tuple[int, float]]]:
    """MLflow step metrics from a TrainingHistory's dict (empty for a detector that was not trained)."""
    steps = history.get("steps", [])
    series = {"loss": history.get("loss", []), **history.get("stats", {})}
    return {name: list(zip(steps, values)) for name, values in series.items() if len(values) == len(steps)}


def report_metrics(report: EvalReport) -> dict[str, float]:
    metrics = {"realised_fpr": report.realised_fpr, "threshold": report.threshold, "alpha": report.alpha}
    for split, m in report.ood_metrics.items():
        metrics.update({f"{split}.auroc": m.auroc, f"{split}.fpr95": m.fpr95, f"{split}.aupr_out": m.aupr_out})
    return metrics


class TqdmProgress:
    """Training callback: a progress bar with the latest loss and energies."""

    def __init__(self, description: str):
        self.description = description
        self.bar = None

    def __call__(self, step: int, n_steps: int, metrics: dict[str, float]) -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(total=n_steps, desc=self.description, unit="step", leave=False)
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(
            {k: f"{metrics[k]:.3g}" for k in ("loss", "e_pos", "e_neg") if k in metrics}, refresh=False
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
