"""Baseline OOD scorers on the same features as the EBM, for context in the evaluation report.

Every baseline follows the scikit-learn fitted-state style: the constructor only stores arguments,
`fit(x_train, y_train=None)` returns self and sets attributes ending in `_`, and `score(x)` returns
one score per row with the project's sign: HIGHER = more OOD. Scoring before `fit` raises
`ebm_core.errors.NotFittedError`.

| name               | needs labels | score                                                            |
| ------------------ | ------------ | ---------------------------------------------------------------- |
| `max_softmax`      | yes          | -max softmax probability of a logistic regression                |
| `logit_energy`     | yes          | -logsumexp(logits) of the same logistic regression               |
| `mahalanobis`      | no           | min squared Mahalanobis distance to a class mean (shared          |
|                    |              | covariance); one Gaussian when there are no labels               |
| `cosine_knn`       | no           | 1 - cosine similarity to the k-th most similar training row      |
| `gaussian_density` | no           | -log density of one full-covariance Gaussian (shrunk covariance) |

Without labels, the label-needing baselines are skipped (and reported as skipped), never faked.

A caveat worth knowing when reading the numbers: the two classifier scores only see how confident
the classifier is, and a linear classifier grows MORE confident far away from the training data,
so they miss inputs that are far out along a class direction (Hein et al., CVPR 2019). They catch
inputs that sit between the classes. Cosine k-NN ignores the norm, so it misses the same inputs.
The Mahalanobis and Gaussian density baselines catch far-away inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.linalg import cho_factor, solve_triangular
from scipy.special import logsumexp, softmax
from sklearn.covariance import LedoitWolf, ShrunkCovariance
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ebm_core.errors import NonFiniteError, NotFittedError, ShapeError
from evaluation.metrics import OODMetrics, ood_metrics


class OODBaseline:
    """Common checks. Subclasses set `name`, `requires_labels`, and implement `fit` / `_score`."""

    name: ClassVar[str]
    requires_labels: ClassVar[bool] = False

    def fit(self, x_train: Any, y_train: Any = None) -> OODBaseline:
        raise NotImplementedError

    def score(self, x: Any) -> np.ndarray:
        """One OOD score per row of x (N, D) -> (N,); higher = more OOD."""
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(x_train, y_train) first")
        return self._score(_check_features(x, "x", self.n_features_in_))

    def _score(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in vars(self).items() if not key.endswith("_"))
        return f"{type(self).__name__}({arguments})"


# --- classifier-based (need labels) --------------------------------------------------------------


class _LogisticBaseline(OODBaseline):
    """A multinomial logistic regression (on standardised features by default) and its logits."""

    requires_labels = True

    def __init__(self, C: float = 1.0, max_iter: int = 1000, standardize: bool = True):
        self.C = C
        self.max_iter = max_iter
        self.standardize = standardize

    def fit(self, x_train: Any, y_train: Any = None) -> _LogisticBaseline:
        x_train = _check_features(x_train, "x_train")
        labels = _check_labels(y_train, x_train.shape[0], type(self).__name__)
        if np.unique(labels).size < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes in y_train")
        classifier = LogisticRegression(C=self.C, max_iter=self.max_iter)
        pipeline = make_pipeline(StandardScaler(), classifier) if self.standardize else make_pipeline(classifier)
        self._set_fitted(pipeline.fit(x_train, labels), x_train.shape[1])
        return self

    def _set_fitted(self, pipeline: Pipeline, n_features: int) -> None:
        self.classifier_ = pipeline
        self.classes_ = pipeline.classes_
        self.n_features_in_ = n_features

    def _classifier_settings(self) -> tuple[float, int, bool]:
        """Two logistic baselines with equal settings fitted on the same data are the same model."""
        return (self.C, self.max_iter, self.standardize)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(N, n_classes) logits. For two classes sklearn returns one margin z = logit_1 - logit_0;
        the symmetric pair (-z/2, z/2) is what an L2-penalised two-class softmax would learn, so
        the energy is not shifted by an arbitrary choice of reference class."""
        margins = self.classifier_.decision_function(x)
        if margins.ndim == 1:
            return np.stack([-margins / 2.0, margins / 2.0], axis=1)
        return margins


class MaxSoftmaxBaseline(_LogisticBaseline):
    """Score = -max_c softmax(logits)_c (Hendrycks & Gimpel 2017)."""

    name = "max_softmax"

    def _score(self, x: np.ndarray) -> np.ndarray:
        return -softmax(self.logits(x), axis=1).max(axis=1)


class LogitEnergyBaseline(_LogisticBaseline):
    """Score = -logsumexp(logits), the free energy of the classifier (Liu et al. 2020)."""

    name = "logit_energy"

    def _score(self, x: np.ndarray) -> np.ndarray:
        return -logsumexp(self.logits(x), axis=1)


# --- distance / density (labels optional or unused) ----------------------------------------------


class MahalanobisBaseline(OODBaseline):
    """min_c (x - mu_c)^T Sigma^-1 (x - mu_c) with class means mu_c and one shared (tied, maximum
    likelihood) covariance Sigma (Lee et al. 2018); with no labels, one mean and covariance.

    `reg` adds reg * mean(diag Sigma) to the diagonal. Without it a direction with zero training
    variance (a pixel that is always 0) would make Sigma singular, and a pseudo-inverse would then
    IGNORE exactly the directions in which an OOD input is most surprising. reg=0 gives the plain
    distance (Sigma must then be invertible).
    """

    name = "mahalanobis"

    def __init__(self, reg: float = 1e-6):
        self.reg = reg

    def fit(self, x_train: Any, y_train: Any = None) -> MahalanobisBaseline:
        x_train = _check_features(x_train, "x_train")
        if y_train is None:
            labels = np.zeros(x_train.shape[0], dtype=np.int64)
        else:
            labels = _check_labels(y_train, x_train.shape[0], type(self).__name__)
        classes, group = np.unique(labels, return_inverse=True)
        means = np.stack([x_train[group == c].mean(axis=0) for c in range(classes.size)])
        residuals = x_train - means[group]
        covariance = residuals.T @ residuals / x_train.shape[0]
        covariance = covariance + self.reg * np.mean(np.diag(covariance)) * np.eye(x_train.shape[1])
        self.class_conditional_ = y_train is not None
        self.classes_ = classes
        self.means_ = means
        self.covariance_ = covariance
        # Whitening: with Sigma = L L^T, (x - mu)^T Sigma^-1 (x - mu) = |L^-1 x - L^-1 mu|^2.
        self.cholesky_ = _cholesky(covariance, type(self).__name__)
        self.white_means_ = solve_triangular(self.cholesky_, means.T, lower=True).T
        self.n_features_in_ = x_train.shape[1]
        return self

    def _score(self, x: np.ndarray) -> np.ndarray:
        white = solve_triangular(self.cholesky_, x.T, lower=True).T
        # |a - b|^2 = |a|^2 - 2 a.b + |b|^2 for all (row, class) pairs at once; the subtraction can
        # leave tiny negative values from rounding, hence the clip.
        squared = (
            np.sum(white**2, axis=1)[:, None]
            - 2.0 * white @ self.white_means_.T
            + np.sum(self.white_means_**2, axis=1)[None, :]
        )
        return np.maximum(squared.min(axis=1), 0.0)


class CosineKNNBaseline(OODBaseline):
    """Score = 1 - cosine similarity to the k-th most similar training row (k=1: the nearest).

    Rows are L2-normalised (a zero row has similarity 0 to everything). Queries are processed in
    blocks of `batch_size` rows so the (batch, n_train) similarity matrix stays small.
    """

    name = "cosine_knn"

    def __init__(self, k: int = 1, batch_size: int = 1024):
        self.k = k
        self.batch_size = batch_size

    def fit(self, x_train: Any, y_train: Any = None) -> CosineKNNBaseline:
        x_train = _check_features(x_train, "x_train")
        if int(self.k) != self.k or not 1 <= self.k <= x_train.shape[0]:
            raise ValueError(f"k must be an integer in [1, n_train={x_train.shape[0]}], got {self.k}")
        self.train_unit_ = _unit_rows(x_train)
        self.n_features_in_ = x_train.shape[1]
        return self

    def _score(self, x: np.ndarray) -> np.ndarray:
        queries = _unit_rows(x)
        scores = np.empty(x.shape[0])
        for start in range(0, x.shape[0], self.batch_size):
            similarity = queries[start : start + self.batch_size] @ self.train_unit_.T
            # The k-th largest similarity per row, without a full sort.
            kth = np.partition(similarity, -self.k, axis=1)[:, -self.k]
            scores[start : start + self.batch_size] = 1.0 - kth
        return scores


class GaussianDensityBaseline(OODBaseline):
    """Score = -log N(x; mu, Sigma) for one full-covariance Gaussian fitted to all training rows.

    Sigma is shrunk towards a scaled identity, (1 - s) S + s * trace(S)/d * I (S the maximum
    likelihood covariance), with s estimated by Ledoit-Wolf when `shrinkage` is None, or s =
    `shrinkage` when given (0 = no shrinkage). Labels are ignored: this is the label-free baseline.
    """

    name = "gaussian_density"

    def __init__(self, shrinkage: float | None = None):
        self.shrinkage = shrinkage

    def fit(self, x_train: Any, y_train: Any = None) -> GaussianDensityBaseline:
        x_train = _check_features(x_train, "x_train")
        if self.shrinkage is None:
            estimator = LedoitWolf().fit(x_train)
            self.shrinkage_ = float(estimator.shrinkage_)
        else:
            if not 0.0 <= self.shrinkage <= 1.0:
                raise ValueError(f"shrinkage must be in [0, 1], got {self.shrinkage}")
            estimator = ShrunkCovariance(shrinkage=self.shrinkage).fit(x_train)
            self.shrinkage_ = float(self.shrinkage)
        self.mean_ = estimator.location_
        self.covariance_ = estimator.covariance_
        self.cholesky_ = _cholesky(self.covariance_, type(self).__name__)
        self.log_det_ = 2.0 * float(np.sum(np.log(np.diag(self.cholesky_))))
        self.n_features_in_ = x_train.shape[1]
        return self

    def _score(self, x: np.ndarray) -> np.ndarray:
        white = solve_triangular(self.cholesky_, (x - self.mean_).T, lower=True).T
        squared_distance = np.sum(white**2, axis=1)
        return 0.5 * (self.n_features_in_ * np.log(2.0 * np.pi) + self.log_det_ + squared_distance)


# --- running them all ----------------------------------------------------------------------------


def default_baselines() -> dict[str, OODBaseline]:
    """Fresh, unfitted instances of every baseline, keyed by name (the order of the report)."""
    baselines: list[OODBaseline] = [
        MaxSoftmaxBaseline(),
        LogitEnergyBaseline(),
        MahalanobisBaseline(),
        CosineKNNBaseline(k=1),
        GaussianDensityBaseline(),
    ]
    return {baseline.name: baseline for baseline in baselines}


@dataclass(frozen=True)
class BaselineResults:
    """Per baseline: metrics per OOD split, scores per split (in-distribution and OOD, so a report
    can compare them pairwise with the EBM's), and fit + score seconds. `skipped` maps a baseline
    that could not run to the reason (e.g. no labels)."""

    metrics: dict[str, dict[str, OODMetrics]]
    scores: dict[str, dict[str, list[float]]]
    seconds: dict[str, float]
    skipped: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {
                name: {split: m.to_dict() for split, m in per_split.items()} for name, per_split in self.metrics.items()
            },
            "scores": {
                name: {split: list(values) for split, values in per_split.items()}
                for name, per_split in self.scores.items()
            },
            "seconds": dict(self.seconds),
            "skipped": dict(self.skipped),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineResults:
        return cls(
            metrics={
                str(name): {str(split): OODMetrics.from_dict(m) for split, m in per_split.items()}
                for name, per_split in d["metrics"].items()
            },
            scores={
                str(name): {str(split): [float(v) for v in values] for split, values in per_split.items()}
                for name, per_split in d["scores"].items()
            },
            seconds={str(name): float(s) for name, s in d["seconds"].items()},
            skipped={str(name): str(reason) for name, reason in d["skipped"].items()},
        )


def run_baselines(
    x_train: Any,
    y_train: Any,
    splits: dict[str, Any],
    in_split: str,
    ood_splits: list[str],
    baselines: dict[str, OODBaseline] | None = None,
) -> BaselineResults:
    """Fit each baseline on (x_train, y_train), score `in_split` and every OOD split, and compute
    `OODMetrics` of each OOD split against `in_split`.

    `y_train=None` skips the baselines that need labels. Logistic baselines with equal settings
    share one fitted classifier (fitting it twice would give the same model at twice the cost).
    """
    baselines = default_baselines() if baselines is None else baselines
    x_train = _check_features(x_train, "x_train")
    for split in [in_split, *ood_splits]:
        if split not in splits:
            raise ValueError(f"split {split!r} is not in splits ({sorted(splits)})")
    if in_split in ood_splits:
        raise ValueError(f"split {in_split!r} cannot be both the in-distribution split and an OOD split")
    features = {
        split: _check_features(splits[split], f"splits[{split!r}]", x_train.shape[1])
        for split in [in_split, *ood_splits]
    }

    metrics: dict[str, dict[str, OODMetrics]] = {}
    scores: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    fitted_classifiers: dict[tuple[float, int, bool], tuple[Pipeline, int]] = {}
    for name, baseline in baselines.items():
        if baseline.requires_labels and y_train is None:
            skipped[name] = "needs class labels; y_train is None"
            continue
        start = time.perf_counter()
        if isinstance(baseline, _LogisticBaseline) and baseline._classifier_settings() in fitted_classifiers:
            baseline._set_fitted(*fitted_classifiers[baseline._classifier_settings()])
        else:
            baseline.fit(x_train, y_train)
            if isinstance(baseline, _LogisticBaseline):
                fitted_classifiers[baseline._classifier_settings()] = (baseline.classifier_, baseline.n_features_in_)
        split_scores = {split: baseline.score(x) for split, x in features.items()}
        seconds[name] = time.perf_counter() - start
        scores[name] = {split: values.tolist() for split, values in split_scores.items()}
        metrics[name] = {split: ood_metrics(split_scores[in_split], split_scores[split]) for split in ood_splits}
    return BaselineResults(metrics=metrics, scores=scores, seconds=seconds, skipped=skipped)


# Lower is better for these; higher is better for every other metric of OODMetrics.
_LOWER_IS_BETTER = frozenset({"fpr95"})


def rank_detectors(metrics_by_detector: dict[str, OODMetrics], metric: str = "auroc") -> list[tuple[str, float]]:
    """(detector, value) pairs best first, e.g. to show where the EBM ranks among the baselines."""
    values = [(name, float(getattr(m, metric))) for name, m in metrics_by_detector.items()]
    return sorted(values, key=lambda pair: pair[1], reverse=metric not in _LOWER_IS_BETTER)


# --- input checks --------------------------------------------------------------------------------


def _check_features(x: Any, name: str, n_features: int | None = None) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ShapeError(f"{name} must be a non-empty 2-D array (rows, features), got shape {array.shape}")
    if n_features is not None and array.shape[1] != n_features:
        raise ShapeError(f"{name} has {array.shape[1]} features; the baseline was fitted on {n_features}")
    if not np.isfinite(array).all():
        raise NonFiniteError(f"{name} contains {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    return array


def _check_labels(y: Any, n_rows: int, who: str) -> np.ndarray:
    if y is None:
        raise ValueError(f"{who} needs class labels: y_train is None")
    labels = np.asarray(y)
    if labels.shape != (n_rows,):
        raise ShapeError(f"y_train must have shape ({n_rows},) to match x_train, got {labels.shape}")
    return labels


def _cholesky(covariance: np.ndarray, who: str) -> np.ndarray:
    try:
        lower, _ = cho_factor(covariance, lower=True)
    except np.linalg.LinAlgError as error:
        raise np.linalg.LinAlgError(
            f"{who}: the covariance is not positive definite (constant or collinear features?); "
            "use a positive reg / shrinkage"
        ) from error
    # cho_factor leaves the other triangle as garbage; keep only the factor.
    return np.tril(lower)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0.0, norms, 1.0)
