"""The evaluation report: one JSON document per evaluated model, built from per-split energies.

What a report holds (schema version 2; `EvalReport` lists every field):

- identity: model URI, config, dataset fingerprints (content hashes), environment, timings;
- conventions: the score is the energy, higher = more OOD, OOD is the positive class;
- per OOD split: metrics (AUROC, AUPR-in, AUPR-out, FPR@95TPR) with stratified, seeded
  percentile-bootstrap confidence intervals (plus detection error), the split's kind ("near" or
  "far" OOD), and how far its energies sit from the in-distribution ones (overlap, Wasserstein, KS);
- calibration: the threshold, its realised false-positive rate on held-out in-distribution data with
  an exact (Clopper-Pearson) interval, the calibration-conditional threshold and its realised FPR,
  and a calibration curve (target alpha against realised FPR over a grid of alphas);
- baselines scored on the same inputs (metrics, intervals, per-sample scores) and the EBM's rank
  among them by AUROC;
- per-sample scores for every split, so two reports on the same data can be compared pairwise
  (`evaluation.compare`);
- whether the data checks passed.

The JSON is strict (no NaN/Infinity tokens, so any JSON reader accepts it). Floats that may
legitimately be infinite (thresholds: a conformal threshold is +inf when alpha is too small for the
calibration set) are written as the string "inf"; `float("inf")` reads it back. Floats are written
by `repr`, so `EvalReport.from_json(report.to_json()) == report` holds exactly.

Schema version 1 reports (before intervals, calibration, separation and baselines) are still read:
their newer sections are empty (`None` / `{}`).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation.bootstrap import METRICS as BOOTSTRAP_METRICS
from evaluation.bootstrap import ConfidenceInterval, bootstrap_cis
from evaluation.files import JsonRoundTrip
from evaluation.metrics import (
    EnergyStats,
    OODMetrics,
    check_scores,
    energy_stats,
    ood_metrics,
    realised_fpr,
)
from evaluation.separation import SeparationStats, separation_by_split

if TYPE_CHECKING:
    # Imported lazily where used: baselines imports scikit-learn, and calibration_stats imports
    # ebm_core (torch), which would make `import evaluation` slow for readers of metrics.
    from evaluation.baselines import BaselineResults
    from evaluation.calibration_stats import CalibrationPoint, RealisedFPR

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

# The name the EBM goes by in baseline rankings.
EBM_NAME = "ebm"

# Metrics with a confidence interval, per OOD split (the order of the report's tables).
CI_METRICS: tuple[str, ...] = BOOTSTRAP_METRICS  # auroc, aupr_in, aupr_out, fpr95, detection_error
LOWER_IS_BETTER = frozenset({"fpr95", "detection_error"})

OOD_KINDS = ("near", "far")
# A split whose name contains one of these is far OOD unless configured otherwise; others are near.
FAR_OOD_MARKERS = ("noise", "inverted", "far")

DEFAULT_CALIBRATION_ALPHAS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)

CONVENTIONS: dict[str, Any] = {
    "score": "energy",
    "higher_is_more_ood": True,
    "positive_class": "ood",
    "flagged": "an input is flagged as OOD when its score is strictly above the threshold",
    "fpr95": (
        "FPR@95TPR is the share of OOD inputs accepted (score <= t) at the smallest threshold t "
        "among in-distribution scores that accepts at least 95% of in-distribution inputs."
    ),
    "detection_error": "min over thresholds of 0.5 * (FPR + FNR), equal class weights",
    "confidence_intervals": (
        "stratified percentile bootstrap: each resample redraws the in-distribution and the OOD "
        "scores separately with replacement, keeping both sizes"
    ),
    "realised_fpr_interval": "exact binomial (Clopper-Pearson) interval of the share flagged",
}


# --- report sections ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapSettings:
    """How the report's metric intervals were computed (reproducible from these and the scores)."""

    n_resamples: int
    confidence: float
    seed: int
    method: str = "stratified percentile bootstrap"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BootstrapSettings:
        return cls(
            n_resamples=int(d["n_resamples"]),
            confidence=float(d["confidence"]),
            seed=int(d["seed"]),
            method=str(d["method"]),
        )


@dataclass(frozen=True)
class CalibrationSection:
    """How well the threshold holds its target false-positive rate on held-out data.

    `realised` measures `threshold` on `evaluated_split` (held-out in-distribution data). The
    calibration-conditional threshold (P(FPR <= alpha) >= 1 - delta over calibration sets) and the
    calibration curve need the calibration scores: they are None / empty when the report has no
    calibration split.
    """

    alpha: float
    threshold: float
    evaluated_split: str
    realised: RealisedFPR
    calibration_split: str | None
    n_calibration: int | None
    delta: float
    conditional_threshold: float | None
    conditional_realised: RealisedFPR | None
    curve: list[CalibrationPoint]

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "threshold": _encode_float(self.threshold),
            "evaluated_split": self.evaluated_split,
            "realised": self.realised.to_dict(),
            "calibration_split": self.calibration_split,
            "n_calibration": self.n_calibration,
            "delta": self.delta,
            "conditional_threshold": (
                None if self.conditional_threshold is None else _encode_float(self.conditional_threshold)
            ),
            "conditional_realised": None if self.conditional_realised is None else self.conditional_realised.to_dict(),
            "curve": [point.to_dict() for point in self.curve],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationSection:
        from evaluation.calibration_stats import CalibrationPoint, RealisedFPR

        return cls(
            alpha=float(d["alpha"]),
            threshold=float(d["threshold"]),
            evaluated_split=str(d["evaluated_split"]),
            realised=RealisedFPR.from_dict(d["realised"]),
            calibration_split=_optional_str(d["calibration_split"]),
            n_calibration=None if d["n_calibration"] is None else int(d["n_calibration"]),
            delta=float(d["delta"]),
            conditional_threshold=None if d["conditional_threshold"] is None else float(d["conditional_threshold"]),
            conditional_realised=(
                None if d["conditional_realised"] is None else RealisedFPR.from_dict(d["conditional_realised"])
            ),
            curve=[CalibrationPoint.from_dict(point) for point in d["curve"]],
        )


@dataclass(frozen=True)
class BaselineSection:
    """Baseline detectors scored on the same inputs as the EBM (see `evaluation.baselines`).

    `ranking[split]` lists every detector, the EBM included (as `EBM_NAME`), best first by
    `ranked_by`; `ebm_rank[split]` is the EBM's competition rank there (1 + the number of detectors
    strictly better, so ties share a rank).
    """

    metrics: dict[str, dict[str, OODMetrics]]
    cis: dict[str, dict[str, dict[str, ConfidenceInterval]]]
    scores: dict[str, dict[str, list[float]]]
    seconds: dict[str, float]
    skipped: dict[str, str]
    ranked_by: str
    ranking: dict[str, list[str]]
    ebm_rank: dict[str, int]

    @property
    def names(self) -> list[str]:
        return list(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {
                name: {split: m.to_dict() for split, m in per_split.items()} for name, per_split in self.metrics.items()
            },
            "cis": {name: _cis_to_dict(per_split) for name, per_split in self.cis.items()},
            "scores": {name: {split: list(v) for split, v in per_split.items()} for name, per_split in self.scores.items()},
            "seconds": dict(self.seconds),
            "skipped": dict(self.skipped),
            "ranked_by": self.ranked_by,
            "ranking": {split: list(names) for split, names in self.ranking.items()},
            "ebm_rank": dict(self.ebm_rank),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineSection:
        return cls(
            metrics={
                str(name): {str(split): OODMetrics.from_dict(m) for split, m in per_split.items()}
                for name, per_split in d["metrics"].items()
            },
            cis={str(name): _cis_from_dict(per_split) for name, per_split in d["cis"].items()},
            scores={
                str(name): {str(split): [float(v) for v in values] for split, values in per_split.items()}
                for name, per_split in d["scores"].items()
            },
            seconds={str(k): float(v) for k, v in d["seconds"].items()},
            skipped={str(k): str(v) for k, v in d["skipped"].items()},
            ranked_by=str(d["ranked_by"]),
            ranking={str(split): [str(n) for n in names] for split, names in d["ranking"].items()},
            ebm_rank={str(split): int(rank) for split, rank in d["ebm_rank"].items()},
        )


# --- the report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalReport(JsonRoundTrip):
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
    # --- schema version 2 (empty / None when read from a version 1 report) ---
    # "near" or "far" per OOD split.
    ood_kinds: dict[str, str] = field(default_factory=dict)
    # Per OOD split, per metric of CI_METRICS: point estimate and bootstrap interval.
    metric_cis: dict[str, dict[str, ConfidenceInterval]] = field(default_factory=dict)
    bootstrap: BootstrapSettings | None = None
    calibration: CalibrationSection | None = None
    separation: dict[str, SeparationStats] = field(default_factory=dict)
    baselines: BaselineSection | None = None
    # True/False: the pipeline's data checks passed/failed for the data evaluated; None: unknown.
    data_checks_passed: bool | None = None
    # How the detector was chosen (flows.pipeline.selection.SelectionOutcome.to_dict(), plus the
    # baselines' validation figures and a warning when one beats the chosen detector); None when
    # one detector was trained as configured. Optional even in version 2 reports.
    selection: dict[str, Any] | None = None
    # Langevin samples of the trained energy for image features (flows.guard.explanations.
    # langevin_pictures: samples, training images, energies, or a note why none); None otherwise.
    model_samples: dict[str, Any] | None = None

    @property
    def ood_splits(self) -> list[str]:
        return list(self.ood_metrics)

    def ood_kind(self, split: str) -> str:
        """"near" or "far" (the name rule when the report does not record it)."""
        return self.ood_kinds.get(split) or default_ood_kind(split)

    @property
    def near_splits(self) -> list[str]:
        return [split for split in self.ood_metrics if self.ood_kind(split) == "near"]

    @property
    def far_splits(self) -> list[str]:
        return [split for split in self.ood_metrics if self.ood_kind(split) == "far"]

    def metric(self, split: str, name: str) -> float:
        """Point estimate of `name` (one of CI_METRICS) on OOD split `split`."""
        if name in self.metric_cis.get(split, {}):
            return self.metric_cis[split][name].estimate
        if name == "detection_error":
            from evaluation.extra_metrics import detection_error

            return detection_error(self.scores[self.in_distribution_split], self.scores[split])
        return float(getattr(self.ood_metrics[split], name))

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-compatible data (non-finite thresholds are "inf"/"-inf")."""
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
            "ood_kinds": dict(self.ood_kinds),
            "metric_cis": _cis_to_dict(self.metric_cis),
            "bootstrap": None if self.bootstrap is None else self.bootstrap.to_dict(),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "separation": {split: s.to_dict() for split, s in self.separation.items()},
            "baselines": None if self.baselines is None else self.baselines.to_dict(),
            "data_checks_passed": self.data_checks_passed,
            "selection": self.selection,
            "model_samples": self.model_samples,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        version = d.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise ValueError(
                f"unsupported report schema_version {version!r}; this code reads {list(READABLE_SCHEMA_VERSIONS)}"
            )
        all_fields = {f.name for f in fields(cls)}
        unknown = set(d) - all_fields
        if unknown:
            raise ValueError(f"unknown report field(s): {sorted(unknown)}")
        # Version 1 reports lack the newer sections; version 2 reports must carry every field.
        required = _V1_FIELDS if version == 1 else all_fields - _OPTIONAL_FIELDS
        missing = required - set(d)
        if missing:
            raise ValueError(f"report (schema_version {version}) is missing field(s): {sorted(missing)}")
        training_curve = d["training_curve"]
        bootstrap = d.get("bootstrap")
        calibration = d.get("calibration")
        baselines = d.get("baselines")
        data_checks_passed = d.get("data_checks_passed")
        return cls(
            schema_version=int(d["schema_version"]),
            created_at=str(d["created_at"]),
            model_uri=_optional_str(d["model_uri"]),
            config=dict(d["config"]),
            conventions=dict(d["conventions"]),
            alpha=float(d["alpha"]),
            threshold=float(d["threshold"]),
            in_distribution_split=str(d["in_distribution_split"]),
            calibration_split=_optional_str(d["calibration_split"]),
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
            ood_kinds={str(k): str(v) for k, v in (d.get("ood_kinds") or {}).items()},
            metric_cis=_cis_from_dict(d.get("metric_cis") or {}),
            bootstrap=None if bootstrap is None else BootstrapSettings.from_dict(bootstrap),
            calibration=None if calibration is None else CalibrationSection.from_dict(calibration),
            separation={str(k): SeparationStats.from_dict(v) for k, v in (d.get("separation") or {}).items()},
            baselines=None if baselines is None else BaselineSection.from_dict(baselines),
            data_checks_passed=None if data_checks_passed is None else bool(data_checks_passed),
            selection=None if d.get("selection") is None else dict(d["selection"]),
            model_samples=None if d.get("model_samples") is None else dict(d["model_samples"]),
        )



_OPTIONAL_FIELDS = frozenset({"selection", "model_samples"})  # added within schema version 2; absent = None

_V1_FIELDS = frozenset(
    {
        "schema_version", "created_at", "model_uri", "config", "conventions", "alpha", "threshold",
        "in_distribution_split", "calibration_split", "realised_fpr", "energy_stats", "ood_metrics",
        "scores", "training_curve", "dataset_fingerprints", "timings", "environment",
    }
)


def _encode_float(value: float) -> float | str:
    """Finite floats stay floats; +-inf and NaN become "inf", "-inf", "nan" (float() parses them)."""
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _cis_to_dict(cis: dict[str, dict[str, ConfidenceInterval]]) -> dict[str, dict[str, dict[str, Any]]]:
    return {split: {name: ci.to_dict() for name, ci in per_metric.items()} for split, per_metric in cis.items()}


def _cis_from_dict(d: dict[str, Any]) -> dict[str, dict[str, ConfidenceInterval]]:
    return {
        str(split): {str(name): ConfidenceInterval.from_dict(ci) for name, ci in per_metric.items()}
        for split, per_metric in d.items()
    }


# --- building a report -------------------------------------------------------------------------


def default_ood_kind(split: str) -> str:
    """"far" if the split's name contains "noise", "inverted" or "far"; otherwise "near"."""
    lowered = split.lower()
    return "far" if any(marker in lowered for marker in FAR_OOD_MARKERS) else "near"


def resolve_ood_kinds(ood_splits: Sequence[str], configured: dict[str, str] | None = None) -> dict[str, str]:
    """"near"/"far" for every OOD split: `configured` where given, else the name rule."""
    configured = dict(configured or {})
    unknown = set(configured) - set(ood_splits)
    if unknown:
        raise ValueError(f"ood_kinds names split(s) that are not OOD splits: {sorted(unknown)}")
    for split, kind in configured.items():
        if kind not in OOD_KINDS:
            raise ValueError(f"ood_kinds[{split!r}] must be 'near' or 'far', got {kind!r}")
    return {split: configured.get(split, default_ood_kind(split)) for split in ood_splits}


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
    ood_kinds: dict[str, str] | None = None,
    baselines: BaselineResults | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    delta: float = 0.1,
    calibration_alphas: Sequence[float] | None = None,
    data_checks_passed: bool | None = None,
    device: str | None = None,
    selection: dict[str, Any] | None = None,
) -> EvalReport:
    """Compute every section of the report from per-split energies.

    - energy statistics for every split; OOD metrics of each OOD split against the in-distribution
      split, with `confidence` bootstrap intervals (`n_bootstrap` stratified resamples, `seed`);
    - the realised false-positive rate of `threshold` on the in-distribution split, with its exact
      binomial interval; with a `calibration_split`, also the calibration-conditional threshold at
      (alpha, `delta`) and a calibration curve over `calibration_alphas` (default
      DEFAULT_CALIBRATION_ALPHAS plus alpha);
    - separation statistics per OOD split, and each split's kind (`ood_kinds`, default: the name
      rule of `default_ood_kind`);
    - with `baselines` (from `evaluation.baselines.run_baselines` on the same inputs): their metrics
      with intervals (same resamples as the EBM's), their scores, and the EBM's AUROC rank.

    The in-distribution split should be held out from calibration: on the calibration split the
    realised FPR is at most alpha by construction and says nothing, so passing the same name as
    `calibration_split` is an error.
    """
    started = time.perf_counter()
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
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if int(seed) != seed:
        raise ValueError(f"seed must be an integer, got {seed!r}")
    kinds = resolve_ood_kinds(ood_splits, ood_kinds)
    settings = BootstrapSettings(n_resamples=int(n_bootstrap), confidence=float(confidence), seed=int(seed))

    in_scores = scores[in_distribution_split]
    ebm_metrics = {split: ood_metrics(in_scores, scores[split]) for split in ood_splits}
    metric_cis = {
        split: bootstrap_cis(in_scores, scores[split], CI_METRICS, settings.n_resamples, settings.confidence, settings.seed)
        for split in ood_splits
    }
    calibration = _calibration_section(
        scores, in_distribution_split, calibration_split, float(threshold), float(alpha), delta,
        calibration_alphas, settings.confidence,
    )
    baseline_section = (
        None
        if baselines is None
        else _baseline_section(baselines, scores, in_distribution_split, ood_splits, ebm_metrics, settings)
    )
    environment = environment_info()
    if device is not None:
        environment["device"] = str(device)
    all_timings = {str(k): float(v) for k, v in (timings or {}).items()}
    all_timings["build_report_seconds"] = time.perf_counter() - started
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
        ood_metrics=ebm_metrics,
        scores={split: values.tolist() for split, values in scores.items()},
        training_curve=(
            None
            if training_curve is None
            else {name: np.asarray(values, dtype=np.float64).ravel().tolist() for name, values in training_curve.items()}
        ),
        dataset_fingerprints={str(k): str(v) for k, v in (dataset_fingerprints or {}).items()},
        timings=all_timings,
        environment=environment,
        ood_kinds=kinds,
        metric_cis=metric_cis,
        bootstrap=settings,
        calibration=calibration,
        separation=separation_by_split(scores, in_distribution_split, list(ood_splits)),
        baselines=baseline_section,
        data_checks_passed=None if data_checks_passed is None else bool(data_checks_passed),
        selection=None if selection is None else dict(selection),
    )


def _calibration_section(
    scores: dict[str, np.ndarray],
    in_split: str,
    calibration_split: str | None,
    threshold: float,
    alpha: float,
    delta: float,
    calibration_alphas: Sequence[float] | None,
    confidence: float,
) -> CalibrationSection:
    from evaluation.calibration_stats import (
        calibration_conditional_threshold,
        calibration_curve,
        realised_fpr_with_ci,
    )

    held_out = scores[in_split]
    realised = realised_fpr_with_ci(held_out, threshold, confidence)
    if calibration_split is None:
        return CalibrationSection(
            alpha=alpha, threshold=threshold, evaluated_split=in_split, realised=realised,
            calibration_split=None, n_calibration=None, delta=delta,
            conditional_threshold=None, conditional_realised=None, curve=[],
        )
    cal = scores[calibration_split]
    grid = DEFAULT_CALIBRATION_ALPHAS if calibration_alphas is None else tuple(calibration_alphas)
    for value in grid:
        if not 0.0 < value < 1.0:
            raise ValueError(f"calibration_alphas must lie in (0, 1), got {value}")
    alphas = sorted({float(a) for a in grid} | {alpha})
    conditional = calibration_conditional_threshold(cal, alpha, delta)
    return CalibrationSection(
        alpha=alpha,
        threshold=threshold,
        evaluated_split=in_split,
        realised=realised,
        calibration_split=calibration_split,
        n_calibration=int(cal.size),
        delta=delta,
        conditional_threshold=conditional,
        conditional_realised=realised_fpr_with_ci(held_out, conditional, confidence),
        curve=calibration_curve(cal, held_out, alphas, confidence),
    )


def _baseline_section(
    baselines: BaselineResults,
    scores: dict[str, np.ndarray],
    in_split: str,
    ood_splits: list[str],
    ebm_metrics: dict[str, OODMetrics],
    settings: BootstrapSettings,
) -> BaselineSection:
    if EBM_NAME in baselines.metrics:
        raise ValueError(f"a baseline may not be called {EBM_NAME!r}: that name is the EBM's in rankings")
    cis: dict[str, dict[str, dict[str, ConfidenceInterval]]] = {}
    for name, per_split_scores in baselines.scores.items():
        for split in ood_splits:
            if split not in baselines.metrics.get(name, {}):
                raise ValueError(f"baseline {name!r} has no metrics for OOD split {split!r}")
        for split in [in_split, *ood_splits]:
            if split not in per_split_scores:
                raise ValueError(f"baseline {name!r} has no scores for split {split!r}")
            if len(per_split_scores[split]) != scores[split].size:
                raise ValueError(
                    f"baseline {name!r} scored {len(per_split_scores[split])} inputs of split {split!r}, "
                    f"the EBM {scores[split].size}: baselines must be scored on the same inputs"
                )
        cis[name] = {
            split: bootstrap_cis(
                per_split_scores[in_split], per_split_scores[split], CI_METRICS,
                settings.n_resamples, settings.confidence, settings.seed,
            )
            for split in ood_splits
        }
    ranked_by = "auroc"
    ranking: dict[str, list[str]] = {}
    ebm_rank: dict[str, int] = {}
    for split in ood_splits:
        values = {EBM_NAME: ebm_metrics[split].auroc}
        values.update({name: per_split[split].auroc for name, per_split in baselines.metrics.items()})
        ranking[split] = sorted(values, key=lambda name: values[name], reverse=True)
        ebm_rank[split] = 1 + sum(value > values[EBM_NAME] for value in values.values())
    return BaselineSection(
        metrics={name: {split: m for split, m in per_split.items() if split in ood_splits}
                 for name, per_split in baselines.metrics.items()},
        cis=cis,
        scores={name: {split: [float(v) for v in values] for split, values in per_split.items()}
                for name, per_split in baselines.scores.items()},
        seconds={str(k): float(v) for k, v in baselines.seconds.items()},
        skipped={str(k): str(v) for k, v in baselines.skipped.items()},
        ranked_by=ranked_by,
        ranking=ranking,
        ebm_rank=ebm_rank,
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
    for distribution in ("numpy", "scipy", "scikit-learn", "pandas", "matplotlib", "torch"):
        try:
            info[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            info[distribution] = "not installed"
    return info


# --- labels shared by the comparison's gate messages and the renderers (evaluation.render) ------


METRIC_LABELS = {
    "auroc": "AUROC",
    "aupr_in": "AUPR-in",
    "aupr_out": "AUPR-out",
    "fpr95": "FPR@95TPR",
    "detection_error": "Detection error",
}


def data_checks_text(passed: bool | None) -> str:
    return {True: "passed", False: "FAILED", None: "not recorded"}[passed]
