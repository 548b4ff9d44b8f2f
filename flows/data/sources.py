"""Where a pipeline run's data comes from. The flow receives one of these and loads it itself, so
everything between load and register happens inside the Prefect flow."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DigitsSource:
    """scikit-learn's bundled 8x8 digits (the demo; `PipelineConfig.data` says which digits)."""


@dataclass(frozen=True)
class VectorDirSource:
    """A folder of ready Parquet splits: train, calibration, in_test, ood_*.parquet (ood_val_* are
    OOD validation sets), optional outliers.parquet; numeric feature columns and an optional label."""

    directory: str


@dataclass(frozen=True)
class TextTablesSource:
    """A user's CSV/Parquet files of queries.

    train: in-distribution queries (with `label_column` when labels exist).
    val: more in-distribution queries, split between calibration and test (else taken from train).
    ood_val: OOD queries the selection stage may use to choose the detector.
    ood_test: OOD queries for the evaluation report only.
    outliers: known-bad queries for margin-style objectives (never evaluation data).
    """

    train: str
    text_column: str = "text"
    label_column: str | None = None
    val: str | None = None
    ood_val: tuple[str, ...] = ()
    ood_test: tuple[str, ...] = ()
    outliers: str | None = None


@dataclass(frozen=True)
class Clinc150Source:
    """CLINC150's data_full.json (Larson et al. 2019)."""

    path: str


DataSource = DigitsSource | VectorDirSource | TextTablesSource | Clinc150Source
TEXT_SOURCES = (TextTablesSource, Clinc150Source)
