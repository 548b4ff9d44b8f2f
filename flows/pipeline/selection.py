"""The selection stage: train every candidate detector of the search space, score it on validation data
only, choose one by a written rule, and refit the winner on all the training rows.

Validation schemes (the first that applies):
- `ood_val+held_out_classes`: OOD validation sets and labels. The two estimates below are averaged,
  each weighing half: a small OOD set shows one kind of problem, held-out classes another.
- `ood_val`: OOD validation sets were given. Candidates are fit on a seeded share of the training rows;
  the rest of the training rows are the in-distribution validation rows, the OOD validation sets the
  positives.
- `held_out_classes`: labels but no OOD examples. A seeded share of the classes is held out as
  pseudo-unknown: candidates are fit on the other classes (minus a share of their rows, kept as
  in-distribution validation rows) and must flag the held-out classes' rows. Averaged over a few
  seeded splits.
- `held_out_clusters`: no labels either. The same with k-means clusters of the training rows as
  pseudo-classes (stated synthetic scheme: near-OOD that looks like a missing topic).
- `known_problems+<one of the above>`: confirmed problems from feedback (at least
  MIN_KNOWN_PROBLEMS). They are too few to spend half on validation alone, so they are cross-fitted:
  two folds, each validating on one seeded half of them while margin-style candidates train against
  the other half (plus any known outliers); the scheme above is averaged in as the second estimate,
  each weighing half. The refit trains against all of them.

Rule (also in the search space file and the report): highest mean validation AUROC; candidates within
`tie_tolerance` of the best are compared by mean validation FPR95 (lower wins; FPR95s within the
optional `fpr_tie_tolerance`, 0 by default, count as equal), then by scoring cost.

Compositions: after the members are scored, the best label-free and the best labelled candidate, and
every pair among the three best candidates, are summed with weights w and 1 - w, each divided by its
in-distribution validation standard deviation (so the weight means the same for energies of any
scale); each pair and weight is a candidate of its own, scored on the same folds.
Every function here is plain (no Prefect); the flow maps `evaluate_candidate` over the candidates.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ebm_core import (
    ComposedDetector,
    ContrastiveHeadConfig,
    ContrastiveHeadDetector,
    Detector,
    DetectorConfig,
    EnergyDetector,
    KernelDensityDetector,
)
from evaluation.metrics import auroc, fpr_at_tpr

SEARCH_SPACE_PATH = Path(__file__).with_name("configs") / "search_space.yaml"
SCHEMES = ("ood_val+held_out_classes", "ood_val", "held_out_classes", "held_out_clusters")
KINDS = ("energy", "kernel_density", "contrastive_head")
FAMILIES = ("label_free", "labelled")


# ---- the search space -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CandidateSpec:
    """One candidate: a detector kind and its settings. `family` says whether it uses labels."""

    name: str
    kind: str
    family: str
    params: dict = field(default_factory=dict, hash=False)
    score_cost: float = 1.0  # relative cost of scoring one row (tie-breaker)
    group: str | None = None  # variants of one detector (e.g. kernel widths): only the best is composed

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"candidate {self.name!r}: unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.family not in FAMILIES:
            raise ValueError(f"candidate {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}")

    @property
    def needs_labels(self) -> bool:
        return self.family == "labelled"

    def build(self, step_scale: float = 1.0) -> Detector:
        """An unfitted detector; `step_scale` shrinks or grows every training run (the budget)."""
        if self.kind == "kernel_density":
            return KernelDensityDetector(**self.params)
        if self.kind == "contrastive_head":
            config = ContrastiveHeadConfig.from_dict(self.params)
            return ContrastiveHeadDetector(replace(config, train=_scaled(config.train, step_scale)))
        config = DetectorConfig.from_dict(self.params)
        return EnergyDetector(config.with_training_steps(max(1, round(config.train.n_steps * step_scale))))

    def fit_params(self, seed: int, callbacks: tuple = (), outliers: np.ndarray | None = None) -> dict[str, Any]:
        """Keyword arguments of this kind's `fit` (a kernel density draws nothing and trains nothing);
        known-bad rows go to energy objectives that train on them, the same in validation and refit."""
        if self.kind == "kernel_density":
            return {}
        params: dict[str, Any] = {"seed": seed, "callbacks": callbacks}
        if outliers is not None and self.kind == "energy" and DetectorConfig.from_dict(self.params).objective.uses_outliers:
            params["outliers"] = outliers
        return params

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchSpace:
    candidates: tuple[CandidateSpec, ...]
    composition_weights: tuple[float, ...] = (0.25, 0.5, 0.75)
    id_validation_fraction: float = 0.2
    held_out_fraction: float = 0.2
    n_splits: int = 3
    n_splits_with_ood_val: int = 2  # held-out-class splits beside an OOD validation set
    n_clusters: int = 10
    tie_tolerance: float = 0.002
    fpr_tie_tolerance: float = 0.0
    budgets: dict = field(default_factory=lambda: {"default": 1.0}, hash=False)
    rule: str = ""

    def __post_init__(self):
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError(f"candidate names must be unique, got {names}")
        if not self.candidates:
            raise ValueError("the search space has no candidates")
        for w in self.composition_weights:
            if not 0.0 < w < 1.0:
                raise ValueError(f"composition weights must be in (0, 1), got {w}")
        for name in ("id_validation_fraction", "held_out_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.n_splits < 1 or self.n_clusters < 3:
            raise ValueError(f"need n_splits >= 1 and n_clusters >= 3, got {self.n_splits} and {self.n_clusters}")
        if not (self.tie_tolerance >= 0.0 and self.fpr_tie_tolerance >= 0.0):
            raise ValueError(f"tie tolerances must be >= 0, got {self.tie_tolerance}, {self.fpr_tie_tolerance}")
        for name, scale in self.budgets.items():
            if not (isinstance(scale, (int, float)) and scale > 0):
                raise ValueError(f"budget {name!r} must be a positive step multiplier, got {scale!r}")

    def step_scale(self, budget: str) -> float:
        if budget not in self.budgets:
            raise ValueError(f"unknown selection budget {budget!r}; the search space defines {', '.join(self.budgets)}")
        return float(self.budgets[budget])

    def usable(self, has_labels: bool) -> tuple[CandidateSpec, ...]:
        return tuple(c for c in self.candidates if has_labels or not c.needs_labels)

    @classmethod
    def from_yaml(cls, path: str | Path = SEARCH_SPACE_PATH) -> "SearchSpace":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from error
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a search space is a mapping (rule, validation, candidates, ...), got a {type(raw).__name__}")
        try:
            candidates = tuple(CandidateSpec(**c) for c in raw.pop("candidates", []))
            validation = raw.pop("validation", {}) or {}
            return cls(
                candidates=candidates,
                composition_weights=tuple(raw.pop("composition_weights", (0.25, 0.5, 0.75))),
                budgets=dict(raw.pop("budgets", {"default": 1.0})),
                rule=str(raw.pop("rule", "")),
                tie_tolerance=float(raw.pop("tie_tolerance", 0.002)),
                fpr_tie_tolerance=float(raw.pop("fpr_tie_tolerance", 0.0)),
                **_known_keys(validation, VALIDATION_KEYS, "validation"),
                **_known_keys(raw, (), "search space"),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error


VALIDATION_KEYS = ("id_validation_fraction", "held_out_fraction", "n_splits", "n_splits_with_ood_val", "n_clusters")


def _known_keys(raw: dict, known: tuple[str, ...], where: str) -> dict:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"unknown {where} key(s) {unknown}; known: {', '.join(known) or 'none left'}")
    return raw


def _scaled(train_config, step_scale: float):
    return replace(train_config, n_steps=max(1, round(train_config.n_steps * step_scale)))


# ---- validation folds -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fold:
    """Row indices into the training rows: fit on `fit_rows`, in-distribution validation rows `id_rows`;
    the positives are `ood_rows` of the training rows (held-out classes) and/or the external OOD
    validation rows (`use_external_ood`)."""

    fit_rows: np.ndarray
    id_rows: np.ndarray
    ood_rows: np.ndarray
    use_external_ood: bool
    held_out: tuple = ()
    scheme: str = ""  # which validation scheme cut this fold
    known_problem_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # validated on here


KNOWN_PROBLEMS_SCHEME = "known_problems"
MIN_KNOWN_PROBLEMS = 20  # 10 per fold; fewer only train


def known_problem_folds(x: np.ndarray, n_problems: int, space: "SearchSpace", seed: int) -> list[Fold]:
    """Two folds over `n_problems` confirmed problems: fold j validates on half j (a seeded split) and
    its margin-style candidates train against the other half; the in-distribution rows are split as
    in the `ood_val` scheme."""
    if n_problems < MIN_KNOWN_PROBLEMS:
        raise ValueError(f"cross-fitting needs at least {MIN_KNOWN_PROBLEMS} known problems, got {n_problems}")
    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(x.shape[0])
    n_id = max(1, int(round(space.id_validation_fraction * x.shape[0])))
    fit_rows, id_rows = np.sort(order[n_id:]), np.sort(order[:n_id])
    halves = np.array_split(rng.permutation(n_problems), 2)
    return [
        Fold(fit_rows, id_rows, np.zeros(0, dtype=int), False, (), KNOWN_PROBLEMS_SCHEME, np.sort(half))
        for half in halves
    ]


def fold_outliers(fold: Fold, outliers: np.ndarray | None, known_problems: np.ndarray | None) -> np.ndarray | None:
    """What margin-style candidates train against on `fold`: the known outliers and every known
    problem the fold does not validate on."""
    parts = [outliers] if outliers is not None and len(outliers) else []
    if known_problems is not None and len(known_problems):
        keep = np.ones(len(known_problems), dtype=bool)
        keep[fold.known_problem_rows] = False
        parts.append(known_problems[keep])
    return np.concatenate(parts) if parts else None


def validation_scheme(has_labels: bool, has_ood_val: bool) -> str:
    """OOD validation sets are few examples of one kind of problem: with labels, held-out classes
    are averaged in as a second, independent estimate (each scheme weighs half)."""
    if has_ood_val:
        return "ood_val+held_out_classes" if has_labels else "ood_val"
    return "held_out_classes" if has_labels else "held_out_clusters"


def make_folds(
    x: np.ndarray, y: np.ndarray | None, scheme: str, space: SearchSpace, seed: int
) -> tuple[list[Fold], np.ndarray | None]:
    """The folds of `scheme`, and the (pseudo-)labels the folds were cut by (k-means clusters for
    `held_out_clusters`, else y)."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    if scheme == "ood_val+held_out_classes":
        ood_folds, _ = make_folds(x, y, "ood_val", space, seed)
        if len(np.unique(y)) < 3:  # too few classes to hold any out: the OOD validation set alone
            return ood_folds, y
        class_space = replace(space, n_splits=space.n_splits_with_ood_val)
        class_folds, _ = make_folds(x, y, "held_out_classes", class_space, seed)
        return ood_folds + class_folds, y
    if scheme == "ood_val":
        order = rng.permutation(n)
        n_id = max(1, int(round(space.id_validation_fraction * n)))
        return [Fold(np.sort(order[n_id:]), np.sort(order[:n_id]), np.zeros(0, dtype=int), True, (), "ood_val")], y
    if scheme == "held_out_clusters":
        groups = cluster_labels(x, space.n_clusters, seed)
    elif scheme == "held_out_classes":
        if y is None:
            raise ValueError("held-out classes need labels")
        groups = np.asarray(y)
    else:
        raise ValueError(f"unknown validation scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    classes = np.unique(groups)
    if len(classes) < 3:
        raise ValueError(
            f"the {scheme.replace('_', ' ')} scheme needs at least 3 classes, got {len(classes)}: give an OOD "
            "validation set (--ood-val-data) instead"
        )
    n_out = min(len(classes) - 2, max(1, int(round(space.held_out_fraction * len(classes)))))
    folds = []
    # Rotate through a seeded order of the classes, so the splits hold out different classes.
    order = rng.permutation(classes)
    for split in range(space.n_splits):
        held_out = np.roll(order, -split * n_out)[:n_out]
        out_mask = np.isin(groups, held_out)
        kept = rng.permutation(np.flatnonzero(~out_mask))
        n_id = max(1, int(round(space.id_validation_fraction * len(kept))))
        folds.append(
            Fold(
                fit_rows=np.sort(kept[n_id:]),
                id_rows=np.sort(kept[:n_id]),
                ood_rows=np.flatnonzero(out_mask),
                use_external_ood=False,
                held_out=tuple(_plain(c) for c in held_out),
                scheme=scheme,
            )
        )
    return folds, groups


def cluster_labels(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means pseudo-classes on unit-normalised rows (directions, as the embeddings encode meaning)."""
    from sklearn.cluster import KMeans

    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n_clusters = int(min(n_clusters, max(3, x.shape[0] // 20)))
    return KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit_predict(unit)


# ---- one candidate on every fold ----------------------------------------------------------------------
@dataclass(frozen=True)
class CandidateResult:
    """Validation figures of one candidate: per fold and their means. Scores are kept (in-distribution
    and OOD validation rows, per fold) so compositions can be evaluated without refitting."""

    name: str
    family: str
    kind: str
    fold_auroc: tuple[float, ...]
    fold_fpr95: tuple[float, ...]
    fit_seconds: float
    score_us_per_row: float
    score_cost: float
    id_scores: tuple[tuple[float, ...], ...] = ()
    ood_scores: tuple[tuple[float, ...], ...] = ()
    error: str | None = None
    members: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    group: str | None = None
    fold_schemes: tuple[str, ...] = ()

    @property
    def auroc(self) -> float:
        return _scheme_mean(self.fold_auroc, self.fold_schemes)

    @property
    def fpr95(self) -> float:
        return _scheme_mean(self.fold_fpr95, self.fold_schemes)

    def by_scheme(self, values: tuple[float, ...]) -> dict[str, float | None]:
        schemes = self.fold_schemes or ("",) * len(values)
        return {scheme: _round(float(np.mean([v for v, s in zip(values, schemes) if s == scheme])))
                for scheme in dict.fromkeys(schemes)}

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.fold_auroc)

    def summary(self) -> dict[str, Any]:
        """What the report and MLflow keep (no per-row scores)."""
        return {
            "name": self.name,
            "family": self.family,
            "kind": self.kind,
            "val_auroc": _round(self.auroc),
            "val_fpr95": _round(self.fpr95),
            "fold_auroc": [_round(v) for v in self.fold_auroc],
            "fold_fpr95": [_round(v) for v in self.fold_fpr95],
            "fold_schemes": list(self.fold_schemes),
            "val_auroc_by_scheme": self.by_scheme(self.fold_auroc) if self.fold_auroc else {},
            "fit_seconds": round(self.fit_seconds, 3),
            "score_us_per_row": round(self.score_us_per_row, 3),
            "error": self.error,
            "members": list(self.members),
            "weights": [float(w) for w in self.weights],
        }


def evaluate_candidate(
    spec: CandidateSpec, folds_path: str | Path, step_scale: float = 1.0, seed: int = 0
) -> CandidateResult:
    """Fit `spec` on each fold's fit rows and score its validation rows. A candidate that fails (e.g.
    diverges) is recorded with its error, never silently dropped or replaced."""
    data = load_folds(folds_path)
    x, y, external_ood, folds = data["x"], data["y"], data["ood_val"], data["folds"]
    known_problems = data["known_problems"]
    fold_auroc, fold_fpr95, id_scores, ood_scores = [], [], [], []
    fit_seconds = score_seconds = 0.0
    n_scored = 0
    try:
        for i, fold in enumerate(folds):
            detector = spec.build(step_scale)
            started = time.perf_counter()
            labels = y[fold.fit_rows] if (y is not None and spec.family == "labelled") else None
            outliers = fold_outliers(fold, data["outliers"], known_problems)
            detector.fit(x[fold.fit_rows], labels, **spec.fit_params(seed + i, outliers=outliers))
            fit_seconds += time.perf_counter() - started
            started = time.perf_counter()
            s_id = detector.score(x[fold.id_rows])
            parts = []
            if len(fold.ood_rows):
                parts.append(detector.score(x[fold.ood_rows]))
            if fold.use_external_ood and external_ood is not None:
                parts.append(detector.score(external_ood))
            if len(fold.known_problem_rows):
                parts.append(detector.score(known_problems[fold.known_problem_rows]))
            s_ood = np.concatenate(parts)
            score_seconds += time.perf_counter() - started
            n_scored += len(s_id) + len(s_ood)
            fold_auroc.append(auroc(s_id, s_ood))
            fold_fpr95.append(fpr_at_tpr(s_id, s_ood))
            id_scores.append(tuple(s_id.tolist()))
            ood_scores.append(tuple(s_ood.tolist()))
    except Exception as error:  # noqa: BLE001 - a failed candidate is a result, the others go on
        return CandidateResult(
            spec.name, spec.family, spec.kind, (), (), fit_seconds, 0.0, spec.score_cost,
            error=f"{type(error).__name__}: {error}",
        )
    return CandidateResult(
        name=spec.name,
        family=spec.family,
        kind=spec.kind,
        group=spec.group,
        fold_schemes=tuple(f.scheme for f in folds),
        fold_auroc=tuple(fold_auroc),
        fold_fpr95=tuple(fold_fpr95),
        fit_seconds=fit_seconds,
        score_us_per_row=1e6 * score_seconds / max(n_scored, 1),
        score_cost=spec.score_cost,
        id_scores=tuple(id_scores),
        ood_scores=tuple(ood_scores),
    )


def validation_baselines(folds_path: str | Path) -> dict[str, dict[str, float]]:
    """The report's baselines (evaluation.baselines) on the same folds: mean validation AUROC / FPR95."""
    from evaluation.baselines import run_baselines

    data = load_folds(folds_path)
    x, y, external_ood = data["x"], data["y"], data["ood_val"]
    per_baseline: dict[str, list[tuple[float, float]]] = {}
    schemes = tuple(fold.scheme for fold in data["folds"])
    for fold in data["folds"]:
        parts = [x[fold.ood_rows]] if len(fold.ood_rows) else []
        if fold.use_external_ood and external_ood is not None:
            parts.append(external_ood)
        if len(fold.known_problem_rows):
            parts.append(data["known_problems"][fold.known_problem_rows])
        fit_labels = y[fold.fit_rows] if y is not None else None
        if fit_labels is not None and len(np.unique(fit_labels)) < 2:
            fit_labels = None  # e.g. a held-out-cluster fold of two-class data: label-free baselines only
        try:
            results = run_baselines(
                x[fold.fit_rows], fit_labels, {"id": x[fold.id_rows], "ood": np.concatenate(parts)}, "id", ["ood"]
            )
        except Exception as error:  # noqa: BLE001 - baselines are context; the selection goes on without them
            print(f"validation baselines skipped on a fold: {type(error).__name__}: {error}")
            continue
        for name, metrics in results.metrics.items():
            per_baseline.setdefault(name, []).append((metrics["ood"].auroc, metrics["ood"].fpr95))
    return {
        name: {
            "val_auroc": _round(_scheme_mean(tuple(a for a, _ in v), schemes)),
            "val_fpr95": _round(_scheme_mean(tuple(f for _, f in v), schemes)),
        }
        for name, v in per_baseline.items()
        if len(v) == len(schemes)
    }


def baseline_warning(winner: CandidateResult, baselines: dict[str, dict[str, float]]) -> tuple[int, str | None]:
    """The winner's AUROC rank among the baselines on validation, and a plain warning when one beats it."""
    ours = _round(winner.auroc)  # the baselines' figures are rounded the same way
    better = {name: m["val_auroc"] for name, m in baselines.items() if m["val_auroc"] is not None and m["val_auroc"] > ours}
    if not better:
        return 1, None
    names = ", ".join(f"{name} ({value:.4f})" for name, value in sorted(better.items(), key=lambda kv: -kv[1]))
    return 1 + len(better), (
        f"on validation the baseline(s) {names} beat the chosen detector {winner.name} ({winner.auroc:.4f} AUROC); "
        "the baselines cannot be registered, but consider more candidates or more training data"
    )


def compositions(results: list[CandidateResult], weights: tuple[float, ...], top: int = 3) -> list[CandidateResult]:
    """Weighted sums of pairs of candidates: the best label-free with the best labelled one, and every
    pair among the `top` candidates by validation AUROC. Each member is divided by its
    in-distribution validation standard deviation (mean over folds), so a weight means the same for
    energies of any scale; w weighs the first member, 1 - w the second."""
    singles, seen_groups = [], set()
    for r in sorted((r for r in results if r.ok and not r.members), key=lambda r: -r.auroc):
        if r.group is None or r.group not in seen_groups:
            singles.append(r)
            seen_groups.add(r.group)
    pairs: list[tuple[CandidateResult, CandidateResult]] = []
    best = {family: next((r for r in singles if r.family == family), None) for family in FAMILIES}
    if best["label_free"] is not None and best["labelled"] is not None:
        pairs.append((best["label_free"], best["labelled"]))
    leaders = singles[:top]
    for i, first in enumerate(leaders):
        for second in leaders[i + 1 :]:
            if {first.name, second.name} not in [{a.name, b.name} for a, b in pairs]:
                pairs.append((first, second))
    return [_composed(first, second, w) for first, second in pairs for w in weights]


def _composed(first: CandidateResult, second: CandidateResult, w: float) -> CandidateResult:
    sd_first = float(np.mean([np.std(s) for s in first.id_scores])) or 1.0
    sd_second = float(np.mean([np.std(s) for s in second.id_scores])) or 1.0
    member_weights = (w / sd_first, (1.0 - w) / sd_second)
    fold_auroc, fold_fpr95 = [], []
    for k in range(len(first.id_scores)):
        s_id = member_weights[0] * np.asarray(first.id_scores[k]) + member_weights[1] * np.asarray(second.id_scores[k])
        s_ood = member_weights[0] * np.asarray(first.ood_scores[k]) + member_weights[1] * np.asarray(second.ood_scores[k])
        fold_auroc.append(auroc(s_id, s_ood))
        fold_fpr95.append(fpr_at_tpr(s_id, s_ood))
    return CandidateResult(
        name=f"composition({first.name}*{w:g} + {second.name}*{1 - w:g})",
        family="labelled" if "labelled" in (first.family, second.family) else "label_free",
        kind="composed",
        fold_auroc=tuple(fold_auroc),
        fold_fpr95=tuple(fold_fpr95),
        fit_seconds=first.fit_seconds + second.fit_seconds,
        score_us_per_row=first.score_us_per_row + second.score_us_per_row,
        score_cost=first.score_cost + second.score_cost,
        members=(first.name, second.name),
        weights=member_weights,
        fold_schemes=first.fold_schemes,
    )


def choose(results: list[CandidateResult], tie_tolerance: float, fpr_tie_tolerance: float = 0.0) -> CandidateResult:
    """Highest mean validation AUROC; within `tie_tolerance` of it, the lowest FPR95 (FPR95s within
    `fpr_tie_tolerance` of the lowest count as equal), then the cheapest to score, then the higher AUROC."""
    usable = [r for r in results if r.ok and math.isfinite(r.auroc)]
    if not usable:
        errors = "; ".join(f"{r.name}: {r.error}" for r in results if r.error)
        raise RuntimeError(f"no candidate could be trained and scored ({errors or 'no candidates'})")
    best_auroc = max(r.auroc for r in usable)
    tied = [r for r in usable if r.auroc >= best_auroc - tie_tolerance]
    best_fpr = min(r.fpr95 for r in tied)
    tied = [r for r in tied if r.fpr95 <= best_fpr + fpr_tie_tolerance]
    return min(tied, key=lambda r: (r.score_cost, -r.auroc))


# ---- the winner, refit ---------------------------------------------------------------------------------
def refit_winner(
    winner: CandidateResult,
    space: SearchSpace,
    x: np.ndarray,
    y: np.ndarray | None,
    step_scale: float,
    seed: int,
    feature_names: list[str] | None = None,
    outliers: np.ndarray | None = None,
    callbacks: tuple = (),
) -> Detector:
    """Fit the chosen candidate (or each member of the chosen composition) on all the training rows."""
    specs = {c.name: c for c in space.candidates}

    def fit(spec: CandidateSpec) -> Detector:
        detector = spec.build(step_scale)
        labels = y if spec.family == "labelled" else None
        kwargs: dict[str, Any] = {"feature_names": feature_names, **spec.fit_params(seed, callbacks, outliers)}
        return detector.fit(x, labels, **kwargs)

    if winner.members:
        return ComposedDetector([(w, fit(specs[name])) for w, name in zip(winner.weights, winner.members)])
    return fit(specs[winner.name])


# ---- the stage's record --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SelectionOutcome:
    scheme: str
    rule: str
    winner: str
    candidates: tuple[dict, ...]
    n_folds: int
    held_out: tuple[tuple, ...]
    budget: str
    seconds: float
    validation_baselines: dict = field(default_factory=dict, hash=False)
    validation_rank: int | None = None
    warning: str | None = None

    def to_dict(self) -> dict:
        return {
            "validation_baselines": dict(self.validation_baselines),
            "validation_rank": self.validation_rank,
            "warning": self.warning,
            "scheme": self.scheme,
            "rule": self.rule,
            "winner": self.winner,
            "candidates": [dict(c) for c in self.candidates],
            "n_folds": self.n_folds,
            "held_out": [list(h) for h in self.held_out],
            "budget": self.budget,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SelectionOutcome":
        return cls(
            scheme=d["scheme"],
            rule=d["rule"],
            winner=d["winner"],
            candidates=tuple(d["candidates"]),
            n_folds=int(d["n_folds"]),
            held_out=tuple(tuple(h) for h in d["held_out"]),
            budget=d["budget"],
            seconds=float(d["seconds"]),
            validation_baselines=dict(d.get("validation_baselines") or {}),
            validation_rank=d.get("validation_rank"),
            warning=d.get("warning"),
        )

    def write_json(self, path: str | Path) -> Path:
        from evaluation.files import write_text_atomic

        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def read_json(cls, path: str | Path) -> "SelectionOutcome":
        return cls.from_dict(json.loads(Path(path).read_text()))


# ---- folds on disk: tasks pass paths, not arrays ----------------------------------------------------------
def save_folds(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray | None,
    ood_val: np.ndarray | None,
    folds: list[Fold],
    outliers: np.ndarray | None = None,
    known_problems: np.ndarray | None = None,
) -> Path:
    """x, labels, OOD validation rows, known-bad training rows (outliers, never validation data), the
    cross-fitted known problems, and each fold's row indices and held-out classes."""
    arrays: dict[str, np.ndarray] = {"x": np.asarray(x, dtype=np.float64)}
    if outliers is not None:
        arrays["outliers"] = np.asarray(outliers, dtype=np.float64)
    if known_problems is not None:
        arrays["known_problems"] = np.asarray(known_problems, dtype=np.float64)
    if y is not None:
        arrays["y"] = np.asarray([str(v) for v in y])
    if ood_val is not None:
        arrays["ood_val"] = np.asarray(ood_val, dtype=np.float64)
    for i, fold in enumerate(folds):
        arrays[f"fold{i}.fit"] = fold.fit_rows
        arrays[f"fold{i}.id"] = fold.id_rows
        arrays[f"fold{i}.ood"] = fold.ood_rows
        arrays[f"fold{i}.external"] = np.asarray(fold.use_external_ood)
        arrays[f"fold{i}.held_out"] = np.asarray([str(c) for c in fold.held_out])
        arrays[f"fold{i}.scheme"] = np.asarray(fold.scheme)
        arrays[f"fold{i}.known_problems"] = np.asarray(fold.known_problem_rows, dtype=int)
    path = Path(path)
    with open(path, "wb") as handle:  # np.savez would add ".npz" to a bare path
        np.savez(handle, **arrays)  # plain arrays: loaded with allow_pickle=False
    return path


def load_folds(path: str | Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        folds, i = [], 0
        while f"fold{i}.fit" in data:
            held_out = tuple(data[f"fold{i}.held_out"].tolist()) if f"fold{i}.held_out" in data else ()
            scheme = str(data[f"fold{i}.scheme"]) if f"fold{i}.scheme" in data else ""
            known = data[f"fold{i}.known_problems"] if f"fold{i}.known_problems" in data else np.zeros(0, dtype=int)
            folds.append(
                Fold(
                    data[f"fold{i}.fit"], data[f"fold{i}.id"], data[f"fold{i}.ood"], bool(data[f"fold{i}.external"]),
                    held_out, scheme, known,
                )
            )
            i += 1
        return {
            "x": data["x"],
            "y": data["y"] if "y" in data else None,
            "ood_val": data["ood_val"] if "ood_val" in data else None,
            "outliers": data["outliers"] if "outliers" in data else None,
            "known_problems": data["known_problems"] if "known_problems" in data else None,
            "folds": folds,
        }


def _scheme_mean(values: tuple[float, ...], schemes: tuple[str, ...]) -> float:
    """Mean over schemes of the mean over each scheme's folds (each scheme weighs the same)."""
    if not values:
        return float("nan")
    schemes = schemes or ("",) * len(values)
    per_scheme = [np.mean([v for v, s in zip(values, schemes) if s == scheme]) for scheme in dict.fromkeys(schemes)]
    return float(np.mean(per_scheme))


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _round(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None
