"""Compare two evaluation reports before a rollout: per-metric deltas with confidence intervals and a
verdict per gate.

`compare_reports(baseline, candidate, gates)` returns a `ReportComparison` (frozen; exact JSON round
trip; it embeds both reports, so it is a complete audit record on its own).

Deltas are always candidate - baseline, per OOD split and per metric (AUROC, AUPR-in, AUPR-out,
FPR@95TPR, detection error; the energy is the score, higher = more OOD, OOD positive).

Paired or not. A split is compared PAIRED when both reports carry per-sample scores for the same
inputs: the in-distribution split and the OOD split have equal dataset fingerprints (content hashes)
in both reports and equal numbers of scores. The interval is then a paired bootstrap
(`evaluation.bootstrap.paired_bootstrap_diffs`): each resample draws one set of input positions and
evaluates both models on it, so the variation they share cancels. Otherwise the interval is an
UNPAIRED bootstrap (each report resampled independently, wider) and the comparison notes why it is
not paired. Without per-sample scores there is no interval at all (point deltas only).

Gate rules (every gate is checked on the candidate; a gate that cannot be evaluated fails):

- Metric gates, `<metric>: {max_drop: d, confidence: c}` for metrics where higher is better (auroc,
  aupr_in, aupr_out) and `<metric>: {max_rise: r, confidence: c}` where lower is better (fpr95,
  detection_error), checked on every OOD split both reports share (or only `splits: [...]`):
    * with `confidence`: FAIL when we are confident, at level c, that the metric moved the wrong way
      by more than the allowance: for max_drop, when the upper bound of the c-interval of
      (candidate - baseline) is below -d; for max_rise, when the lower bound is above r. A candidate
      that is merely not shown to be as good passes: the gate stops regressions that the data
      demonstrate, not noise.
    * without `confidence`: the point estimate decides: FAIL when candidate - baseline < -d
      (max_drop) or > r (max_rise).
    * when a split has no interval (no per-sample scores) the point-estimate rule is used and the
      verdict says so; when the candidate lacks a split the baseline evaluated (or a split named in
      `splits`), the gate fails.
- `realised_fpr: {tolerance: t}`: FAIL when the candidate's realised false-positive rate on held-out
  in-distribution data exceeds its alpha + t. With `confidence: c` it FAILs only when the lower bound
  of the exact (Clopper-Pearson) c-interval of that rate exceeds alpha + t.
- `flag_rate: {ood_min: m, in_distribution_min: i}`: absolute floors on the candidate's own flag rates
  at its threshold, so a guard that flags (almost) nothing never passes, whatever the baseline does:
  FAIL when the share of OOD inputs (all OOD splits pooled) it flags is below m, or when the share of
  held-out in-distribution inputs it flags is below i. A report without per-sample scores fails it; a
  report with no OOD split at all (a guard trained and evaluated without OOD examples) is held to the
  in-distribution floor only.
- `data_checks: {must_pass: true}`: FAIL unless the candidate report says its data checks passed
  (`data_checks_passed is True`; False or not recorded fail). `must_pass: false` only reports it.

- `feedback_holdout: {max_rise: r, confidence: c}` (optional; `DEFAULT_FEEDBACK_GATE` when absent, 0.05 at
  95%): champion and challenger flag the same holdout feedback rows (the newest traffic with feedback,
  held out of the retrain). Two rates are compared, challenger - champion, over the same rows: the
  missed-problem rate (rows with feedback = 1 the guard accepted, over the rows with feedback = 1) and
  the false-alarm rate (rows with feedback = 0 the guard flagged, over the rows with feedback = 0).
  Interval: exact conditional on the discordant rows (`paired_rate_difference`). FAIL when the lower
  bound of the c-interval exceeds r (confidently worse by more than r). A rate with no rows is not
  compared (PASS, noted); with no holdout at all the gate is skipped with a note
  (`feedback_skipped_verdict`). These verdicts are computed by the promotion (flows/ops/promotion.py),
  which holds the rows, with `feedback_verdicts`, and join the comparison's verdicts there.

A `bootstrap: {n_resamples, seed, confidence}` entry sets how the comparison's intervals are computed
(default 1000 resamples, seed 0, 95% for the delta table; a gate's own `confidence` sets its level).

Rendering a comparison (terminal tables, Markdown, the HTML page) is `evaluation.render`
(`tables.comparison_table` / `gate_table`, `markdown.comparison_markdown`,
`comparison_page.render_comparison_html` / `write_comparison_html`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.bootstrap import ConfidenceInterval, paired_bootstrap_diffs, resampled_metric
from evaluation.files import JsonRoundTrip
from evaluation.report import CI_METRICS, LOWER_IS_BETTER, METRIC_LABELS, EvalReport, data_checks_text

COMPARISON_SCHEMA_VERSION = 1

HIGHER_IS_BETTER = frozenset(m for m in CI_METRICS if m not in LOWER_IS_BETTER)

# Gates used when no file is given (flows/pipeline/configs/gates.yaml holds the same values).
DEFAULT_GATES: dict[str, Any] = {
    "bootstrap": {"n_resamples": 1000, "seed": 0, "confidence": 0.95},
    "auroc": {"max_drop": 0.005, "confidence": 0.95},
    "fpr95": {"max_rise": 0.0, "confidence": 0.95},
    "realised_fpr": {"tolerance": 0.02, "confidence": 0.95},
    "flag_rate": {"ood_min": 0.1, "in_distribution_min": 0.005},
    "data_checks": {"must_pass": True},
    "feedback_holdout": {"max_rise": 0.05, "confidence": 0.95},
}

# Block size for the unpaired bootstrap: (resamples in a block) x (scores per report).
_BLOCK_ELEMENTS = 2_000_000


# --- gates ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricGate:
    """A metric may not move the wrong way by more than `max_change` (see the module docstring)."""

    metric: str
    max_change: float
    confidence: float | None = None
    splits: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.metric not in CI_METRICS:
            raise ValueError(f"unknown gate metric {self.metric!r}; known: {', '.join(CI_METRICS)}")
        if not (isinstance(self.max_change, (int, float)) and math.isfinite(self.max_change) and self.max_change >= 0):
            raise ValueError(f"{self.metric}: {self.limit_key} must be a finite number >= 0, got {self.max_change!r}")
        if self.confidence is not None and not 0.0 < self.confidence < 1.0:
            raise ValueError(f"{self.metric}: confidence must be in (0, 1), got {self.confidence!r}")

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER

    @property
    def limit_key(self) -> str:
        return "max_drop" if self.higher_is_better else "max_rise"

    @property
    def rule(self) -> str:
        d = f"{self.max_change:g}"
        if self.confidence is None:
            return f"fail if candidate - baseline {'< -' + d if self.higher_is_better else '> ' + d} (point estimate)"
        level = f"{self.confidence:g}"
        if self.higher_is_better:
            return f"fail if the upper bound of the {level} CI of candidate - baseline < -{d}"
        return f"fail if the lower bound of the {level} CI of candidate - baseline > {d}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {self.limit_key: self.max_change}
        if self.confidence is not None:
            d["confidence"] = self.confidence
        if self.splits is not None:
            d["splits"] = list(self.splits)
        return d

    @classmethod
    def from_dict(cls, metric: str, d: dict[str, Any]) -> MetricGate:
        if metric not in CI_METRICS:
            raise ValueError(
                f"unknown gate {metric!r}; known: {', '.join([*CI_METRICS, 'realised_fpr', 'data_checks', 'flag_rate'])}"
            )
        if not isinstance(d, dict):
            raise ValueError(f"gate {metric!r} must be a mapping, got {d!r}")
        limit_key = "max_drop" if metric in HIGHER_IS_BETTER else "max_rise"
        wrong_key = "max_rise" if limit_key == "max_drop" else "max_drop"
        if wrong_key in d:
            better = "higher" if metric in HIGHER_IS_BETTER else "lower"
            raise ValueError(f"gate {metric!r}: {better} is better for this metric, so it takes {limit_key}, not {wrong_key}")
        _check_keys(d, {limit_key, "confidence", "splits"}, f"gate {metric!r}")
        if limit_key not in d:
            raise ValueError(f"gate {metric!r} needs {limit_key}")
        splits = d.get("splits")
        if splits is not None and (not isinstance(splits, list) or not all(isinstance(s, str) for s in splits)):
            raise ValueError(f"gate {metric!r}: splits must be a list of split names, got {splits!r}")
        return cls(
            metric=metric,
            max_change=_number(d[limit_key], f"gate {metric!r}: {limit_key}"),
            confidence=None if d.get("confidence") is None else _number(d["confidence"], f"gate {metric!r}: confidence"),
            splits=None if splits is None else tuple(splits),
        )


@dataclass(frozen=True)
class RealisedFPRGate:
    tolerance: float
    confidence: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"realised_fpr: tolerance must be a finite number >= 0, got {self.tolerance!r}")
        if self.confidence is not None and not 0.0 < self.confidence < 1.0:
            raise ValueError(f"realised_fpr: confidence must be in (0, 1), got {self.confidence!r}")

    @property
    def rule(self) -> str:
        t = f"{self.tolerance:g}"
        if self.confidence is None:
            return f"fail if the candidate's realised FPR > alpha + {t}"
        return f"fail if the lower bound of the {self.confidence:g} Clopper-Pearson CI of the realised FPR > alpha + {t}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tolerance": self.tolerance}
        if self.confidence is not None:
            d["confidence"] = self.confidence
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RealisedFPRGate:
        if not isinstance(d, dict):
            raise ValueError(f"gate 'realised_fpr' must be a mapping, got {d!r}")
        _check_keys(d, {"tolerance", "confidence"}, "gate 'realised_fpr'")
        if "tolerance" not in d:
            raise ValueError("gate 'realised_fpr' needs tolerance")
        return cls(
            tolerance=_number(d["tolerance"], "realised_fpr: tolerance"),
            confidence=None if d.get("confidence") is None else _number(d["confidence"], "realised_fpr: confidence"),
        )


@dataclass(frozen=True)
class FlagRateGate:
    """Absolute floors on the candidate's own flag rates (OOD pooled, held-out in-distribution)."""

    ood_min: float
    in_distribution_min: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ood_min", "in_distribution_min"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"flag_rate: {name} must be a share in [0, 1], got {value!r}")

    @property
    def rule(self) -> str:
        return (
            f"fail if the candidate flags under {self.ood_min:g} of OOD inputs or under "
            f"{self.in_distribution_min:g} of in-distribution inputs"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"ood_min": self.ood_min, "in_distribution_min": self.in_distribution_min}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlagRateGate:
        if not isinstance(d, dict):
            raise ValueError(f"gate 'flag_rate' must be a mapping, got {d!r}")
        _check_keys(d, {"ood_min", "in_distribution_min"}, "gate 'flag_rate'")
        if "ood_min" not in d:
            raise ValueError("gate 'flag_rate' needs ood_min")
        return cls(
            ood_min=_number(d["ood_min"], "flag_rate: ood_min"),
            in_distribution_min=_number(d.get("in_distribution_min", 0.0), "flag_rate: in_distribution_min"),
        )


@dataclass(frozen=True)
class DataChecksGate:
    must_pass: bool = True

    @property
    def rule(self) -> str:
        return "fail unless the candidate's data checks passed" if self.must_pass else "report only"

    def to_dict(self) -> dict[str, Any]:
        return {"must_pass": self.must_pass}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataChecksGate:
        if not isinstance(d, dict):
            raise ValueError(f"gate 'data_checks' must be a mapping, got {d!r}")
        _check_keys(d, {"must_pass"}, "gate 'data_checks'")
        must_pass = d.get("must_pass", True)
        if not isinstance(must_pass, bool):
            raise ValueError(f"data_checks: must_pass must be true or false, got {must_pass!r}")
        return cls(must_pass=must_pass)


@dataclass(frozen=True)
class FeedbackGate:
    """Challenger vs champion on holdout feedback rows: neither the missed-problem rate nor the
    false-alarm rate may rise confidently by more than `max_rise` (see the module docstring)."""

    max_rise: float = 0.05
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not (isinstance(self.max_rise, (int, float)) and math.isfinite(self.max_rise) and 0.0 <= self.max_rise <= 1.0):
            raise ValueError(f"feedback_holdout: max_rise must be a share in [0, 1], got {self.max_rise!r}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"feedback_holdout: confidence must be in (0, 1), got {self.confidence!r}")

    @property
    def rule(self) -> str:
        return (
            f"fail if the lower bound of the {self.confidence:g} CI of challenger - champion "
            f"(same holdout feedback rows) > {self.max_rise:g}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"max_rise": self.max_rise, "confidence": self.confidence}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeedbackGate:
        if not isinstance(d, dict):
            raise ValueError(f"gate 'feedback_holdout' must be a mapping, got {d!r}")
        _check_keys(d, {"max_rise", "confidence"}, "gate 'feedback_holdout'")
        return cls(
            max_rise=_number(d.get("max_rise", 0.05), "feedback_holdout: max_rise"),
            confidence=_number(d.get("confidence", 0.95), "feedback_holdout: confidence"),
        )


DEFAULT_FEEDBACK_GATE = FeedbackGate()


@dataclass(frozen=True)
class Gates:
    """Which changes block a rollout, and how the comparison's intervals are computed."""

    metrics: tuple[MetricGate, ...] = ()
    realised_fpr: RealisedFPRGate | None = None
    data_checks: DataChecksGate | None = None
    flag_rate: FlagRateGate | None = None
    feedback: FeedbackGate | None = None  # `feedback_holdout`; the promotion uses DEFAULT_FEEDBACK_GATE when None
    n_resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if int(self.n_resamples) != self.n_resamples or self.n_resamples < 1:
            raise ValueError(f"bootstrap: n_resamples must be a positive integer, got {self.n_resamples!r}")
        if int(self.seed) != self.seed:
            raise ValueError(f"bootstrap: seed must be an integer, got {self.seed!r}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"bootstrap: confidence must be in (0, 1), got {self.confidence!r}")
        names = [gate.metric for gate in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"one gate per metric, got {names}")

    @classmethod
    def default(cls) -> Gates:
        return cls.from_dict(DEFAULT_GATES)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Gates:
        if not isinstance(d, dict):
            raise ValueError(f"gates must be a mapping of gate name to settings, got {type(d).__name__}")
        known = {*CI_METRICS, "realised_fpr", "data_checks", "flag_rate", "feedback_holdout", "bootstrap"}
        _check_keys(d, known, "gates")
        bootstrap = d.get("bootstrap") or {}
        if not isinstance(bootstrap, dict):
            raise ValueError(f"bootstrap must be a mapping, got {bootstrap!r}")
        _check_keys(bootstrap, {"n_resamples", "seed", "confidence"}, "bootstrap")
        return cls(
            metrics=tuple(MetricGate.from_dict(name, d[name]) for name in CI_METRICS if name in d),
            realised_fpr=None if d.get("realised_fpr") is None else RealisedFPRGate.from_dict(d["realised_fpr"]),
            data_checks=None if d.get("data_checks") is None else DataChecksGate.from_dict(d["data_checks"]),
            flag_rate=None if d.get("flag_rate") is None else FlagRateGate.from_dict(d["flag_rate"]),
            feedback=None if d.get("feedback_holdout") is None else FeedbackGate.from_dict(d["feedback_holdout"]),
            n_resamples=_integer(bootstrap.get("n_resamples", 1000), "bootstrap: n_resamples"),
            seed=_integer(bootstrap.get("seed", 0), "bootstrap: seed"),
            confidence=_number(bootstrap.get("confidence", 0.95), "bootstrap: confidence"),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "bootstrap": {"n_resamples": self.n_resamples, "seed": self.seed, "confidence": self.confidence}
        }
        for gate in self.metrics:
            d[gate.metric] = gate.to_dict()
        if self.realised_fpr is not None:
            d["realised_fpr"] = self.realised_fpr.to_dict()
        if self.data_checks is not None:
            d["data_checks"] = self.data_checks.to_dict()
        if self.flag_rate is not None:
            d["flag_rate"] = self.flag_rate.to_dict()
        if self.feedback is not None:
            d["feedback_holdout"] = self.feedback.to_dict()
        return d

    @classmethod
    def from_yaml(cls, path: str | Path) -> Gates:
        import yaml

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"cannot read gates file {path}: {error}") from error
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from error
        try:
            gates = cls.from_dict(data if data is not None else {})
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        if not gates.metrics and gates.realised_fpr is None and gates.data_checks is None and gates.flag_rate is None:
            raise ValueError(f"{path}: no gates configured; a comparison without gates would pass anything")
        return gates


def _check_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(d) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return float(value)


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer, got {value!r}")
    return int(value)


# --- the comparison -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairing:
    """Whether a split's scores could be compared input by input, and why (not)."""

    paired: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"paired": self.paired, "note": self.note}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pairing:
        return cls(paired=bool(d["paired"]), note=str(d["note"]))


@dataclass(frozen=True)
class MetricDelta:
    """One metric on one OOD split: both values, candidate - baseline, and its interval (paired
    bootstrap when `paired`, unpaired bootstrap otherwise, None without per-sample scores)."""

    baseline: float
    candidate: float
    delta: float
    ci: ConfidenceInterval | None
    paired: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "delta": self.delta,
            "ci": None if self.ci is None else self.ci.to_dict(),
            "paired": self.paired,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricDelta:
        return cls(
            baseline=float(d["baseline"]),
            candidate=float(d["candidate"]),
            delta=float(d["delta"]),
            ci=None if d["ci"] is None else ConfidenceInterval.from_dict(d["ci"]),
            paired=bool(d["paired"]),
        )


@dataclass(frozen=True)
class GateVerdict:
    """One gate on one OOD split (`split` None for report-wide gates): passed or not, the rule
    applied, the numbers it was applied to, and a sentence for people."""

    gate: str
    split: str | None
    passed: bool
    rule: str
    observed: dict[str, Any]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "split": self.split,
            "passed": self.passed,
            "rule": self.rule,
            "observed": dict(self.observed),
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateVerdict:
        return cls(
            gate=str(d["gate"]),
            split=None if d["split"] is None else str(d["split"]),
            passed=bool(d["passed"]),
            rule=str(d["rule"]),
            observed=dict(d["observed"]),
            message=str(d["message"]),
        )


@dataclass(frozen=True)
class ReportComparison(JsonRoundTrip):
    schema_version: int
    created_at: str
    baseline: EvalReport
    candidate: EvalReport
    gates: Gates
    # OOD splits both reports evaluated (baseline order).
    splits: list[str]
    pairing: dict[str, Pairing]
    deltas: dict[str, dict[str, MetricDelta]]
    verdicts: list[GateVerdict]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(verdict.passed for verdict in self.verdicts)

    @property
    def failed(self) -> list[GateVerdict]:
        return [verdict for verdict in self.verdicts if not verdict.passed]

    def gate_passed(self, gate: str) -> bool:
        return all(v.passed for v in self.verdicts if v.gate == gate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "passed": self.passed,
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
            "gates": self.gates.to_dict(),
            "splits": list(self.splits),
            "pairing": {split: p.to_dict() for split, p in self.pairing.items()},
            "deltas": {split: {m: d.to_dict() for m, d in per.items()} for split, per in self.deltas.items()},
            "verdicts": [v.to_dict() for v in self.verdicts],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportComparison:
        if d.get("schema_version") != COMPARISON_SCHEMA_VERSION:
            raise ValueError(
                f"unsupported comparison schema_version {d.get('schema_version')!r}; this code reads "
                f"{COMPARISON_SCHEMA_VERSION}"
            )
        comparison = cls(
            schema_version=int(d["schema_version"]),
            created_at=str(d["created_at"]),
            baseline=EvalReport.from_dict(d["baseline"]),
            candidate=EvalReport.from_dict(d["candidate"]),
            gates=Gates.from_dict(d["gates"]),
            splits=[str(s) for s in d["splits"]],
            pairing={str(s): Pairing.from_dict(p) for s, p in d["pairing"].items()},
            deltas={
                str(s): {str(m): MetricDelta.from_dict(x) for m, x in per.items()} for s, per in d["deltas"].items()
            },
            verdicts=[GateVerdict.from_dict(v) for v in d["verdicts"]],
            notes=[str(n) for n in d["notes"]],
        )
        if "passed" in d and bool(d["passed"]) != comparison.passed:
            raise ValueError("comparison: the stored 'passed' disagrees with its verdicts")
        return comparison



def compare_reports(baseline: EvalReport, candidate: EvalReport, gates: Gates | None = None) -> ReportComparison:
    """Deltas (candidate - baseline) per OOD split and metric with intervals, and a verdict per gate.
    See the module docstring for when intervals are paired and for the gate rules."""
    gates = Gates.default() if gates is None else gates
    notes: list[str] = []
    splits = [s for s in baseline.ood_metrics if s in candidate.ood_metrics]
    only_baseline = [s for s in baseline.ood_metrics if s not in candidate.ood_metrics]
    only_candidate = [s for s in candidate.ood_metrics if s not in baseline.ood_metrics]
    if only_baseline:
        notes.append(f"OOD split(s) {only_baseline} are in the baseline report only: not compared")
    if only_candidate:
        notes.append(f"OOD split(s) {only_candidate} are in the candidate report only: not compared")
    if baseline.in_distribution_split != candidate.in_distribution_split:
        notes.append(
            f"the in-distribution splits are named differently ({baseline.in_distribution_split!r} vs "
            f"{candidate.in_distribution_split!r}); each report's own is used"
        )
    if baseline.alpha != candidate.alpha:
        notes.append(f"the reports target different alphas ({baseline.alpha:g} vs {candidate.alpha:g})")

    pairing = {split: _pairing(baseline, candidate, split) for split in splits}
    intervals = _IntervalCache(baseline, candidate, pairing, gates)
    deltas = {
        split: {
            metric: MetricDelta(
                baseline=baseline.metric(split, metric),
                candidate=candidate.metric(split, metric),
                delta=candidate.metric(split, metric) - baseline.metric(split, metric),
                ci=None if (cis := intervals.get(split, gates.confidence)) is None else cis[metric],
                paired=pairing[split].paired,
            )
            for metric in CI_METRICS
        }
        for split in splits
    }
    for split in splits:
        if not pairing[split].paired:
            notes.append(f"{split}: {pairing[split].note}")

    verdicts: list[GateVerdict] = []
    for gate in gates.metrics:
        verdicts.extend(_metric_gate_verdicts(gate, baseline, candidate, splits, deltas, intervals))
    verdicts.extend(candidate_verdicts(candidate, gates, baseline))
    return ReportComparison(
        schema_version=COMPARISON_SCHEMA_VERSION,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        baseline=baseline,
        candidate=candidate,
        gates=gates,
        splits=splits,
        pairing=pairing,
        deltas=deltas,
        verdicts=verdicts,
        notes=notes,
    )


def _pairing(baseline: EvalReport, candidate: EvalReport, split: str) -> Pairing:
    involved = [(baseline.in_distribution_split, candidate.in_distribution_split), (split, split)]
    for base_split, cand_split in involved:
        if not baseline.scores.get(base_split) or not candidate.scores.get(cand_split):
            return Pairing(False, f"no per-sample scores for {base_split!r} in both reports: point deltas only")
    for base_split, cand_split in involved:
        base_fp = baseline.dataset_fingerprints.get(base_split)
        cand_fp = candidate.dataset_fingerprints.get(cand_split)
        if base_fp is None or cand_fp is None:
            return Pairing(False, f"no dataset fingerprint for {base_split!r} in both reports: unpaired bootstrap")
        if base_fp != cand_fp:
            return Pairing(False, f"dataset fingerprints of {base_split!r} differ (other data): unpaired bootstrap")
        n_base, n_cand = len(baseline.scores[base_split]), len(candidate.scores[cand_split])
        if n_base != n_cand:
            return Pairing(False, f"{base_split!r} has {n_base} vs {n_cand} scores: unpaired bootstrap")
    return Pairing(True, "same inputs (equal fingerprints and sizes): paired bootstrap")


class _IntervalCache:
    """Intervals of candidate - baseline per (split, confidence), computed on first use. Every
    confidence level uses the same resamples (they depend only on the seed and the sizes)."""

    def __init__(self, baseline: EvalReport, candidate: EvalReport, pairing: dict[str, Pairing], gates: Gates):
        self.baseline, self.candidate, self.pairing, self.gates = baseline, candidate, pairing, gates
        self._cache: dict[tuple[str, float], dict[str, ConfidenceInterval] | None] = {}

    def get(self, split: str, confidence: float) -> dict[str, ConfidenceInterval] | None:
        key = (split, confidence)
        if key not in self._cache:
            self._cache[key] = self._compute(split, confidence)
        return self._cache[key]

    def _compute(self, split: str, confidence: float) -> dict[str, ConfidenceInterval] | None:
        base, cand = self.baseline, self.candidate
        arrays = [
            base.scores.get(base.in_distribution_split), base.scores.get(split),
            cand.scores.get(cand.in_distribution_split), cand.scores.get(split),
        ]
        if any(not values for values in arrays):
            return None
        in_a, ood_a, in_b, ood_b = (np.asarray(values, dtype=np.float64) for values in arrays)
        if self.pairing[split].paired:
            return paired_bootstrap_diffs(
                in_a, ood_a, in_b, ood_b, CI_METRICS, self.gates.n_resamples, confidence, self.gates.seed
            )
        return unpaired_bootstrap_diffs(
            in_a, ood_a, in_b, ood_b, CI_METRICS, self.gates.n_resamples, confidence, self.gates.seed
        )


def unpaired_bootstrap_diffs(
    in_a: Any,
    ood_a: Any,
    in_b: Any,
    ood_b: Any,
    metrics: tuple[str, ...] = CI_METRICS,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, ConfidenceInterval]:
    """Interval of metric(B) - metric(A) for detectors scored on DIFFERENT inputs: each resample
    draws a stratified resample of A and, independently, one of B (so it is wider than the paired
    interval, which cancels the variation of shared inputs)."""
    in_a, ood_a, in_b, ood_b = (np.asarray(x, dtype=np.float64) for x in (in_a, ood_a, in_b, ood_b))
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(in_a.size + ood_a.size, in_b.size + ood_b.size))
    differences = {m: np.empty(n_resamples) for m in metrics}
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        rows = stop - start
        index_a = (rng.integers(0, in_a.size, (rows, in_a.size)), rng.integers(0, ood_a.size, (rows, ood_a.size)))
        index_b = (rng.integers(0, in_b.size, (rows, in_b.size)), rng.integers(0, ood_b.size, (rows, ood_b.size)))
        for m in metrics:
            differences[m][start:stop] = resampled_metric(in_b, ood_b, *index_b, metric=m) - resampled_metric(
                in_a, ood_a, *index_a, metric=m
            )
    identity_a = (np.arange(in_a.size)[None, :], np.arange(ood_a.size)[None, :])
    identity_b = (np.arange(in_b.size)[None, :], np.arange(ood_b.size)[None, :])
    tail = (1.0 - confidence) / 2.0
    result = {}
    for m in metrics:
        estimate = float(
            resampled_metric(in_b, ood_b, *identity_b, metric=m)[0] - resampled_metric(in_a, ood_a, *identity_a, metric=m)[0]
        )
        low, high = np.quantile(differences[m], [tail, 1.0 - tail])
        result[m] = ConfidenceInterval(estimate, float(low), float(high), float(confidence), int(n_resamples))
    return result


def _metric_gate_verdicts(
    gate: MetricGate,
    baseline: EvalReport,
    candidate: EvalReport,
    splits: list[str],
    deltas: dict[str, dict[str, MetricDelta]],
    intervals: _IntervalCache,
) -> list[GateVerdict]:
    wanted = list(gate.splits) if gate.splits is not None else list(baseline.ood_metrics)
    verdicts = []
    for split in wanted:
        if split not in splits:
            where = "the candidate report" if split not in candidate.ood_metrics else "the baseline report"
            if split not in candidate.ood_metrics and split not in baseline.ood_metrics:
                where = "either report"
            verdicts.append(
                GateVerdict(gate.metric, split, False, gate.rule, {},
                            f"{split} is not in {where}, so {gate.metric} cannot be compared there")
            )
            continue
        d = deltas[split][gate.metric]
        observed: dict[str, Any] = {
            "baseline": d.baseline, "candidate": d.candidate, "delta": d.delta,
            gate.limit_key: gate.max_change, "paired": d.paired,
        }
        label = METRIC_LABELS[gate.metric]
        limit = gate.max_change
        cis = None if gate.confidence is None else intervals.get(split, gate.confidence)
        if cis is not None:
            ci = cis[gate.metric]
            observed.update({"ci_low": ci.low, "ci_high": ci.high, "confidence": ci.confidence})
            kind = "paired" if d.paired else "unpaired"
            if gate.higher_is_better:
                passed = not ci.high < -limit
                message = (
                    f"{label} {d.baseline:.4f} -> {d.candidate:.4f} (delta {d.delta:+.4f}, {kind} {ci.confidence:g} CI "
                    f"[{ci.low:+.4f}, {ci.high:+.4f}]); "
                    + ("no confident drop beyond " if passed else "confidently dropped by more than ")
                    + f"{limit:g}"
                )
            else:
                passed = not ci.low > limit
                message = (
                    f"{label} {d.baseline:.4f} -> {d.candidate:.4f} (delta {d.delta:+.4f}, {kind} {ci.confidence:g} CI "
                    f"[{ci.low:+.4f}, {ci.high:+.4f}]); "
                    + ("no confident rise beyond " if passed else "confidently rose by more than ")
                    + f"{limit:g}"
                )
        else:
            passed = not (d.delta < -limit if gate.higher_is_better else d.delta > limit)
            verb = "dropped" if gate.higher_is_better else "rose"
            fallback = " (no per-sample scores: point estimate used)" if gate.confidence is not None else ""
            message = (
                f"{label} {d.baseline:.4f} -> {d.candidate:.4f} (delta {d.delta:+.4f}); "
                + (f"{verb} by at most {limit:g}" if passed else f"{verb} by more than {limit:g}")
                + fallback
            )
        verdicts.append(GateVerdict(gate.metric, split, passed, gate.rule, observed, message))
    return verdicts


def candidate_verdicts(candidate: EvalReport, gates: Gates, baseline: EvalReport | None = None) -> list[GateVerdict]:
    """The gates that judge the candidate on its own (realised FPR, flag-rate floors, data checks):
    also what a first version must pass before it becomes champion, when there is no baseline."""
    verdicts = []
    if gates.realised_fpr is not None:
        verdicts.append(_realised_fpr_verdict(gates.realised_fpr, baseline, candidate))
    if gates.flag_rate is not None:
        verdicts.append(_flag_rate_verdict(gates.flag_rate, candidate))
    if gates.data_checks is not None:
        verdicts.append(_data_checks_verdict(gates.data_checks, baseline, candidate))
    return verdicts


def _flag_rate_verdict(gate: FlagRateGate, candidate: EvalReport) -> GateVerdict:
    threshold = candidate.threshold
    in_scores = np.asarray(candidate.scores.get(candidate.in_distribution_split) or [], dtype=np.float64)
    ood_scores = [np.asarray(candidate.scores.get(split) or [], dtype=np.float64) for split in candidate.ood_metrics]
    ood = np.concatenate(ood_scores) if ood_scores else np.empty(0)
    missing_ood_scores = bool(candidate.ood_metrics) and ood.size == 0
    if in_scores.size == 0 or missing_ood_scores or not math.isfinite(threshold):
        why = "its threshold is not finite" if not math.isfinite(threshold) else "it carries no per-sample scores"
        observed = {"threshold": threshold, "n_in": int(in_scores.size), "n_ood": int(ood.size)}
        return GateVerdict("flag_rate", None, False, gate.rule, observed, f"cannot check the flag rates: {why}")
    in_flagged = int(np.sum(in_scores > threshold))
    in_rate = in_flagged / in_scores.size
    observed: dict[str, Any] = {
        "in_rate": in_rate, "in_flagged": in_flagged, "n_in": int(in_scores.size),
        "in_distribution_min": gate.in_distribution_min, "threshold": threshold, "n_ood": int(ood.size),
    }
    in_text = f"{in_rate:.4f} of in-distribution inputs ({in_flagged}/{in_scores.size}, floor {gate.in_distribution_min:g})"
    if ood.size == 0:
        # Trained and evaluated without OOD examples: only the in-distribution floor can be checked.
        passed = in_rate >= gate.in_distribution_min
        message = f"flags {in_text}; the report has no OOD split, so the OOD floor is not checked"
    else:
        ood_flagged = int(np.sum(ood > threshold))
        ood_rate = ood_flagged / ood.size
        observed.update({"ood_rate": ood_rate, "ood_flagged": ood_flagged, "ood_min": gate.ood_min})
        passed = ood_rate >= gate.ood_min and in_rate >= gate.in_distribution_min
        message = f"flags {ood_rate:.4f} of OOD inputs ({ood_flagged}/{ood.size}, floor {gate.ood_min:g}) and {in_text}"
    if not passed:
        message = "a guard that flags too little: " + message
    return GateVerdict("flag_rate", None, passed, gate.rule, observed, message)


def _realised_fpr_verdict(gate: RealisedFPRGate, baseline: EvalReport | None, candidate: EvalReport) -> GateVerdict:
    n = candidate.energy_stats[candidate.in_distribution_split].n
    flagged = int(round(candidate.realised_fpr * n))
    # The limit is the baseline's alpha: a candidate calibrated at a looser alpha must not pass by it.
    alpha = candidate.alpha if baseline is None else baseline.alpha
    limit = alpha + gate.tolerance
    observed: dict[str, Any] = {
        "candidate": candidate.realised_fpr, "baseline": None if baseline is None else baseline.realised_fpr,
        "alpha": alpha, "candidate_alpha": candidate.alpha,
        "tolerance": gate.tolerance, "limit": limit, "n_flagged": flagged, "n": n,
    }
    if gate.confidence is None:
        passed = candidate.realised_fpr <= limit
        message = (
            f"realised FPR {candidate.realised_fpr:.4f} ({flagged}/{n}) "
            + ("<=" if passed else ">") + f" alpha {alpha:g} + {gate.tolerance:g} = {limit:.4f}"
        )
    else:
        from evaluation.calibration_stats import binomial_ci  # imports ebm_core (torch): only when needed

        low, high = binomial_ci(flagged, n, gate.confidence)
        observed.update({"ci_low": low, "ci_high": high, "confidence": gate.confidence})
        passed = not low > limit
        message = (
            f"realised FPR {candidate.realised_fpr:.4f} ({flagged}/{n}), {gate.confidence:g} CI [{low:.4f}, {high:.4f}]; "
            + ("not confidently above " if passed else "confidently above ")
            + f"alpha + tolerance = {limit:.4f}"
        )
    return GateVerdict("realised_fpr", None, passed, gate.rule, observed, message)


def _data_checks_verdict(gate: DataChecksGate, baseline: EvalReport | None, candidate: EvalReport) -> GateVerdict:
    status = candidate.data_checks_passed
    passed = status is True or not gate.must_pass
    message = f"candidate data checks: {data_checks_text(status)}"
    if not passed and status is None:
        message += " (the report carries no data-check status)"
    observed = {
        "candidate": status, "baseline": None if baseline is None else baseline.data_checks_passed, "must_pass": gate.must_pass
    }
    return GateVerdict("data_checks", None, passed, gate.rule, observed, message)


# --- holdout feedback: champion vs challenger on the same labelled traffic rows ---------------------

FEEDBACK_GATES = {
    # gate name -> (rows with this feedback value, the event counted on them, words)
    "feedback_missed_problems": (1, "accepted", "missed-problem rate (problems the guard accepted)"),
    "feedback_false_alarms": (0, "flagged", "false-alarm rate (confirmed-fine rows the guard flagged)"),
}
FEEDBACK_SPLIT = "feedback_holdout"


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact two-sided interval of a binomial proportion k/n (n >= 1)."""
    from scipy.stats import beta

    tail = (1.0 - confidence) / 2.0
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def paired_rate_difference(baseline_events: Any, candidate_events: Any, confidence: float = 0.95) -> dict[str, Any]:
    """rate(candidate) - rate(baseline) over the SAME rows (an event per row for each model), with an
    exact interval conditional on the discordant rows: of the m rows where exactly one model has the
    event, b are the candidate's; the difference is (2b - m) / n, and a Clopper-Pearson interval
    [p_lo, p_hi] of b / m gives [(2 p_lo - 1) m / n, (2 p_hi - 1) m / n]. No discordant row: [0, 0]."""
    base = np.asarray(baseline_events, dtype=bool).ravel()
    cand = np.asarray(candidate_events, dtype=bool).ravel()
    if base.shape != cand.shape:
        raise ValueError(f"paired rates need one event per row for both models, got {base.size} and {cand.size} rows")
    n = int(base.size)
    if n == 0:
        raise ValueError("paired rates need at least one row")
    only_candidate = int(np.sum(cand & ~base))
    only_baseline = int(np.sum(base & ~cand))
    discordant = only_candidate + only_baseline
    delta = (only_candidate - only_baseline) / n
    if discordant == 0:
        low = high = 0.0
    else:
        p_low, p_high = clopper_pearson(only_candidate, discordant, confidence)
        low, high = (2.0 * p_low - 1.0) * discordant / n, (2.0 * p_high - 1.0) * discordant / n
    return {
        "n": n,
        "baseline": float(base.mean()),
        "candidate": float(cand.mean()),
        "delta": float(delta),
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": float(confidence),
        "baseline_events": int(base.sum()),
        "candidate_events": int(cand.sum()),
        "only_candidate": only_candidate,
        "only_baseline": only_baseline,
    }


def feedback_verdicts(
    baseline_flagged: Any, candidate_flagged: Any, feedback: Any, gate: FeedbackGate = DEFAULT_FEEDBACK_GATE
) -> list[GateVerdict]:
    """The holdout feedback gates: baseline (champion) and candidate (challenger) flags on the same
    rows, and the people's feedback per row (1 = a problem, 0 = fine). One verdict for the
    missed-problem rate (over feedback = 1 rows) and one for the false-alarm rate (over feedback = 0
    rows); a rate with no rows passes with a note."""
    base = np.asarray(baseline_flagged).ravel()
    cand = np.asarray(candidate_flagged).ravel()
    labels = np.asarray(feedback).ravel()
    if not (base.size == cand.size == labels.size):
        raise ValueError(
            f"feedback gate: {base.size} champion flags, {cand.size} challenger flags and {labels.size} feedback values"
        )
    for name, values in (("champion flags", base), ("challenger flags", cand), ("feedback", labels)):
        bad = [i for i, v in enumerate(values.tolist()) if v not in (0, 1, True, False)]
        if bad:
            raise ValueError(f"feedback gate: {name} must be 0/1, row {bad[0]} holds {values[bad[0]]!r}")
    base, cand, labels = base.astype(bool), cand.astype(bool), labels.astype(int)
    verdicts = []
    for gate_name, (label, event, words) in FEEDBACK_GATES.items():
        rows = labels == label
        if not rows.any():
            verdicts.append(GateVerdict(
                gate_name, FEEDBACK_SPLIT, True, gate.rule, {"n": 0, "max_rise": gate.max_rise},
                f"no holdout rows with feedback = {label}: the {words.split(' (')[0]} is not compared",
            ))
            continue
        b, c = base[rows], cand[rows]
        if event == "accepted":
            b, c = ~b, ~c
        observed = paired_rate_difference(b, c, gate.confidence)
        observed["max_rise"] = gate.max_rise
        passed = not observed["ci_low"] > gate.max_rise
        message = (
            f"{words} {observed['baseline']:.4f} -> {observed['candidate']:.4f} on {observed['n']} rows "
            f"({observed['baseline_events']} -> {observed['candidate_events']}; delta {observed['delta']:+.4f}, "
            f"{gate.confidence:g} CI [{observed['ci_low']:+.4f}, {observed['ci_high']:+.4f}]); "
            + ("no confident rise beyond " if passed else "confidently rose by more than ")
            + f"{gate.max_rise:g}"
        )
        verdicts.append(GateVerdict(gate_name, FEEDBACK_SPLIT, passed, gate.rule, observed, message))
    return verdicts


def feedback_skipped_verdict(reason: str, gate: FeedbackGate = DEFAULT_FEEDBACK_GATE) -> GateVerdict:
    """The holdout feedback gate when there is nothing to compare on (no holdout rows): a PASS that says so."""
    return GateVerdict("feedback_holdout", FEEDBACK_SPLIT, True, gate.rule, {"skipped": True}, f"skipped: {reason}")
