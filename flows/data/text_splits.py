"""Text data through the pipeline: split the sources into named text splits, check them with the
Great Expectations text suites, then embed them (cached) into the vector splits the rest of the
pipeline reads. Every step writes Parquet files and returns their paths.

Split names: `train`, `calibration`, `in_test` (in-distribution, with `label` when labels exist);
`ood_val_<name>` OOD validation sets (the selection stage may use them to choose the detector; the
report marks them as used for selection); `ood_<name>` OOD evaluation sets (never seen before the
report); `outliers` (known-bad examples for margin-style objectives, never evaluation data);
`feedback_problems` / `feedback_fine` (a feedback snapshot's training queries, checked and embedded
here, merged into `outliers` / `train` after embedding).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flows.data.data_checks import ChecksFailed
from flows.data.datasets import LABEL_COLUMN
from flows.data.sources import Clinc150Source, TextTablesSource
from evaluation.files import write_text_atomic

EMBEDDING_PREFIX = "emb_"
FEATURIZER_NAME = "all-MiniLM-L6-v2"  # what the registered guard uses to embed raw text
OUTLIERS_SPLIT = "outliers"
FEEDBACK_OUTLIERS_SPLIT = "outliers_feedback"  # confirmed problems from feedback: trained against, cross-fitted, never test data
OOD_VAL_PREFIX = "ood_val_"
TEXT_CHECK_FILE = "text_checks.json"
IN_DISTRIBUTION_TEXT_SPLITS = ("train", "calibration", "in_test")
MAX_QUERY_CHARACTERS = 10_000
MIN_TRAIN_ROWS = 50  # the same as the vector checks after embedding
MIN_DISTINCT_TRAIN_QUERIES = 20  # fewer distinct queries embed to a handful of points: no distribution
# A few held-out queries that also occur in train (greetings, short commands) are a warning; a test
# set that is mostly the training set fails.
MAX_LEAKED_FRACTION = 0.05
# all-MiniLM-L6-v2 returns unit vectors; anything else means the embedder changed under us.
EMBEDDING_NORM_RANGE = (0.99, 1.01)


def embedding_columns(dim: int) -> list[str]:
    return [f"{EMBEDDING_PREFIX}{i}" for i in range(dim)]


def ood_split_name(path: str | Path, validation: bool) -> str:
    """`ood_val_<stem>` for OOD validation files, `ood_<stem>` for OOD evaluation files (a stem that
    already starts with `ood_` / `ood_val_` is not prefixed twice)."""
    stem = Path(path).stem
    for prefix in (OOD_VAL_PREFIX, "ood_"):
        if stem.startswith(prefix) and len(stem) > len(prefix):
            stem = stem[len(prefix) :]
            break
    if validation:
        return f"{OOD_VAL_PREFIX}{stem}"
    name = f"ood_{stem}"
    return f"ood_test_{stem}" if name.startswith(OOD_VAL_PREFIX) else name


@dataclass(frozen=True)
class TextSplitFiles:
    """Where each text split was written (Parquet with `text` and, when labelled, `label`)."""

    paths: dict[str, str]
    has_labels: bool
    text_column: str  # the user's column names, for messages
    label_column: str | None = None


def min_calibration_rows(alpha: float) -> int:
    """Fewest calibration rows whose conformal threshold at alpha is finite: n >= (1 - alpha) / alpha."""
    return math.ceil((1.0 - alpha) / alpha - 1e-9)


def write_text_splits(
    source: TextTablesSource | Clinc150Source, out_dir: Path, seed: int, alpha: float = 0.05
) -> TextSplitFiles:
    """Load the sources and write one Parquet file per split.

    Tables: without `val`, a seeded 15% + 15% of the distinct training queries become calibration and
    test (see `hold_out_from_train`); with `val`, it is split in half between them. CLINC150: calibrate on half of `val`, test on `test`,
    `oos_val` is the OOD validation set, `oos_test` the OOD evaluation set, `oos_train` the outliers.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames: dict[str, pd.DataFrame] = {}
    if isinstance(source, Clinc150Source):
        from flows.data.text_data import load_clinc150

        data = load_clinc150(source.path)
        val_order = rng.permutation(len(data["val"]))
        frames = {
            "train": data["train"],
            "calibration": data["val"].iloc[val_order[: len(val_order) // 2]],
            "in_test": data["test"],
            f"{OOD_VAL_PREFIX}oos_val": data["oos_val"][["text"]],
            "ood_oos_test": data["oos_test"][["text"]],
            OUTLIERS_SPLIT: data["oos_train"][["text"]],
        }
        has_labels, text_column, label_column = True, "text", "intent"
    else:
        from flows.data.text_data import load_table

        def read(path, labelled: bool) -> pd.DataFrame:
            return load_table(
                path, text_column=source.text_column, label_column=source.label_column if labelled else None
            )

        train = read(source.train, True)
        if source.val is None:
            frames = hold_out_from_train(train, HELD_OUT_FRACTION, rng, min_rows=min_calibration_rows(alpha))
        else:
            val = read(source.val, True)
            order = rng.permutation(len(val))
            half = len(val) // 2
            frames = {"train": train, "calibration": val.iloc[order[:half]], "in_test": val.iloc[order[half:]]}
        for paths_of_kind, validation in ((source.ood_val, True), (source.ood_test, False)):
            for path in paths_of_kind:
                name = ood_split_name(path, validation=validation)
                if name in frames:
                    raise ValueError(
                        f"two OOD files map to the split {name!r} ({path} and an earlier one): give them different names"
                    )
                frames[name] = read(path, False)
        if source.outliers is not None:
            frames[OUTLIERS_SPLIT] = read(source.outliers, False)
        has_labels, text_column, label_column = source.label_column is not None, source.text_column, source.label_column
    paths = {}
    for split, frame in frames.items():
        columns = ["text"] + ([LABEL_COLUMN] if LABEL_COLUMN in frame.columns else [])
        # Keep the source's row numbers: the text checks name rows of the user's file.
        frame = frame[columns].copy()
        frame["source_row"] = frame.index.to_numpy()
        paths[split] = str(out_dir / f"{split}.parquet")
        frame.to_parquet(paths[split], index=False)
    return TextSplitFiles(paths=paths, has_labels=has_labels, text_column=text_column, label_column=label_column)


HELD_OUT_FRACTION = 0.15  # of --data, for calibration and again for test, when no --val-data is given


def hold_out_from_train(
    train: pd.DataFrame, fraction: float, rng: np.random.Generator, min_rows: int = 0
) -> dict[str, pd.DataFrame]:
    """train / calibration / in_test from one table: each `fraction` of the distinct queries (at least
    `min_rows` of them when the table has enough, at most a third), every copy of a query in one split
    (so the split itself makes no train -> test leakage), and the queries of a label with fewer than 3
    rows kept in train (a test label the guard never saw would fail the checks)."""
    from flows.data.text_checks import query_key

    keys = train["text"].map(lambda t: query_key(t) if isinstance(t, str) else "")
    movable_row = pd.Series(True, index=train.index)
    if LABEL_COLUMN in train.columns:
        movable_row = train[LABEL_COLUMN].map(train[LABEL_COLUMN].value_counts()) >= 3
    # a query moves only with all its copies: one unmovable copy keeps every copy in train
    movable_key = movable_row.groupby(keys).all()
    unique = np.asarray(sorted(movable_key.index[movable_key.to_numpy()]))
    order = rng.permutation(len(unique))
    n_hold = min(max(int(fraction * len(unique)), min_rows), len(unique) // 3)
    where = {key: "calibration" for key in unique[order[:n_hold]]}
    where.update({key: "in_test" for key in unique[order[n_hold : 2 * n_hold]]})
    assigned = keys.map(lambda k: where.get(k, "train")).to_numpy()
    return {split: train[assigned == split] for split in ("train", "calibration", "in_test")}


FEEDBACK_PROBLEMS_SPLIT = "feedback_problems"  # flows.monitoring.feedback_store names the same splits
FEEDBACK_FINE_SPLIT = "feedback_fine"
FEEDBACK_SPLITS = (FEEDBACK_PROBLEMS_SPLIT, FEEDBACK_FINE_SPLIT)


def add_feedback_text_splits(files: TextSplitFiles, snapshot_json: Path) -> TextSplitFiles:
    """The text splits plus the feedback snapshot's training queries, as two splits of their own
    (`feedback_problems`, `feedback_fine`; rows numbered as in the snapshot's files), so the text
    checks name their rows and they are embedded with the rest; after embedding the pipeline merges
    them into `outliers` and `train` (`steps.add_feedback`).

    Queries (compared as the text checks compare them, `query_key`) equal to an evaluation query
    (calibration, in_test, ood_*) are dropped: they must not train a run that tests on them; so is a
    problem equal to a training query (a conflict the checks would fail), and a fine query already in
    train or among the outliers.
    The counts go into the snapshot record ("applied_text"). A store of vectors is a ValueError."""
    from evaluation.files import write_json_atomic
    from flows.data.text_checks import query_key

    snapshot_json = Path(snapshot_json)
    record = json.loads(snapshot_json.read_text())
    stored = record.get("input_columns") or []
    if stored and stored != ["text"]:
        raise ValueError(
            f"{snapshot_json}: the feedback store of {record['model_name']} holds vectors ({len(stored)} columns), "
            "but this run trains on text: give the store of this guard (feedback.model_name) or train without feedback"
        )
    frames = {split: pd.read_parquet(path) for split, path in files.paths.items()}

    def keys(*splits: str) -> set[str]:
        return {query_key(t) for s in splits if s in frames for t in frames[s]["text"] if isinstance(t, str)}

    evaluation = keys(*[s for s in frames if s in ("calibration", "in_test") or s.startswith("ood_")])
    train, outliers = keys("train"), keys(OUTLIERS_SPLIT)
    dropped: dict[str, int] = {}
    paths = dict(files.paths)
    out_dir = Path(files.paths["train"]).parent
    for split, key, conflicts in (
        (FEEDBACK_PROBLEMS_SPLIT, "problems", {"in_evaluation_data": evaluation, "in_training_data": train}),
        (FEEDBACK_FINE_SPLIT, "fine_flagged", {"in_evaluation_data": evaluation, "already_in_training_data": train,
                                               "in_outliers": outliers}),
    ):  # fmt: skip
        frame = pd.read_parquet(snapshot_json.parent / record["files"][key])
        if frame.empty:
            continue
        frame = frame[["text"]].copy()
        frame["source_row"] = np.arange(len(frame))
        query_keys = frame["text"].map(query_key)
        for reason, reference in conflicts.items():
            hit = query_keys.isin(reference).to_numpy()
            if hit.any():
                dropped[f"{key.split('_')[0]}_{reason}"] = int(hit.sum())
                frame, query_keys = frame[~hit], query_keys[~hit]
        if len(frame):
            paths[split] = str(out_dir / f"{split}.parquet")
            frame.to_parquet(paths[split], index=False)
    record["applied_text"] = {"dropped": dropped}
    write_json_atomic(snapshot_json, record, indent=2)
    return TextSplitFiles(paths=paths, has_labels=files.has_labels, text_column=files.text_column, label_column=files.label_column)


def train_texts_with_feedback(files: TextSplitFiles, out_path: Path) -> Path:
    """The training queries in the order of the merged embedded train split: train, then the
    feedback_fine queries (the raw text of each training row, e.g. for the neighbour bank)."""
    parts = [pd.read_parquet(files.paths[s])[["text"]] for s in ("train", FEEDBACK_FINE_SPLIT) if s in files.paths]
    out_path = Path(out_path)
    pd.concat(parts, ignore_index=True).to_parquet(out_path, index=False)
    return out_path


class TextCheckFailed(ChecksFailed):
    """A text split failed its checks; the run stops before anything is embedded or trained."""

    what = "text checks"


def check_text_splits(files: TextSplitFiles, out_path: Path, alpha: float = 0.05) -> Path:
    """Run the GX text suites on every split, leakage of held-out queries into train, and OOD
    queries that are also in-distribution queries. Writes the result; raises TextCheckFailed.

    Blank, undecodable, control-character or runaway (> MAX_QUERY_CHARACTERS) queries fail, and so
    does a query that carries two labels, a missing label, an OOD query that is also an
    in-distribution query, or a calibration / test split with more than MAX_LEAKED_FRACTION of its
    queries in train (fewer is a warning). Repeated queries with one label are a warning (harmless
    for training; they are counted once in the embedding cache).
    """
    from flows.data.text_checks import (
        TextDatasetSpec,
        check_ood_reference_overlap,
        check_split_leakage,
        check_text_dataset,
        check_training_variety,
    )

    frames = {split: pd.read_parquet(path) for split, path in files.paths.items()}
    for frame in frames.values():
        frame.index = frame.pop("source_row").to_numpy()
    results = []
    train_labels = None
    if files.has_labels:
        # as stored (ints stay ints): the calibration and test labels are compared with these
        train_labels = tuple(sorted(set(frames["train"][LABEL_COLUMN].dropna().tolist()), key=str))
    for split, frame in frames.items():
        labelled = LABEL_COLUMN in frame.columns
        spec = TextDatasetSpec(
            text_column="text",
            label_column=LABEL_COLUMN if labelled else None,
            # calibration/test labels must be training labels; train itself only needs no conflicts
            allowed_labels=train_labels if labelled and split != "train" and train_labels else None,
            min_rows={"train": MIN_TRAIN_ROWS, "calibration": min_calibration_rows(alpha)}.get(split, 1),
            # Longer queries are embedded from their first ~256 word pieces; only runaway rows fail.
            max_length=MAX_QUERY_CHARACTERS,
            duplicates="warn",
            label_conflicts="fail",
        )
        results.append(check_text_dataset(frame, spec, dataset_name=split))
    train = frames["train"]
    results.append(
        check_training_variety(
            train["text"], train[LABEL_COLUMN] if LABEL_COLUMN in train.columns else None,
            min_distinct=MIN_DISTINCT_TRAIN_QUERIES, name="train variety", label_column=LABEL_COLUMN,
        )
    )
    in_distribution = pd.concat(
        [frames[s]["text"] for s in (*IN_DISTRIBUTION_TEXT_SPLITS, FEEDBACK_FINE_SPLIT) if s in frames]
    )
    for split in ("calibration", "in_test"):
        if split in frames:
            results.append(
                check_split_leakage(
                    frames["train"]["text"], frames[split]["text"], name=f"leakage train -> {split}",
                    max_fraction=MAX_LEAKED_FRACTION,
                )
            )
    for split, frame in frames.items():
        if split.startswith("ood_") or split in (OUTLIERS_SPLIT, FEEDBACK_PROBLEMS_SPLIT):
            results.append(
                check_ood_reference_overlap(in_distribution, frame["text"], name=f"{split} vs in-distribution")
            )
    # Rows that chose the detector (OOD validation) or trained it (outliers) must not be test rows.
    chosen_or_trained = [
        s for s in frames if s.startswith(OOD_VAL_PREFIX) or s in (OUTLIERS_SPLIT, *FEEDBACK_SPLITS)
    ]
    tests = [s for s in frames if s.startswith("ood_") and not s.startswith(OOD_VAL_PREFIX)]
    for reference in chosen_or_trained:
        for checked in tests + [s for s in chosen_or_trained if s != reference and s.startswith(OOD_VAL_PREFIX)]:
            results.append(
                check_split_leakage(
                    frames[reference]["text"], frames[checked]["text"], name=f"{checked} vs {reference}", max_fraction=0.0
                )
            )
    results = [_with_user_columns(r, files.text_column, files.label_column) for r in results]
    out_path = Path(out_path)
    write_text_atomic(
        out_path,
        json.dumps(
            {"success": all(r.success for r in results), "checks": [r.to_dict() for r in results]}, indent=2
        ),
    )
    failed = [r for r in results if not r.success]
    if failed:
        raise TextCheckFailed(failed, out_path)
    return out_path


def _with_user_columns(result, text_column: str, label_column: str | None):
    """Name the user's columns in outcomes (the split files call them `text` and `label`)."""
    from dataclasses import replace

    names = {"text": text_column, LABEL_COLUMN: label_column or LABEL_COLUMN}
    outcomes = tuple(replace(o, column=names.get(o.column, o.column)) for o in result.outcomes)
    return replace(result, outcomes=outcomes)


def embed_text_splits(files: TextSplitFiles, out_dir: Path, progress: bool = True) -> dict[str, str]:
    """Embed every split through the on-disk cache, check the vectors, and write `<split>.parquet`
    with emb_* columns (and `label`)."""
    from flows.data.data_checks import raise_for_failures
    from flows.data.featurize import EmbeddingCache, TextEmbedder, embed_with_cache
    from flows.data.text_checks import check_embeddings

    frames = {split: pd.read_parquet(path) for split, path in files.paths.items()}
    embedder, cache = TextEmbedder(), EmbeddingCache()
    all_texts = [t for frame in frames.values() for t in frame["text"].tolist()]
    vectors, stats = embed_with_cache(all_texts, embedder, cache, progress=progress)
    print(f"embedded {len(all_texts)} texts: {stats.n_hits} from cache, {stats.n_misses} new, {stats.seconds:.1f} s")
    raise_for_failures(
        check_embeddings(vectors, embedder.dim, EMBEDDING_NORM_RANGE, name="embeddings", expected_rows=len(all_texts))
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = embedding_columns(vectors.shape[1])
    paths, start = {}, 0
    for split, frame in frames.items():
        out = pd.DataFrame(vectors[start : start + len(frame)].astype(np.float64), columns=columns)
        start += len(frame)
        if LABEL_COLUMN in frame.columns:
            out[LABEL_COLUMN] = frame[LABEL_COLUMN].astype(str).to_numpy()
        paths[split] = str(out_dir / f"{split}.parquet")
        out.to_parquet(paths[split], index=False)
    return paths
