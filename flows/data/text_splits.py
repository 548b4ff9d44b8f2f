"""Text data into the pipeline: load, embed (cached), and write the Parquet splits that
`train_and_register` reads from a data folder. The embedder then travels with the registered model,
so the served guard accepts raw text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flows.data.datasets import LABEL_COLUMN

EMBEDDING_PREFIX = "emb_"
OUTLIERS_SPLIT = "outliers"  # known-bad examples for margin training; never an evaluation set


@dataclass(frozen=True)
class TextSplits:
    """Raw texts per split: train / calibration / in_test (+ labels) and OOD sets named ood_*."""

    texts: dict[str, list[str]]
    labels: dict[str, list | None]


def embedding_columns(dim: int) -> list[str]:
    return [f"{EMBEDDING_PREFIX}{i}" for i in range(dim)]


def splits_from_clinc150(path: str | Path) -> TextSplits:
    """CLINC150: calibrate on `val`, test on `test` vs `oos_test`; `oos_train` are the outliers."""
    from flows.data.text_data import load_clinc150

    data = load_clinc150(path)
    mapping = {
        "train": "train",
        "calibration": "val",
        "in_test": "test",
        "ood_oos_test": "oos_test",
        OUTLIERS_SPLIT: "oos_train",
    }
    texts = {split: data[key]["text"].tolist() for split, key in mapping.items()}
    labels = {
        split: (data[key]["label"].tolist() if split in ("train", "calibration", "in_test") else None)
        for split, key in mapping.items()
    }
    return TextSplits(texts, labels)


def splits_from_tables(
    train_path: Path,
    text_column: str,
    label_column: str | None,
    val_path: Path | None,
    ood_paths: list[Path],
    outliers_path: Path | None = None,
    seed: int = 0,
) -> TextSplits:
    """A user's CSV/Parquet files. Without `val_path`, 20% + 20% of train become calibration and test;
    with it, `val` is split in half between calibration and test."""
    from flows.data.text_data import load_table

    if not ood_paths:
        raise ValueError("give at least one OOD set (--ood-val-data) so the guard can be evaluated")
    train = load_table(train_path, text_column=text_column, label_column=label_column)
    rng = np.random.default_rng(seed)
    if val_path is None:
        order = rng.permutation(len(train))
        n_hold = int(0.2 * len(train))
        parts = {
            "train": train.iloc[order[2 * n_hold :]],
            "calibration": train.iloc[order[:n_hold]],
            "in_test": train.iloc[order[n_hold : 2 * n_hold]],
        }
    else:
        val = load_table(val_path, text_column=text_column, label_column=label_column)
        order = rng.permutation(len(val))
        half = len(val) // 2
        parts = {"train": train, "calibration": val.iloc[order[:half]], "in_test": val.iloc[order[half:]]}
    texts = {split: frame["text"].tolist() for split, frame in parts.items()}
    labels = {
        split: (frame["label"].tolist() if "label" in frame.columns else None) for split, frame in parts.items()
    }
    for path in ood_paths:
        stem = Path(path).stem
        name = stem if stem.startswith("ood_") else f"ood_{stem}"
        texts[name] = load_table(path, text_column=text_column)["text"].tolist()
        labels[name] = None
    if outliers_path is not None:
        texts[OUTLIERS_SPLIT] = load_table(outliers_path, text_column=text_column)["text"].tolist()
        labels[OUTLIERS_SPLIT] = None
    return TextSplits(texts, labels)


def write_embedded_splits(splits: TextSplits, out_dir: Path, progress: bool = True) -> dict[str, Path]:
    """Embed every split (through the on-disk cache) and write `<split>.parquet` with emb_* columns."""
    from flows.data.featurize import EmbeddingCache, TextEmbedder, embed_with_cache

    embedder, cache = TextEmbedder(), EmbeddingCache()
    all_texts = [t for texts in splits.texts.values() for t in texts]
    vectors, stats = embed_with_cache(all_texts, embedder, cache, progress=progress)
    print(
        f"embedded {len(all_texts)} texts: {stats.n_hits} from cache, {stats.n_misses} new, {stats.seconds:.1f} s"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = embedding_columns(vectors.shape[1])
    paths, start = {}, 0
    for split, texts in splits.texts.items():
        frame = pd.DataFrame(vectors[start : start + len(texts)].astype(np.float64), columns=columns)
        start += len(texts)
        labels = splits.labels.get(split)
        if labels is not None:
            frame[LABEL_COLUMN] = [str(label) for label in labels]
        paths[split] = out_dir / f"{split}.parquet"
        frame.to_parquet(paths[split], index=False)
    return paths
