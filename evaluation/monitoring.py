"""Post-launch monitoring statistics: is the guard still seeing the traffic it was calibrated on?

Convention (as everywhere): the score is the energy, higher = more OOD; an input is flagged when its
energy is strictly above the calibrated threshold; its conformal p-value is
(1 + #{calibration energies >= e}) / (n + 1), so in-distribution p-values are (super-)uniform and a
shift towards OOD makes them small.

Per batch (and over a sliding window of batches, by pooling them):

- `flag_rate_test`: the share flagged against the calibrated alpha: exact binomial test p-value
  (one-sided "more flagged than alpha" by default) and the Clopper-Pearson interval;
- `batch_stats`: that test plus the two-sample KS statistic and the 1-Wasserstein distance between the
  batch energies and the calibration energies, and the mean p-value (1/2 under no shift);
- `feedback_stats`: with human feedback (1 = a problem), the problem rate among accepted inputs
  (problems the guard missed) and among flagged inputs (flag precision), each with a Clopper-Pearson
  interval; rows without feedback are ignored;
- `SequentialDetector`: a CUSUM of likelihood ratios over the stream of per-batch p-values (below);
- `PostLaunchSummary`: the post-launch section of an evaluation report.

The sequential detector. Under no shift the conformal p-values are (super-)uniform and, given the
calibration set, i.i.d. Each batch b of p-values gets a likelihood ratio against a contamination
alternative, mixed over contamination shares eps (default 1%, 2%, 5%, 10%, 20%, 50%):

    L_b = mean_eps prod_i [ (1 - eps) + eps * g(p_i) ],   g(p) = kappa * p ** (kappa - 1)

g is a density on [0, 1] that piles up near 0 (OOD inputs get small p-values). Because g is a
decreasing density, E[g(P)] <= 1 for any super-uniform P, so E[L_b | past] <= 1 under no shift. The
CUSUM statistic is C_b = max(0, C_{b-1} + log L_b); it alarms when C_b >= log(ARL) and then restarts
from 0. Since C_b <= log R_b for the Shiryaev-Roberts statistic R_b = (1 + R_{b-1}) L_b, and R_b - b
is a supermartingale, optional stopping gives E[run length] >= ARL batches under no shift (Lorden /
Pollak): the expected run length between false alarms is at least the configured one, with no
simulation, whatever the batch sizes. The bound assumes p-values are i.i.d. super-uniform; conformal
p-values share one calibration set, so given it they deviate from uniform by about
sqrt(alpha / n_cal) in the tails. The mixture's negative drift under no shift absorbs that for the
usual calibration sets, and `simulate_run_lengths` and benchmarks/monitoring.py measure it.

The conformal p-value is `ebm_core.calibration.conformal_p_values` and the Clopper-Pearson interval
`evaluation.calibration_stats.binomial_ci` (both imported, so there is one copy of each); besides
those, numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import binomtest, ks_2samp, wasserstein_distance

from ebm_core.calibration import conformal_p_values
from evaluation.calibration_stats import binomial_ci

DEFAULT_EPSILONS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
DEFAULT_KAPPA = 0.2


# --- small helpers --------------------------------------------------------------------------------


def _finite_1d(values: Any, name: str, allow_empty: bool = False) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _p_values_1d(p_values: Any) -> np.ndarray:
    p = _finite_1d(p_values, "p_values", allow_empty=True)
    if p.size and (p.min() <= 0.0 or p.max() > 1.0):
        raise ValueError(f"p_values must lie in (0, 1], got range [{p.min()}, {p.max()}]")
    return p


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


# --- flag rate against alpha ------------------------------------------------------------------------


@dataclass(frozen=True)
class RateTest:
    """k of n flagged against the expected rate: rate, exact binomial test p-value, CP interval."""

    k: int
    n: int
    rate: float
    expected: float
    p_value: float
    ci_low: float
    ci_high: float
    alternative: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RateTest:
        return cls(
            k=int(d["k"]),
            n=int(d["n"]),
            rate=float(d["rate"]),
            expected=float(d["expected"]),
            p_value=float(d["p_value"]),
            ci_low=float(d["ci_low"]),
            ci_high=float(d["ci_high"]),
            alternative=str(d["alternative"]),
            confidence=float(d["confidence"]),
        )


def flag_rate_test(
    n_flagged: int, n: int, alpha: float, confidence: float = 0.95, alternative: str = "greater"
) -> RateTest:
    """Exact binomial test of H0: flag probability <= alpha (alternative="greater", the default: a
    guard that flags more than calibrated) or == alpha ("two-sided"), and the Clopper-Pearson
    interval of the flag rate."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if alternative not in ("greater", "two-sided", "less"):
        raise ValueError(f"alternative must be 'greater', 'two-sided' or 'less', got {alternative!r}")
    low, high = binomial_ci(n_flagged, n, confidence)
    result = binomtest(int(n_flagged), int(n), float(alpha), alternative=alternative)
    return RateTest(
        k=int(n_flagged),
        n=int(n),
        rate=int(n_flagged) / int(n),
        expected=float(alpha),
        p_value=float(result.pvalue),
        ci_low=low,
        ci_high=high,
        alternative=alternative,
        confidence=float(confidence),
    )


# --- energies of a batch against the calibration energies ----------------------------------------


@dataclass(frozen=True)
class BatchStats:
    """One batch (or a pooled window of batches) against the calibration set."""

    n: int
    flag_rate: RateTest
    ks_statistic: float
    ks_pvalue: float
    wasserstein: float
    mean_p_value: float
    mean_energy: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flag_rate"] = self.flag_rate.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BatchStats:
        return cls(
            n=int(d["n"]),
            flag_rate=RateTest.from_dict(d["flag_rate"]),
            ks_statistic=float(d["ks_statistic"]),
            ks_pvalue=float(d["ks_pvalue"]),
            wasserstein=float(d["wasserstein"]),
            mean_p_value=float(d["mean_p_value"]),
            mean_energy=float(d["mean_energy"]),
        )


def batch_stats(
    energies: Any,
    calibration_energies: Any,
    threshold: float,
    alpha: float,
    confidence: float = 0.95,
) -> BatchStats:
    """Flag rate (energy > threshold) vs alpha, KS and Wasserstein of the energies vs the calibration
    energies, mean conformal p-value and mean energy."""
    e = _finite_1d(energies, "energies")
    cal = _finite_1d(calibration_energies, "calibration_energies")
    if math.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    n_flagged = int(np.count_nonzero(e > threshold))
    ks = ks_2samp(e, cal)
    return BatchStats(
        n=int(e.size),
        flag_rate=flag_rate_test(n_flagged, e.size, alpha, confidence),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        wasserstein=float(wasserstein_distance(e, cal)),
        mean_p_value=float(conformal_p_values(cal, e).mean()),
        mean_energy=float(e.mean()),
    )


# --- feedback ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemRate:
    """Problems among n inputs with feedback; rate and interval are None when n == 0."""

    problems: int
    n: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProblemRate:
        return cls(
            problems=int(d["problems"]),
            n=int(d["n"]),
            rate=_opt_float(d["rate"]),
            ci_low=_opt_float(d["ci_low"]),
            ci_high=_opt_float(d["ci_high"]),
        )

    @classmethod
    def of(cls, problems: int, n: int, confidence: float = 0.95) -> ProblemRate:
        if n == 0:
            return cls(problems=0, n=0, rate=None, ci_low=None, ci_high=None)
        low, high = binomial_ci(problems, n, confidence)
        return cls(problems=int(problems), n=int(n), rate=problems / n, ci_low=low, ci_high=high)


@dataclass(frozen=True)
class FeedbackStats:
    """accepted: problem rate among accepted inputs (problems the guard missed);
    flagged: problem rate among flagged inputs (flag precision). Only rows with feedback count."""

    n_rows: int
    n_with_feedback: int
    accepted: ProblemRate
    flagged: ProblemRate
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "n_with_feedback": self.n_with_feedback,
            "accepted": self.accepted.to_dict(),
            "flagged": self.flagged.to_dict(),
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeedbackStats:
        return cls(
            n_rows=int(d["n_rows"]),
            n_with_feedback=int(d["n_with_feedback"]),
            accepted=ProblemRate.from_dict(d["accepted"]),
            flagged=ProblemRate.from_dict(d["flagged"]),
            confidence=float(d["confidence"]),
        )


def feedback_counts(flagged: Any, feedback: Any) -> dict[str, int]:
    """Counts behind `feedback_stats` (summable over batches): rows, rows with feedback, and
    problems / totals among accepted and flagged rows with feedback. feedback: 1 = problem, 0 = fine,
    NaN (or None) = no feedback."""
    flags = np.asarray(flagged)
    if flags.ndim != 1 or (flags.size and flags.dtype != bool):
        raise ValueError(f"flagged must be a 1-D boolean array, got dtype {flags.dtype}, shape {flags.shape}")
    fb = np.asarray([np.nan if v is None else v for v in np.asarray(feedback, dtype=object)], dtype=np.float64)
    if fb.shape != flags.shape:
        raise ValueError(f"feedback has shape {fb.shape}, flagged has {flags.shape}")
    known = ~np.isnan(fb)
    bad = known & (fb != 0.0) & (fb != 1.0)
    if bad.any():
        raise ValueError(f"feedback must be 0, 1 or missing; rows {np.flatnonzero(bad)[:5].tolist()} are not")
    problem = known & (fb == 1.0)
    return {
        "n_rows": int(flags.size),
        "n_with_feedback": int(known.sum()),
        "accepted_n": int((known & ~flags).sum()),
        "accepted_problems": int((problem & ~flags).sum()),
        "flagged_n": int((known & flags).sum()),
        "flagged_problems": int((problem & flags).sum()),
    }


def feedback_stats_from_counts(counts: dict[str, int], confidence: float = 0.95) -> FeedbackStats:
    return FeedbackStats(
        n_rows=int(counts["n_rows"]),
        n_with_feedback=int(counts["n_with_feedback"]),
        accepted=ProblemRate.of(counts["accepted_problems"], counts["accepted_n"], confidence),
        flagged=ProblemRate.of(counts["flagged_problems"], counts["flagged_n"], confidence),
        confidence=float(confidence),
    )


def feedback_stats(flagged: Any, feedback: Any, confidence: float = 0.95) -> FeedbackStats:
    return feedback_stats_from_counts(feedback_counts(flagged, feedback), confidence)


def add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {key: int(a.get(key, 0)) + int(b.get(key, 0)) for key in set(a) | set(b)}


# --- the sequential detector ---------------------------------------------------------------------


def batch_log_likelihood_ratio(
    p_values: Any, epsilons: tuple[float, ...] = DEFAULT_EPSILONS, kappa: float = DEFAULT_KAPPA
) -> float:
    """log of mean_eps prod_i [(1 - eps) + eps * kappa * p_i ** (kappa - 1)]; 0 for an empty batch."""
    p = _p_values_1d(p_values)
    if p.size == 0:
        return 0.0
    eps = np.asarray(epsilons, dtype=np.float64)[:, None]
    g = kappa * np.power(p, kappa - 1.0)[None, :]
    per_eps = np.log1p(eps * (g - 1.0)).sum(axis=1)
    return float(logsumexp(per_eps) - math.log(eps.shape[0]))


@dataclass
class SequentialDetector:
    """CUSUM of mixture likelihood ratios over batches of conformal p-values (see the module doc).

    `update(p_values)` takes one batch and returns True when it raises an alarm; the statistic then
    restarts at 0. The expected number of batches between false alarms is >= `expected_run_length`
    when p-values are i.i.d. super-uniform. `state_dict()` is JSON-serialisable and
    `SequentialDetector.from_state(state)` resumes exactly.
    """

    expected_run_length: float = 150.0
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    kappa: float = DEFAULT_KAPPA
    statistic: float = 0.0
    n_batches: int = 0
    batches_since_alarm: int = 0
    alarms: list[int] = field(default_factory=list)

    def __post_init__(self):
        if not self.expected_run_length > 1.0:
            raise ValueError(f"expected_run_length must be > 1, got {self.expected_run_length}")
        if not 0.0 < self.kappa < 1.0:
            raise ValueError(f"kappa must be in (0, 1), got {self.kappa}")
        self.epsilons = tuple(float(e) for e in self.epsilons)
        if not self.epsilons or not all(0.0 < e <= 1.0 for e in self.epsilons):
            raise ValueError(f"epsilons must be non-empty and in (0, 1], got {self.epsilons}")

    @property
    def threshold(self) -> float:
        """Alarm when the CUSUM statistic (in nats) reaches log(expected_run_length)."""
        return math.log(self.expected_run_length)

    def update(self, p_values: Any) -> bool:
        """Add one batch (batch index = n_batches before the call); True = alarm on this batch."""
        llr = batch_log_likelihood_ratio(p_values, self.epsilons, self.kappa)
        self.statistic = max(0.0, self.statistic + llr)
        self.n_batches += 1
        self.batches_since_alarm += 1
        if self.statistic >= self.threshold:
            self.alarms.append(self.n_batches - 1)
            self.statistic = 0.0
            self.batches_since_alarm = 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "cusum-mixture-lr",
            "expected_run_length": float(self.expected_run_length),
            "epsilons": list(self.epsilons),
            "kappa": float(self.kappa),
            "statistic": float(self.statistic),
            "n_batches": int(self.n_batches),
            "batches_since_alarm": int(self.batches_since_alarm),
            "alarms": [int(a) for a in self.alarms],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SequentialDetector:
        if state.get("kind", "cusum-mixture-lr") != "cusum-mixture-lr":
            raise ValueError(f"unknown sequential detector kind {state.get('kind')!r}")
        return cls(
            expected_run_length=float(state["expected_run_length"]),
            epsilons=tuple(float(e) for e in state["epsilons"]),
            kappa=float(state["kappa"]),
            statistic=float(state["statistic"]),
            n_batches=int(state["n_batches"]),
            batches_since_alarm=int(state["batches_since_alarm"]),
            alarms=[int(a) for a in state["alarms"]],
        )


def run_length(detector: SequentialDetector, batches: Any) -> int | None:
    """Feed batches (an iterable of p-value arrays) until the first alarm; its 1-based batch count,
    or None if none raised one."""
    for i, batch in enumerate(batches, start=1):
        if detector.update(batch):
            return i
    return None


def simulate_run_lengths(
    expected_run_length: float = 150.0,
    batch_size: int = 100,
    n_runs: int = 200,
    max_batches: int = 1000,
    seed: int = 0,
    n_calibration: int | None = None,
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS,
    kappa: float = DEFAULT_KAPPA,
) -> np.ndarray:
    """Run lengths (batches to the first false alarm) of `SequentialDetector` under no shift, capped
    at max_batches (a run without alarm counts as max_batches, so their mean is a lower bound of the
    true mean run length).

    n_calibration=None draws exactly uniform p-values; an int draws each run's p-values as conformal
    p-values of N(0, 1) energies against that run's own N(0, 1) calibration set of that size (the
    calibration-conditional case the monitor really meets). All runs advance together (vectorised);
    the result equals feeding each run's batches to its own `SequentialDetector`.
    """
    SequentialDetector(expected_run_length, epsilons, kappa)  # validates the settings
    rng = np.random.default_rng(seed)
    eps = np.asarray(epsilons, dtype=np.float64)[None, :, None]
    threshold = math.log(expected_run_length)
    cal = None if n_calibration is None else np.sort(rng.standard_normal((n_runs, n_calibration)), axis=1)
    statistic = np.zeros(n_runs)
    lengths = np.full(n_runs, max_batches, dtype=np.int64)
    alive = np.ones(n_runs, dtype=bool)
    for b in range(max_batches):
        if cal is None:
            p = np.maximum(rng.uniform(size=(n_runs, batch_size)), np.finfo(float).tiny)
        else:
            e = rng.standard_normal((n_runs, batch_size))
            n_at_least = np.stack([n_calibration - np.searchsorted(cal[r], e[r]) for r in range(n_runs)])
            p = (1.0 + n_at_least) / (n_calibration + 1.0)
        g = kappa * np.power(p, kappa - 1.0)[:, None, :]
        llr = logsumexp(np.log1p(eps * (g - 1.0)).sum(axis=2), axis=1) - math.log(eps.shape[1])
        statistic = np.maximum(0.0, statistic + llr)
        fired = alive & (statistic >= threshold)
        lengths[fired] = b + 1
        alive &= ~fired
        if not alive.any():
            break
    return lengths


# --- the post-launch report section ----------------------------------------------------------------


@dataclass(frozen=True)
class BatchRecord:
    """One processed traffic batch: where it came from, its statistics, the sliding window ending at
    it, the detector's statistic after it, and whether it raised an alarm."""

    index: int
    source: str
    stats: BatchStats
    window: BatchStats
    window_batches: int
    feedback: FeedbackStats
    sequential_statistic: float
    alarm: bool
    first_timestamp: str | None = None
    last_timestamp: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "source": self.source,
            "stats": self.stats.to_dict(),
            "window": self.window.to_dict(),
            "window_batches": self.window_batches,
            "feedback": self.feedback.to_dict(),
            "sequential_statistic": self.sequential_statistic,
            "alarm": self.alarm,
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BatchRecord:
        return cls(
            index=int(d["index"]),
            source=str(d["source"]),
            stats=BatchStats.from_dict(d["stats"]),
            window=BatchStats.from_dict(d["window"]),
            window_batches=int(d["window_batches"]),
            feedback=FeedbackStats.from_dict(d["feedback"]),
            sequential_statistic=float(d["sequential_statistic"]),
            alarm=bool(d["alarm"]),
            first_timestamp=d.get("first_timestamp"),
            last_timestamp=d.get("last_timestamp"),
        )


@dataclass(frozen=True)
class PostLaunchSummary:
    """The post-launch section of a model version's evaluation record: totals over every batch
    processed so far, the latest sliding window, the sequential detector, and this pass's batches."""

    model_name: str
    model_version: str
    alpha: float
    threshold: float
    n_calibration: int
    n_batches: int
    n_inputs: int
    overall_flag_rate: RateTest | None
    overall_feedback: FeedbackStats
    expected_run_length: float
    sequential: dict[str, Any]
    alarms: list[int]
    new_batches: list[BatchRecord]
    mlflow_run_id: str | None = None
    conventions: str = (
        "energy: higher = more OOD; flagged = energy > threshold; p-value = (1 + #cal >= e) / (n + 1); "
        "problem rates use only rows with feedback (1 = problem)"
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "alpha": self.alpha,
            "threshold": self.threshold if math.isfinite(self.threshold) else repr(self.threshold),
            "n_calibration": self.n_calibration,
            "n_batches": self.n_batches,
            "n_inputs": self.n_inputs,
            "overall_flag_rate": None if self.overall_flag_rate is None else self.overall_flag_rate.to_dict(),
            "overall_feedback": self.overall_feedback.to_dict(),
            "expected_run_length": self.expected_run_length,
            "sequential": dict(self.sequential),
            "alarms": list(self.alarms),
            "new_batches": [b.to_dict() for b in self.new_batches],
            "mlflow_run_id": self.mlflow_run_id,
            "conventions": self.conventions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PostLaunchSummary:
        return cls(
            model_name=str(d["model_name"]),
            model_version=str(d["model_version"]),
            alpha=float(d["alpha"]),
            threshold=float(d["threshold"]),
            n_calibration=int(d["n_calibration"]),
            n_batches=int(d["n_batches"]),
            n_inputs=int(d["n_inputs"]),
            overall_flag_rate=None if d["overall_flag_rate"] is None else RateTest.from_dict(d["overall_flag_rate"]),
            overall_feedback=FeedbackStats.from_dict(d["overall_feedback"]),
            expected_run_length=float(d["expected_run_length"]),
            sequential=dict(d["sequential"]),
            alarms=[int(a) for a in d["alarms"]],
            new_batches=[BatchRecord.from_dict(b) for b in d["new_batches"]],
            mlflow_run_id=d.get("mlflow_run_id"),
            conventions=str(d.get("conventions", cls.conventions)),
        )
