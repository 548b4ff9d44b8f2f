"""The evaluation report: one JSON document per evaluated model, built from per-split energies.

The JSON is strict (no NaN/Infinity tokens, so any JSON reader accepts it). The one float that may
legitimately be infinite, the threshold (a conformal threshold is +inf when alpha is too small for
the calibration set), is written as the string "inf"; `float("inf")` reads it back. Floats are
written by `repr`, so `EvalReport.from_json(report.to_json()) == report` holds exactly.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import sys
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics import (
    EnergyStats,
    OODMetrics,
    check_scores,
    energy_stats,
    ood_metrics,
    realised_fpr,
)

SCHEMA_VERSION = 1

CONVENTIONS: dict[str, Any] = {
    "score": "energy",
    "higher_is_more_ood": True,
    "positive_class": "ood",
    "fpr95": (
        "FPR@95TPR is the share of OOD inputs accepted (score <= t) at the smallest threshold t "
        "among in-distribution scores that accepts at least 95% of in-distribution inputs."
    ),
}


@dataclass(frozen=True)
class EvalReport:
    schema_version: int
    created_at: str
    model_uri: str | None
    config: dict[str, Any]
    conventions: dict[str, Any]
    alpha: float
    threshold: float
    in_distribution_split: str
    # The split the threshold was calibrated on; never the split realised_fpr is measured on.
    calibration_split: str | None
    realised_fpr: float
    energy_stats: dict[str, EnergyStats]
    ood_metrics: dict[str, OODMetrics]
    scores: dict[str, list[float]]
    training_curve: dict[str, list[float]] | None
    dataset_fingerprints: dict[str, str]
    timings: dict[str, float]
    environment: dict[str, str]

    @property
    def ood_splits(self) -> list[str]:
        return list(self.ood_metrics)

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-compatible data (the threshold is "inf"/"-inf" when not finite)."""
        return {
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "model_uri": self.model_uri,
            "config": self.config,
            "conventions": self.conventions,
            "alpha": self.alpha,
            "threshold": _encode_float(self.threshold),
            "in_distribution_split": self.in_distribution_split,
            "calibration_split": self.calibration_split,
            "realised_fpr": self.realised_fpr,
            "energy_stats": {split: stats.to_dict() for split, stats in self.energy_stats.items()},
            "ood_metrics": {split: metrics.to_dict() for split, metrics in self.ood_metrics.items()},
            "scores": self.scores,
            "training_curve": (
                None
                if self.training_curve is None
                else {name: [_encode_float(v) for v in values] for name, values in self.training_curve.items()}
            ),
            "dataset_fingerprints": self.dataset_fingerprints,
            "timings": self.timings,
            "environment": self.environment,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"unsupported report schema_version {version!r}; this code reads {SCHEMA_VERSION}")
        expected = {f.name for f in fields(cls)}
        unknown = set(d) - expected
        if unknown:
            raise ValueError(f"unknown report field(s): {sorted(unknown)}")
        training_curve = d["training_curve"]
        return cls(
            schema_version=int(d["schema_version"]),
            created_at=str(d["created_at"]),
            model_uri=None if d["model_uri"] is None else str(d["model_uri"]),
            config=dict(d["config"]),
            conventions=dict(d["conventions"]),
            alpha=float(d["alpha"]),
            threshold=float(d["threshold"]),
            in_distribution_split=str(d["in_distribution_split"]),
            calibration_split=None if d["calibration_split"] is None else str(d["calibration_split"]),
            realised_fpr=float(d["realised_fpr"]),
            energy_stats={split: EnergyStats.from_dict(s) for split, s in d["energy_stats"].items()},
            ood_metrics={split: OODMetrics.from_dict(m) for split, m in d["ood_metrics"].items()},
            scores={split: [float(v) for v in values] for split, values in d["scores"].items()},
            training_curve=(
                None
                if training_curve is None
                else {name: [float(v) for v in values] for name, values in training_curve.items()}
            ),
            dataset_fingerprints={str(k): str(v) for k, v in d["dataset_fingerprints"].items()},
            timings={str(k): float(v) for k, v in d["timings"].items()},
            environment={str(k): str(v) for k, v in d["environment"].items()},
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, s: str) -> EvalReport:
        return cls.from_dict(json.loads(s))

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> EvalReport:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _encode_float(value: float) -> float | str:
    """Finite floats stay floats; +-inf and NaN become "inf", "-inf", "nan" (float() parses them)."""
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def build_report(
    split_scores: dict[str, np.ndarray],
    in_distribution_split: str,
    ood_splits: list[str],
    threshold: float,
    alpha: float,
    *,
    model_uri: str | None = None,
    config: dict[str, Any] | None = None,
    training_curve: dict[str, Any] | None = None,
    dataset_fingerprints: dict[str, str] | None = None,
    timings: dict[str, float] | None = None,
    calibration_split: str | None = None,
) -> EvalReport:
    """Compute energy statistics for every split, OOD metrics for each OOD split against the
    in-distribution split, and the realised false-positive rate of `threshold` on the
    in-distribution split.

    The in-distribution split should be held out from calibration: on the calibration split the
    realised FPR is at most alpha by construction and says nothing, so passing the same name as
    `calibration_split` is an error.
    """
    scores = {split: check_scores(values, f"split_scores[{split!r}]") for split, values in split_scores.items()}
    if in_distribution_split not in scores:
        raise ValueError(
            f"in_distribution_split {in_distribution_split!r} is not in split_scores ({sorted(scores)})"
        )
    for split in ood_splits:
        if split not in scores:
            raise ValueError(f"OOD split {split!r} is not in split_scores ({sorted(scores)})")
        if split == in_distribution_split:
            raise ValueError(f"split {split!r} cannot be both the in-distribution split and an OOD split")
    if len(set(ood_splits)) != len(ood_splits):
        raise ValueError(f"ood_splits contains duplicates: {ood_splits}")
    if calibration_split is not None:
        if calibration_split not in scores:
            raise ValueError(f"calibration_split {calibration_split!r} is not in split_scores ({sorted(scores)})")
        if calibration_split == in_distribution_split:
            raise ValueError(
                f"calibration_split and in_distribution_split are both {calibration_split!r}; "
                "the realised FPR must be measured on held-out in-distribution data"
            )
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if math.isnan(threshold):
        raise ValueError("threshold must not be NaN")

    in_scores = scores[in_distribution_split]
    return EvalReport(
        schema_version=SCHEMA_VERSION,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model_uri=model_uri,
        config=_json_normalised(config or {}, "config"),
        conventions=dict(CONVENTIONS),
        alpha=float(alpha),
        threshold=float(threshold),
        in_distribution_split=in_distribution_split,
        calibration_split=calibration_split,
        realised_fpr=realised_fpr(in_scores, threshold),
        energy_stats={split: energy_stats(values) for split, values in scores.items()},
        ood_metrics={split: ood_metrics(in_scores, scores[split]) for split in ood_splits},
        scores={split: values.tolist() for split, values in scores.items()},
        training_curve=(
            None
            if training_curve is None
            else {name: np.asarray(values, dtype=np.float64).ravel().tolist() for name, values in training_curve.items()}
        ),
        dataset_fingerprints={str(k): str(v) for k, v in (dataset_fingerprints or {}).items()},
        timings={str(k): float(v) for k, v in (timings or {}).items()},
        environment=environment_info(),
    )


def _json_normalised(data: dict[str, Any], name: str) -> dict[str, Any]:
    """Pass `data` through strict JSON once, so that tuples become lists etc. and the stored value
    equals what a reader gets back from the file."""
    try:
        return json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be strict-JSON serialisable (no NaN/inf, plain types): {error}") from error


def environment_info() -> dict[str, str]:
    """Versions that affect the numbers. torch is looked up, not imported (importing it is slow)."""
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for distribution in ("numpy", "scipy", "scikit-learn", "torch"):
        try:
            info[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            info[distribution] = "not installed"
    return info


def summary_rows(report: EvalReport) -> list[dict[str, Any]]:
    """One row per OOD split, for a CLI table."""
    return [
        {"split": split, "auroc": metrics.auroc, "fpr95": metrics.fpr95, "aupr_out": metrics.aupr_out}
        for split, metrics in report.ood_metrics.items()
    ]


def to_markdown(report: EvalReport) -> str:
    lines = [
        f"# Evaluation report ({report.model_uri or 'unregistered model'})",
        "",
        f"- created: {report.created_at}",
        "- score: energy, higher = more OOD; OOD is the positive class",
        f"- alpha: {report.alpha:g}, threshold: {report.threshold:.6g}, "
        f"realised FPR on `{report.in_distribution_split}`: {report.realised_fpr:.4f}",
    ]
    if report.calibration_split is not None:
        lines.append(f"- threshold calibrated on `{report.calibration_split}`")
    lines += [
        "",
        f"| OOD split (vs `{report.in_distribution_split}`) | AUROC | FPR@95TPR | AUPR-out |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in summary_rows(report):
        lines.append(f"| {row['split']} | {row['auroc']:.4f} | {row['fpr95']:.4f} | {row['aupr_out']:.4f} |")
    return "\n".join(lines) + "\n"
