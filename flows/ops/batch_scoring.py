"""Batch scoring: a Parquet file of traffic in, a Parquet file of energy / p_value / is_ood out (the
`ebmops score` command).

    score_parquet("models:/ebm-guard@champion", "traffic.parquet", "scores.parquet")

The input is read row group by row group, `batch_rows` rows at a time (pyarrow's `iter_batches`),
scored by the guard loaded once with `Guard.load` (digests verified), and written the same way with a
`ParquetWriter`: memory stays bounded by one batch whatever the file's size. The output has one row
per input row, in order: the optional id column (copied as it is), `energy` (float64, higher = more
OOD), `p_value` (float64) and `is_ood` (bool, energy above the calibrated threshold), exactly what
`guard.detector.assess` gives for the same rows.

The output is written to a hidden temporary file beside it and renamed over it at the end: a failure
(bad rows found halfway, a crash) leaves no output, partial or otherwise, and an older file at that
path stays as it was.

With EBMOPS_DASK_ADDRESS set (flows/pipeline/task_runners.py), `batch_score` splits the row groups
into contiguous parts scored on the Dask workers: each worker process loads the guard once, writes
its parts to files in a hidden folder beside the output, and the parts are concatenated in order
into the same output the in-process path writes. The workers must see the input and the output's
folder at the same paths (one machine, or a shared file system).

Bad input raises `BatchInputError` (a ValueError) with one line naming the file and the column (and
the row, for values): missing feature columns, a non-numeric column, NaN / infinite values or values
beyond EBMOPS_MAX_ABS_VALUE (the served guard's limit), an unreadable file, no rows.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, task

from flows.guard.guard import Guard
from flows.guard.input_checks import max_abs_value
from flows.pipeline import task_runners

DEFAULT_BATCH_ROWS = 65_536
MAX_PARTS_PER_WORKER = 4  # parts per Dask worker: enough to even out the load, few enough part files
OUTPUT_COLUMNS = ("energy", "p_value", "is_ood")


class BatchInputError(ValueError):
    """Input the batch scorer refuses; the message is one line naming the file and the column."""


@dataclass(frozen=True)
class ScoreSummary:
    """What a scoring run wrote."""

    model_uri: str  # models:/<name>/<version>: the fixed version that scored
    input_path: str
    output_path: str
    rows: int
    flagged: int  # rows with is_ood
    row_groups: int  # row groups of the input
    parts: int  # 1 in-process; the number of Dask parts otherwise
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class PartResult:
    path: str
    rows: int
    flagged: int


# ---- checks ---------------------------------------------------------------------------------------
def open_input(input_path: str | Path) -> pq.ParquetFile:
    """The input as a ParquetFile, or BatchInputError saying why it cannot be read."""
    input_path = Path(input_path)
    if not input_path.is_file():
        raise BatchInputError(f"{input_path}: no such file")
    try:
        return pq.ParquetFile(input_path)
    except (pa.ArrowException, OSError) as error:
        raise BatchInputError(f"{input_path}: not a readable Parquet file ({_one_line(error)})") from None


def check_input(
    input_path: str | Path, feature_names: list[str], id_column: str | None = None
) -> pq.ParquetFile:
    """Refuse before scoring what the schema already shows: missing feature columns, non-numeric
    ones, a missing id column, no rows. (Values are checked batch by batch while scoring.)"""
    parquet = open_input(input_path)
    schema = parquet.schema_arrow
    names = list(schema.names)
    repeated = sorted({n for n in names if names.count(n) > 1} & set(feature_names + [id_column or ""]))
    if repeated:
        raise BatchInputError(f"{input_path}: columns given more than once: {_first(repeated)}")
    missing = [c for c in feature_names if c not in names]
    if missing:
        raise BatchInputError(
            f"{input_path}: missing feature columns {_first(missing)} "
            f"({len(missing)} of the guard's {len(feature_names)})"
        )
    for name in feature_names:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise BatchInputError(f"{input_path}: column {name!r} is {kind}, not numeric")
    if id_column is not None and id_column not in names:
        raise BatchInputError(f"{input_path}: no id column {id_column!r}")
    if id_column is not None and id_column in OUTPUT_COLUMNS:
        raise BatchInputError(f"{input_path}: the id column cannot be named {id_column!r} (an output column)")
    if parquet.metadata.num_rows == 0:
        raise BatchInputError(f"{input_path}: no rows to score")
    return parquet


def check_paths(input_path: str | Path, output_path: str | Path) -> None:
    if Path(output_path).resolve() == Path(input_path).resolve():
        raise BatchInputError(f"{output_path}: the output would overwrite the input")
    if Path(output_path).is_dir():
        raise BatchInputError(f"{output_path}: is a folder; give the output file's path")


def batch_matrix(batch: pa.RecordBatch, feature_names: list[str], input_path, first_row: int) -> np.ndarray:
    """The (N, D) float64 matrix of one batch, or BatchInputError naming the column and the row
    (counted from 0 over the whole file) of the first NaN / null / infinite / too large value."""
    x = np.empty((batch.num_rows, len(feature_names)), dtype=np.float64)
    for j, name in enumerate(feature_names):
        # nulls become NaN (numeric columns), refused below with the NaNs
        x[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
    finite = np.isfinite(x)
    if not finite.all():
        row, column = _first_bad(finite)
        raise BatchInputError(
            f"{input_path}: column {feature_names[column]!r} has a NaN, null or infinite value "
            f"(row {first_row + row})"
        )
    limit = max_abs_value()
    within = np.abs(x) <= limit
    if not within.all():
        row, column = _first_bad(within)
        raise BatchInputError(
            f"{input_path}: column {feature_names[column]!r} holds {x[row, column]:g} at row {first_row + row}, "
            f"beyond +/-{limit:g} (EBMOPS_MAX_ABS_VALUE); features are expected on the training scale"
        )
    return x


def _first_bad(ok: np.ndarray) -> tuple[int, int]:
    row = int(np.flatnonzero(~ok.all(axis=1))[0])
    return row, int(np.flatnonzero(~ok[row])[0])


# ---- scoring --------------------------------------------------------------------------------------
def output_schema(input_schema: pa.Schema, id_column: str | None) -> pa.Schema:
    fields = [input_schema.field(id_column)] if id_column is not None else []
    fields += [pa.field("energy", pa.float64()), pa.field("p_value", pa.float64()), pa.field("is_ood", pa.bool_())]
    return pa.schema(fields)


def row_group_offsets(parquet: pq.ParquetFile) -> list[int]:
    """The index (over the whole file) of each row group's first row."""
    offsets, total = [], 0
    for i in range(parquet.metadata.num_row_groups):
        offsets.append(total)
        total += parquet.metadata.row_group(i).num_rows
    return offsets


def write_scores(
    guard: Guard,
    input_path: str | Path,
    row_groups: list[int],
    destination: str | Path,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    id_column: str | None = None,
) -> PartResult:
    """Score `row_groups` of the input, `batch_rows` rows at a time, into a new Parquet file at
    `destination` (one output row group per batch). Refusals raise BatchInputError."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    feature_names = guard.feature_names
    parquet = check_input(input_path, feature_names, id_column)
    offsets = row_group_offsets(parquet)
    schema = output_schema(parquet.schema_arrow, id_column)
    columns = feature_names + ([id_column] if id_column is not None and id_column not in feature_names else [])
    rows = flagged = 0
    with pq.ParquetWriter(destination, schema) as writer:
        for group in row_groups:
            first_row = offsets[group]
            for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns):
                x = batch_matrix(batch, feature_names, input_path, first_row)
                assessment = guard.detector.assess(x)
                del x
                arrays = [batch.column(id_column)] if id_column is not None else []
                arrays += [
                    pa.array(np.asarray(assessment.energy, dtype=np.float64)),
                    pa.array(np.asarray(assessment.p_value, dtype=np.float64)),
                    pa.array(np.asarray(assessment.is_ood, dtype=bool)),
                ]
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
                rows += batch.num_rows
                flagged += int(np.count_nonzero(assessment.is_ood))
                first_row += batch.num_rows
    return PartResult(str(destination), rows, flagged)


def score_parquet(
    model_uri: str,
    input_path: str | Path,
    output_path: str | Path,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    id_column: str | None = None,
    guard: Guard | None = None,
) -> ScoreSummary:
    """Score the whole input in this process into `output_path` (atomically)."""
    started = time.perf_counter()
    check_paths(input_path, output_path)
    guard = guard or load_guard(model_uri)
    parquet = check_input(input_path, guard.feature_names, id_column)
    n_groups = parquet.metadata.num_row_groups
    with _atomic_output(output_path) as tmp:
        part = write_scores(guard, input_path, list(range(n_groups)), tmp, batch_rows, id_column)
    return ScoreSummary(
        guard.uri, str(input_path), str(output_path), part.rows, part.flagged, n_groups, 1,
        time.perf_counter() - started,
    )


# ---- the Dask split -------------------------------------------------------------------------------
def plan_parts(n_row_groups: int, n_parts: int) -> list[list[int]]:
    """Row groups 0..n-1 cut into at most n_parts contiguous, non-empty runs, in order."""
    n_parts = max(1, min(n_parts, n_row_groups))
    bounds = np.linspace(0, n_row_groups, n_parts + 1).round().astype(int)
    return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def parts_folder(output_path: str | Path) -> Path:
    """A new hidden folder beside the output for the Dask parts."""
    output_path = Path(output_path)
    folder = output_path.with_name(f".{output_path.name}.{uuid.uuid4().hex}.parts")
    folder.mkdir(parents=True)
    return folder


_GUARDS: dict[tuple[str, str], Guard] = {}
_GUARDS_LOCK = threading.Lock()


def load_guard(model_uri: str) -> Guard:
    """Guard.load once per process, registry and version URI (a Dask worker scores many parts with one
    load). An alias URI is resolved again every time: the alias may have moved."""
    from flows import settings

    with _GUARDS_LOCK:
        key = (settings.tracking_uri(), model_uri)
        if key not in _GUARDS or "@" in model_uri:
            guard = Guard.load(model_uri)
            _GUARDS.clear()  # one guard at a time: a long-lived worker must not pile up old versions
            _GUARDS[(key[0], guard.uri)] = guard
            return guard
        return _GUARDS[key]


def score_part(
    version_uri: str,
    input_path: str | Path,
    row_groups: list[int],
    part_path: str | Path,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    id_column: str | None = None,
) -> PartResult:
    """One Dask part: these row groups, scored by this process's copy of the guard, into part_path."""
    from flows import settings

    settings.configure_torch_threads()
    return write_scores(load_guard(version_uri), input_path, row_groups, part_path, batch_rows, id_column)


def concat_parts(parts: list[PartResult], output_path: str | Path) -> PartResult:
    """The parts' row groups, in order, into `output_path` (atomically), one row group at a time."""
    if not parts:
        raise ValueError("no parts to concatenate")
    schema = pq.ParquetFile(parts[0].path).schema_arrow
    rows = flagged = 0
    with _atomic_output(output_path) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                parquet = pq.ParquetFile(part.path)
                for group in range(parquet.metadata.num_row_groups):
                    writer.write_table(parquet.read_row_group(group))
                rows += part.rows
                flagged += part.flagged
    return PartResult(str(output_path), rows, flagged)


class _atomic_output:
    """A temporary path beside `path`; on a clean exit fsync it and rename it over `path`; on an error
    remove it (the output path is left as it was)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        return self.tmp

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                with open(self.tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)


# ---- the flow -------------------------------------------------------------------------------------
score_parquet_task = task(name="score")(score_parquet)
score_part_task = task(name="score part")(score_part)
concat_parts_task = task(name="concatenate parts")(concat_parts)


@flow(name="batch_score", log_prints=True, task_runner=task_runners.FanOutTaskRunner())
def batch_score(
    model_uri: str,
    input_path: str,
    output_path: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    id_column: str | None = None,
) -> ScoreSummary:
    """Score a Parquet file: in-process by default, split by row group across Dask workers when
    EBMOPS_DASK_ADDRESS is set. The guard's version is fixed first, so every part scores with it."""
    started = time.perf_counter()
    check_paths(input_path, output_path)
    guard = load_guard(model_uri)
    parquet = check_input(input_path, guard.feature_names, id_column)
    if task_runners.dask_address() is None:
        return score_parquet_task(guard.uri, input_path, output_path, batch_rows, id_column)
    n_groups = parquet.metadata.num_row_groups
    n_workers = (
        task_runners.local_workers() if task_runners.dask_address().lower() == task_runners.LOCAL_CLUSTER else 8
    )
    groups = plan_parts(n_groups, n_workers * MAX_PARTS_PER_WORKER)
    folder = parts_folder(output_path)
    try:
        with task_runners.workers_use_this_api():
            futures = [
                score_part_task.submit(
                    guard.uri, input_path, part, str(folder / f"part-{i:05d}.parquet"), batch_rows, id_column
                )
                for i, part in enumerate(groups)
            ]
            parts = [future.result() for future in futures]
        written = concat_parts_task(parts, output_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return ScoreSummary(
        guard.uri, str(input_path), str(output_path), written.rows, written.flagged, n_groups, len(parts),
        time.perf_counter() - started,
    )


def _first(items: list, n: int = 5) -> str:
    shown = ", ".join(repr(str(i)) for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


__all__ = [
    "BatchInputError",
    "DEFAULT_BATCH_ROWS",
    "ScoreSummary",
    "batch_score",
    "check_input",
    "concat_parts",
    "plan_parts",
    "score_parquet",
    "score_part",
    "write_scores",
]
