"""Datasets written to Parquet files, so tasks pass paths rather than large objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


LABEL_COLUMN = "label"
DIGITS_PIXEL_MAX = 16.0
IN_DISTRIBUTION_SPLITS = ("train", "calibration", "in_test")
DIGITS_OOD_SPLITS = ("ood_digits", "ood_uniform_noise", "ood_inverted")


@dataclass(frozen=True)
class DigitsDataConfig:
    in_distribution_digits: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    ood_digits: tuple[int, ...] = (6, 7, 8, 9)
    train_fraction: float = 0.4
    calibration_fraction: float = 0.3
    n_uniform_noise: int = 500

    def __post_init__(self):
        for name in ("in_distribution_digits", "ood_digits"):
            digits = getattr(self, name)
            if not isinstance(digits, (tuple, list)) or not digits or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 9 for d in digits
            ):
                raise ValueError(f"data.{name} must be a non-empty list of digits 0-9, got {digits!r}")
        for name in ("train_fraction", "calibration_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
                raise ValueError(f"data.{name} must be a number in (0, 1), got {value!r}")
        if not isinstance(self.n_uniform_noise, int) or isinstance(self.n_uniform_noise, bool) or self.n_uniform_noise < 0:
            raise ValueError(f"data.n_uniform_noise must be a whole number >= 0, got {self.n_uniform_noise!r}")
        overlap = set(self.in_distribution_digits) & set(self.ood_digits)
        if overlap:
            raise ValueError(f"digits {sorted(overlap)} are both in-distribution and OOD")
        if not 0 < self.train_fraction + self.calibration_fraction < 1:
            raise ValueError("train_fraction + calibration_fraction must leave a test share in (0, 1)")


def pixel_columns(n: int = 64) -> list[str]:
    return [f"pixel_{i}" for i in range(n)]


def prepare_digits(config: DigitsDataConfig, out_dir: str | Path, seed: int) -> dict[str, Path]:
    """Write the digits splits as Parquet; returns split name -> path.

    In-distribution digits are split into train / calibration / in_test; OOD sets are the other digits
    (near OOD), uniform noise over the pixel range and inverted in-distribution test images (far OOD).
    """
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    in_rows = rng.permutation(np.flatnonzero(np.isin(labels, config.in_distribution_digits)))
    n_train = int(round(config.train_fraction * len(in_rows)))
    n_cal = int(round(config.calibration_fraction * len(in_rows)))
    train_rows, cal_rows, test_rows = np.split(in_rows, [n_train, n_train + n_cal])
    ood_rows = np.flatnonzero(np.isin(labels, config.ood_digits))

    splits = {
        "train": (features[train_rows], labels[train_rows]),
        "calibration": (features[cal_rows], labels[cal_rows]),
        "in_test": (features[test_rows], labels[test_rows]),
        "ood_digits": (features[ood_rows], labels[ood_rows]),
        "ood_uniform_noise": (
            rng.uniform(0.0, DIGITS_PIXEL_MAX, size=(config.n_uniform_noise, features.shape[1])),
            np.full(config.n_uniform_noise, -1),
        ),
        "ood_inverted": (DIGITS_PIXEL_MAX - features[test_rows], np.full(len(test_rows), -1)),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (x, y) in splits.items():
        frame = pd.DataFrame(x.astype(np.float64), columns=pixel_columns(x.shape[1]))
        frame[LABEL_COLUMN] = y.astype(np.int64)
        paths[name] = out_dir / f"{name}.parquet"
        frame.to_parquet(paths[name], index=False)
    return paths


def read_vectors(path: str | Path, feature_columns: list[str]) -> np.ndarray:
    frame = pd.read_parquet(path)
    missing = [c for c in feature_columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing feature columns {missing[:5]}")
    return frame[feature_columns].to_numpy(dtype=np.float64)
