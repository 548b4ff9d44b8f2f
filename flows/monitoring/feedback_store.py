"""The feedback store: what people said about served inputs, kept as training data for the next guard.

Traffic batches carry an optional `feedback` column (1 = a person marked the input a problem, 0 =
fine). The monitor hands every scored batch to `FeedbackStore.add_batch`, which keeps the rows that
carry feedback: the input (the text, or the model's vector columns), the feedback, whether the guard
flagged the input when it served it (`is_ood_at_serving`), the batch id, the row's timestamp, the
source file and the model version that scored it.

Layout (`$EBMOPS_HOME/feedback/<model>/`):

- `parts/<seq>-<batch hash>.parquet`: append-only Parquet part files, one per `add_batch` call that
  stored new rows, each written atomically (temporary file, fsync, rename);
- `index.json`: the parts in the order they were added (written atomically after the part). The
  index is the truth: a part file it does not name (a crash between the two writes) is never read.
  The next add takes the same sequence number, so the same batch again overwrites it; another batch
  writes a file of another name, and the orphan stays as unread bytes.

Identity and deduplication. Each row's input has a content hash (`input_hash`: sha256 of the text,
or of the vector's float64 bytes with the column names). A row is stored once per (input, batch):
adding a batch again (a re-scored batch after a crash, the same file scored by a newer champion)
stores nothing twice, so `add_batch` is idempotent. The same input may be labelled in several
batches: the snapshot keeps only the NEWEST label, newest meaning added to the store last (within one
batch, the later row); an older label of that input is superseded, never used.

A snapshot (`FeedbackStore.snapshot`) splits the deduplicated rows by batch: every row of the newest
`holdout_batches` batches (by the order batches were first added) is the holdout, for the promotion
gate only and never training data; from the rest, the confirmed problems (feedback 1) become known
outliers and the confirmed-fine inputs the guard flagged (feedback 0, flagged) join the
in-distribution training data. Fine inputs the guard accepted add nothing and are only counted. The
snapshot id (sha256 over the deduplicated rows' input hashes, labels, flags and holdout marks, in
order) names what a guard was trained on.

Plain functions and classes (pandas, numpy, pyarrow); no Prefect, no MLflow.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from evaluation.files import atomic_writer, write_json_atomic
from flows import settings
from flows.data.text_splits import FEEDBACK_OUTLIERS_SPLIT

INDEX_FILE = "index.json"
PARTS_DIR = "parts"
LOCK_FILE = ".lock"
STORE_FORMAT = 1
FEEDBACK = "feedback"
FLAGGED = "is_ood_at_serving"
HASH = "input_hash"
BATCH = "batch_id"
TIMESTAMP = "timestamp"
SOURCE = "source"
MODEL_VERSION = "model_version"
META_COLUMNS = (FEEDBACK, FLAGGED, HASH, BATCH, TIMESTAMP, SOURCE, MODEL_VERSION)
SNAPSHOT_FILE = "feedback_snapshot.json"
PROBLEMS_FILE = "problems.parquet"
FINE_FLAGGED_FILE = "fine_flagged.parquet"


class FeedbackStoreError(ValueError):
    """The store cannot take this batch, or its files are unreadable; the message says which and why."""


# --- content hashes -------------------------------------------------------------------------------


def input_hashes(frame: pd.DataFrame, input_columns: Sequence[str]) -> list[str]:
    """sha256 (hex) of each row's input: the text for `["text"]`, else the float64 bytes of the vector
    columns (-0.0 read as 0.0) with the column names, so the same input hashes the same in any batch."""
    columns = list(input_columns)
    if columns == ["text"]:
        return [hashlib.sha256(("text\x1f" + str(t)).encode("utf-8", "surrogatepass")).hexdigest() for t in frame["text"]]
    header = ("\x1e".join(columns) + "\x1d").encode()
    values = np.ascontiguousarray(frame[columns].to_numpy(dtype=np.float64) + 0.0)
    return [hashlib.sha256(header + row.tobytes()).hexdigest() for row in values]


# --- the snapshot ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FeedbackSnapshot:
    """The store's rows at one moment, deduplicated (newest label per input) and split.

    problems: feedback 1 rows outside the holdout (known outliers for the next retrain).
    fine_flagged: feedback 0 rows the guard flagged, outside the holdout (in-distribution data).
    holdout: every feedback row of the newest `holdout_batches` batches (promotion gate only).
    Each frame has the input columns then META_COLUMNS."""

    id: str
    model_name: str
    input_columns: tuple[str, ...]
    problems: pd.DataFrame
    fine_flagged: pd.DataFrame
    holdout: pd.DataFrame
    holdout_batches: int
    batch_ids: tuple[str, ...]  # every batch, in the order it was first added
    holdout_batch_ids: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What a training run records (no rows)."""
        return {
            "id": self.id,
            "model_name": self.model_name,
            "input_columns": list(self.input_columns),
            "holdout_batches": self.holdout_batches,
            "batch_ids": list(self.batch_ids),
            "holdout_batch_ids": list(self.holdout_batch_ids),
            "training_batch_ids": [b for b in self.batch_ids if b not in set(self.holdout_batch_ids)],
            "counts": dict(self.counts),
        }

    def write(self, out_dir: Path) -> Path:
        """Write the training rows (problems.parquet, fine_flagged.parquet) and feedback_snapshot.json
        (the record, naming those files) into `out_dir`; returns the JSON's path. The holdout is not
        written: it is never training data."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {}
        for key, frame, name in (("problems", self.problems, PROBLEMS_FILE), ("fine_flagged", self.fine_flagged, FINE_FLAGGED_FILE)):
            _write_parquet_atomic(frame.reset_index(drop=True), out_dir / name)
            files[key] = name
        return write_json_atomic(out_dir / SNAPSHOT_FILE, {**self.to_dict(), "files": files}, indent=2)


def snapshot_id(rows: pd.DataFrame, holdout_mask: np.ndarray) -> str:
    """sha256 over the deduplicated rows in order: input hash, label, flag, holdout mark."""
    digest = hashlib.sha256(f"ebmops-feedback-snapshot-v{STORE_FORMAT}\n".encode())
    for h, fb, flagged, held in zip(rows[HASH], rows[FEEDBACK], rows[FLAGGED], holdout_mask):
        digest.update(f"{h}\t{int(fb)}\t{int(bool(flagged))}\t{'H' if held else 'T'}\n".encode())
    return digest.hexdigest()


# --- the store ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddResult:
    batch_id: str
    n_feedback: int  # rows of the batch with feedback 0 or 1
    n_added: int  # stored now
    n_already_stored: int  # the same input in the same batch was stored before
    part: str | None  # the part file written, None when nothing was new


class FeedbackStore:
    """The feedback rows of one model (see the module docstring)."""

    def __init__(self, root: Path, model_name: str):
        self.root = Path(root)
        self.model_name = model_name

    @classmethod
    def for_model(cls, model_name: str) -> "FeedbackStore":
        """The store under `$EBMOPS_HOME/feedback/<model_name>/` (nothing is created until a write)."""
        from flows.pipeline.config import check_model_name

        check_model_name(model_name)
        return cls(settings.ebmops_home() / "feedback" / model_name, model_name)

    # -- reading

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    def read_index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            return {"format": STORE_FORMAT, "model_name": self.model_name, "input_columns": None, "parts": []}
        try:
            index = json.loads(self.index_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FeedbackStoreError(f"{self.index_path}: feedback index unreadable ({error})") from None
        if not isinstance(index, dict) or index.get("format") != STORE_FORMAT:
            raise FeedbackStoreError(f"{self.index_path}: feedback index format {index.get('format') if isinstance(index, dict) else '?'}, expected {STORE_FORMAT}")
        return index

    def rows(self, index: dict[str, Any] | None = None) -> pd.DataFrame:
        """Every stored row, in the order added (parts in index order), superseded labels included.
        `index`: one the caller already read, so that rows and batch ids come from the same state."""
        index = self.read_index() if index is None else index
        frames = []
        for part in index["parts"]:
            path = self.root / part["file"]
            try:
                frames.append(pd.read_parquet(path))
            except Exception as error:  # noqa: BLE001 - pyarrow raises many types for a bad file
                raise FeedbackStoreError(f"{path}: feedback part unreadable ({type(error).__name__}: {error})") from None
        columns = list(index["input_columns"] or []) + list(META_COLUMNS)
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        return pd.concat(frames, ignore_index=True)[columns]

    # -- writing

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two monitors on one model): an exclusive lock on `<root>/.lock`."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def add_batch(
        self,
        frame: pd.DataFrame,
        *,
        input_columns: Sequence[str],
        batch_id: str,
        source: str,
        model_version: str | None,
        is_ood: Sequence[bool] | np.ndarray,
    ) -> AddResult:
        """Store the rows of `frame` that carry feedback (0 or 1; missing = no feedback, skipped).

        `input_columns`: ["text"] or the vector columns; `is_ood`: the guard's flag per row of `frame`;
        `batch_id`: names the batch (the monitor uses `<file name>@<sha256 prefix of its bytes>`).
        Rows whose input is already stored under this batch id are not stored again; within the
        batch, the same input twice keeps its later row. Raises FeedbackStoreError for a batch that
        does not fit (missing columns, other input columns than the store holds, feedback other than
        0/1, `is_ood` of another length)."""
        columns = [str(c) for c in input_columns]
        if not columns:
            raise FeedbackStoreError(f"batch {batch_id}: no input columns given")
        if not isinstance(batch_id, str) or not batch_id:
            raise FeedbackStoreError(f"batch id must be a non-empty string, got {batch_id!r}")
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise FeedbackStoreError(f"batch {batch_id}: input column(s) {missing[:5]} missing")
        flags = np.asarray(is_ood, dtype=bool)
        if flags.shape != (len(frame),):
            raise FeedbackStoreError(f"batch {batch_id}: is_ood has {flags.shape} values for {len(frame)} rows")
        if FEEDBACK not in frame.columns:
            return AddResult(batch_id, 0, 0, 0, None)
        feedback = pd.to_numeric(frame[FEEDBACK], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(~np.isnan(feedback) & ~np.isin(feedback, (0.0, 1.0)))
        unparsed = np.flatnonzero(np.isnan(feedback) & frame[FEEDBACK].notna().to_numpy())
        bad = np.union1d(bad, unparsed)
        if len(bad):
            raise FeedbackStoreError(f"batch {batch_id}: feedback must be 0, 1 or missing; rows {bad[:5].tolist()} are not")
        keep = np.flatnonzero(~np.isnan(feedback))
        if len(keep) == 0:
            return AddResult(batch_id, 0, 0, 0, None)
        rows = frame.iloc[keep][columns].reset_index(drop=True)
        if columns == ["text"]:
            empty = [int(keep[i]) for i, t in enumerate(rows["text"]) if not (isinstance(t, str) and t.strip())]
            if empty:
                raise FeedbackStoreError(f"batch {batch_id}: column text is empty or missing in rows {empty[:5]} (rows with feedback)")
            rows["text"] = rows["text"].astype(object)
        else:
            for column in columns:
                numbers = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                bad = np.flatnonzero(~np.isfinite(numbers))
                if len(bad):
                    raise FeedbackStoreError(
                        f"batch {batch_id}: column {column} must hold finite numbers; rows {keep[bad[:5]].tolist()} "
                        f"hold {[rows[column].iloc[i] for i in bad[:3]]!r} (rows with feedback)"
                    )
            rows = pd.DataFrame(rows.to_numpy(dtype=np.float64), columns=columns)
        rows[FEEDBACK] = feedback[keep].astype(np.int8)
        rows[FLAGGED] = flags[keep]
        rows[HASH] = input_hashes(rows, columns)
        rows[BATCH] = batch_id
        rows[TIMESTAMP] = _timestamps(frame, keep)
        rows[SOURCE] = str(source)
        rows[MODEL_VERSION] = None if model_version is None else str(model_version)
        rows = rows.drop_duplicates(HASH, keep="last").reset_index(drop=True)
        n_feedback = len(keep)
        with self._locked():
            index = self.read_index()
            if index["input_columns"] is not None and list(index["input_columns"]) != columns:
                stored = index["input_columns"]
                raise FeedbackStoreError(
                    f"batch {batch_id}: the feedback store of {self.model_name} holds inputs with columns "
                    f"{stored[:5]}{'...' if len(stored) > 5 else ''}, this batch has {columns[:5]}{'...' if len(columns) > 5 else ''}"
                )
            stored_keys = self._stored_keys(index, batch_id)
            new = rows[~rows[HASH].isin(stored_keys)].reset_index(drop=True)
            n_old = len(rows) - len(new)
            if new.empty:
                return AddResult(batch_id, n_feedback, 0, n_old, None)
            seq = len(index["parts"])
            name = f"{PARTS_DIR}/{seq:06d}-{hashlib.sha256(batch_id.encode()).hexdigest()[:12]}.parquet"
            _write_parquet_atomic(new[columns + list(META_COLUMNS)], self.root / name)
            index["input_columns"] = columns
            index["parts"].append(
                {"file": name, "batch_id": batch_id, "n_rows": len(new), "source": str(source),
                 "model_version": None if model_version is None else str(model_version), "added_at": time.time()}
            )  # fmt: skip
            write_json_atomic(self.index_path, index, indent=1)
        return AddResult(batch_id, n_feedback, len(new), n_old, name)

    def _stored_keys(self, index: dict[str, Any], batch_id: str) -> set[str]:
        keys: set[str] = set()
        for part in index["parts"]:
            if part["batch_id"] == batch_id:
                keys.update(pd.read_parquet(self.root / part["file"], columns=[HASH])[HASH].tolist())
        return keys

    # -- the snapshot

    def snapshot(self, holdout_batches: int = 1) -> FeedbackSnapshot:
        """The deduplicated rows (newest label per input), split into holdout and training parts."""
        if not isinstance(holdout_batches, int) or isinstance(holdout_batches, bool) or holdout_batches < 0:
            raise ValueError(f"holdout_batches must be a whole number >= 0, got {holdout_batches!r}")
        index = self.read_index()
        rows = self.rows(index)  # the same index: a batch added meanwhile is in neither, not in one
        columns = tuple(index["input_columns"] or ())
        batch_ids = tuple(dict.fromkeys(p["batch_id"] for p in index["parts"]))
        holdout_ids = batch_ids[len(batch_ids) - holdout_batches :] if holdout_batches else ()
        n_stored = len(rows)
        rows = rows.drop_duplicates(HASH, keep="last").reset_index(drop=True)
        rows[FEEDBACK] = rows[FEEDBACK].astype(np.int8)
        rows[FLAGGED] = rows[FLAGGED].astype(bool)
        held = rows[BATCH].isin(holdout_ids).to_numpy(dtype=bool)
        train = rows[~held]
        problems = train[train[FEEDBACK] == 1].reset_index(drop=True)
        fine = train[train[FEEDBACK] == 0]
        fine_flagged = fine[fine[FLAGGED]].reset_index(drop=True)
        holdout = rows[held].reset_index(drop=True)
        counts = {
            "n_stored_rows": n_stored,
            "n_inputs": len(rows),
            "n_superseded": n_stored - len(rows),
            "n_batches": len(batch_ids),
            "n_problems": len(problems),
            "n_fine_flagged": len(fine_flagged),
            "n_fine_accepted": int((~fine[FLAGGED]).sum()),
            "n_holdout": len(holdout),
            "n_holdout_problems": int((holdout[FEEDBACK] == 1).sum()),
        }
        return FeedbackSnapshot(
            id=snapshot_id(rows, held),
            model_name=self.model_name,
            input_columns=columns,
            problems=problems,
            fine_flagged=fine_flagged,
            holdout=holdout,
            holdout_batches=holdout_batches,
            batch_ids=batch_ids,
            holdout_batch_ids=tuple(holdout_ids),
            counts=counts,
        )


def holdout_frame(
    model_name: str, holdout_batches: int = 1, batch_ids: Sequence[str] | None = None
) -> pd.DataFrame | None:
    """Holdout rows of `model_name`'s feedback store (input columns + `feedback` +
    `is_ood_at_serving`), for the promotion gate; None when the store is missing or has none.

    `batch_ids`: the batches a challenger's snapshot held out (its `ebmops.feedback.holdout_batch_ids`
    tag): exactly those rows, whatever arrived since, so the gate never scores rows the challenger
    trained on. Without it, the newest `holdout_batches` batches now (a challenger trained without
    feedback learned from none of them)."""
    store = FeedbackStore.for_model(model_name)
    if not store.index_path.exists():
        return None
    if batch_ids is None:
        snapshot = store.snapshot(holdout_batches)
        held, columns = snapshot.holdout, snapshot.input_columns
    else:
        index = store.read_index()
        rows = store.rows(index).drop_duplicates(HASH, keep="last")  # newest label per input, as a snapshot
        held = rows[rows[BATCH].isin(set(batch_ids))].copy()
        held[FEEDBACK] = held[FEEDBACK].astype(np.int8)
        held[FLAGGED] = held[FLAGGED].astype(bool)
        columns = tuple(index["input_columns"] or ())
    if held.empty:
        return None
    return held[[*columns, FEEDBACK, FLAGGED]].reset_index(drop=True)


def take_snapshot(model_name: str, holdout_batches: int, out_dir: Path) -> Path:
    """Snapshot the model's feedback store and write its training rows and record into `out_dir`
    (see FeedbackSnapshot.write); an empty or missing store gives an empty snapshot. Returns the
    path of feedback_snapshot.json."""
    snapshot = FeedbackStore.for_model(model_name).snapshot(holdout_batches)
    path = snapshot.write(out_dir)
    record = json.loads(path.read_text())
    record["created_at"] = datetime.now(timezone.utc).isoformat()
    return write_json_atomic(path, record, indent=2)


# --- helpers --------------------------------------------------------------------------------------


def _timestamps(frame: pd.DataFrame, rows: np.ndarray) -> list[str | None]:
    if TIMESTAMP not in frame.columns:
        return [None] * len(rows)
    out = []
    for value in frame[TIMESTAMP].iloc[rows]:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            out.append(None)
        elif hasattr(value, "isoformat"):
            out.append(value.isoformat())
        else:
            out.append(str(value))
    return out


def _write_parquet_atomic(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_writer(path, "wb") as handle:
        frame.to_parquet(handle, index=False)
    return path


# --- a snapshot becomes training data (the pipeline's load step) ------------------------------------

FEEDBACK_PROBLEMS_SPLIT = "feedback_problems"  # text runs: the embedded problem queries, merged below
FEEDBACK_FINE_SPLIT = "feedback_fine"  # text runs: the embedded fine-but-flagged queries, merged below
FEEDBACK_SPLITS = (FEEDBACK_PROBLEMS_SPLIT, FEEDBACK_FINE_SPLIT)
FEEDBACK_FINE_LABEL = "feedback_fine"  # the class of fine flagged rows in labelled string data
EVALUATION_SPLITS = ("calibration", "in_test")  # plus every ood_* split


def fine_label(train_labels: pd.Series) -> Any:
    """The label fine-but-flagged rows get in a labelled train split: a class of their own (people
    said they are in-distribution, not which intent), -1 for integer labels (or one below the
    smallest when -1 is taken), else "feedback_fine" (suffixed while taken)."""
    present = set(train_labels.dropna().tolist())
    if pd.api.types.is_integer_dtype(train_labels):
        return -1 if -1 not in present else int(min(present)) - 1
    label = FEEDBACK_FINE_LABEL
    while label in present:
        label += "_"
    return label


def merge_into_vector_splits(
    split_paths: dict[str, str], feature_columns: Sequence[str], snapshot_json: Path, out_dir: Path, label_column: str
) -> tuple[dict[str, str], Any, Path]:
    """Write train and `outliers_feedback` with the snapshot's training rows, into `out_dir`.

    The rows come from the embedded `feedback_problems` / `feedback_fine` splits when present (text
    runs: they were checked as text and embedded with the other splits), else from the snapshot's
    Parquet files (vector guards: their columns must be `feature_columns`). Problems become the split
    `outliers_feedback` (features only; margin-style objectives train against it beside `outliers`,
    and the selection stage cross-fits on it, see flows/pipeline/selection.py), minus rows the user's
    `outliers` already hold; fine flagged rows (minus rows among the outliers) are appended to
    `train`, with the class label of `fine_label` when train is labelled. For vector rows, rows equal
    to an evaluation row (calibration, in_test, ood_*) are dropped (they must never be training data
    of a run that tests on them), and so are problems equal to a training row (a conflict: people
    called an in-distribution training input a problem) and fine rows already in train; text runs
    dropped the same queries as text before embedding (`text_splits.add_feedback_text_splits`).

    Returns (the new split paths, without the feedback splits; the fine label or None; the record,
    `snapshot_json` rewritten with an "applied" section)."""
    features = list(feature_columns)
    snapshot_json = Path(snapshot_json)
    record = json.loads(snapshot_json.read_text())
    paths = dict(split_paths)
    from_text = record.get("input_columns") == ["text"]
    if from_text and "applied_text" not in record:
        raise ValueError(
            f"{snapshot_json}: the feedback store of {record['model_name']} holds text, but this run trains on "
            f"{len(features)} vector columns ({', '.join(features[:3])}...): train from the text data, give the "
            "store of this guard (feedback.model_name) or train without feedback"
        )

    def rows_of(split: str, snapshot_key: str) -> pd.DataFrame:
        if from_text:
            return pd.read_parquet(paths.pop(split))[features] if split in paths else pd.DataFrame(columns=features)
        frame = pd.read_parquet(snapshot_json.parent / record["files"][snapshot_key])
        if frame.empty:
            return pd.DataFrame(columns=features)
        stored = [c for c in frame.columns if c not in META_COLUMNS]
        if stored != features:
            kind = "text" if stored == ["text"] else f"{len(stored)} vector columns ({', '.join(stored[:3])}...)"
            raise ValueError(
                f"{snapshot_json}: the feedback store of {record['model_name']} holds {kind}, but this run trains on "
                f"{len(features)} feature columns ({', '.join(features[:3])}...): give the store of this guard "
                "(feedback.model_name) or train without feedback"
            )
        return frame[features]

    problems = rows_of(FEEDBACK_PROBLEMS_SPLIT, "problems").astype(np.float64).reset_index(drop=True)
    fine = rows_of(FEEDBACK_FINE_SPLIT, "fine_flagged").astype(np.float64).reset_index(drop=True)
    train = pd.read_parquet(paths["train"])
    dropped = {"problems_in_evaluation_data": 0, "problems_in_training_data": 0,
               "fine_in_evaluation_data": 0, "fine_already_in_training_data": 0}  # fmt: skip
    if not from_text:
        evaluation = set()
        for split, path in paths.items():
            if split in EVALUATION_SPLITS or split.startswith("ood_"):
                evaluation.update(input_hashes(pd.read_parquet(path), features))
        in_train = set(input_hashes(train, features))
        problems, dropped["problems_in_evaluation_data"] = _drop_rows_in(problems, features, evaluation)
        problems, dropped["problems_in_training_data"] = _drop_rows_in(problems, features, in_train)
        fine, dropped["fine_in_evaluation_data"] = _drop_rows_in(fine, features, evaluation)
        fine, dropped["fine_already_in_training_data"] = _drop_rows_in(fine, features, in_train)
    known_outliers = (
        set(input_hashes(pd.read_parquet(paths["outliers"])[features], features)) if "outliers" in paths else set()
    )
    if not from_text:  # (the text path dropped these by query already)
        fine, dropped["fine_in_outliers"] = _drop_rows_in(fine, features, known_outliers)
    out_dir = Path(out_dir)
    label = None
    # a problem the user's outliers already hold is trained against already; as a cross-fitted row it
    # would also validate a candidate that trained against it
    problems, dropped["problems_in_outliers"] = _drop_rows_in(problems, features, known_outliers)
    n_before = len(pd.read_parquet(paths["outliers"])) if "outliers" in paths else 0
    if len(problems):
        paths[FEEDBACK_OUTLIERS_SPLIT] = str(_write_parquet_atomic(problems, out_dir / f"{FEEDBACK_OUTLIERS_SPLIT}.parquet"))
    if len(fine):
        added = fine.copy()
        if label_column in train.columns:
            label = fine_label(train[label_column])
            added[label_column] = pd.Series([label] * len(added), dtype=train[label_column].dtype)
        merged = pd.concat([train, added[list(train.columns)]], ignore_index=True)
        paths["train"] = str(_write_parquet_atomic(merged, out_dir / "train.parquet"))
    record["applied"] = {
        "problems_added_to_outliers": len(problems),
        "outliers_before": n_before,
        "fine_flagged_added_to_train": len(fine),
        "fine_flagged_label": label,
        "dropped": {**record.get("applied_text", {}).get("dropped", {}), **{k: v for k, v in dropped.items() if v}},
        "from": "text (embedded)" if from_text else "vectors",
    }
    record["applied"]["dropped"] = {k: v for k, v in record["applied"]["dropped"].items() if v}
    path = write_json_atomic(out_dir / SNAPSHOT_FILE, record, indent=2)
    return paths, label, path


def _drop_rows_in(frame: pd.DataFrame, features: list[str], hashes: set[str]) -> tuple[pd.DataFrame, int]:
    if frame.empty or not hashes:
        return frame, 0
    keep = np.array([h not in hashes for h in input_hashes(frame, features)], dtype=bool)
    return frame[keep].reset_index(drop=True), int((~keep).sum())


SNAPSHOT_TAG = "ebmops.feedback_snapshot"


def registry_records(snapshot_json: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(tags, params) naming the snapshot a guard was trained on, for its MLflow run and version:
    tag `ebmops.feedback_snapshot` = the snapshot id, the store's model, the holdout batch ids and
    the counts; params `feedback.snapshot_id` and the counts of rows added."""
    record = json.loads(Path(snapshot_json).read_text())
    applied = record.get("applied", {})
    counts = record.get("counts", {})
    tags = {
        SNAPSHOT_TAG: record["id"],
        "ebmops.feedback.model": record["model_name"],
        "ebmops.feedback.holdout_batch_ids": json.dumps(record.get("holdout_batch_ids", []))[:5000],
        "ebmops.feedback.counts": json.dumps({**counts, **{k: v for k, v in applied.items() if k != "dropped"}})[:5000],
    }
    params = {
        "feedback.snapshot_id": record["id"],
        "feedback.n_problems": str(counts.get("n_problems", 0)),
        "feedback.n_fine_flagged": str(counts.get("n_fine_flagged", 0)),
        "feedback.n_holdout": str(counts.get("n_holdout", 0)),
        "feedback.problems_added": str(applied.get("problems_added_to_outliers", 0)),
        "feedback.fine_flagged_added": str(applied.get("fine_flagged_added_to_train", 0)),
    }
    return tags, params
