"""Detectors the benchmark configurations need beyond `EnergyDetector`'s built-in recipes.

- `CrossEntropyObjective` (re-exported from ebm_core.objectives.cross_entropy).
- `fit_with_objective(detector, x, y, objective, seed)`: fit an `EnergyDetector` with an objective
  built by the caller (weights the recipes do not expose, e.g. a margin weight), same fitted state
  as `EnergyDetector.fit`.
- `KernelDensityDetector`: fits / scores with `ebm_core.energies.kernel_density.KernelDensityEnergy`.
- `ComposedDetector([(w, detector), ...])`: score = sum_i w_i * score_i(x), i.e. the product of
  experts prod_i p_i(x)^w_i (see `ebm_core.composition.WeightedSumEnergy`); calibrate / score /
  p_value / predict like `EnergyDetector`.

Sign as everywhere: energy low = in-distribution, higher = more OOD. Imports only torch and numpy.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ebm_core.detector import EnergyDetector, _as_float_array
from ebm_core.energies.kernel_density import KernelDensityEnergy
from ebm_core.errors import NotCalibratedError, NotFittedError
from ebm_core.objectives.cross_entropy import CrossEntropyObjective
from ebm_core.recipes import build_energy
from ebm_core.training import train_energy


def fit_with_objective(
    detector: EnergyDetector,
    x_train: np.ndarray,
    y_train: np.ndarray | None,
    make_objective,
    seed: int = 0,
    energy_kind: str | None = None,
) -> EnergyDetector:
    """Fit `detector` like `EnergyDetector.fit`, with the objective `make_objective(x_std, generator)`.

    energy_kind: "classifier" (needs y_train) or "mlp"; default "classifier" when labels are given.
    """
    x = _as_float_array(x_train, "x_train")
    config = detector.config
    detector.n_features_in_ = x.shape[1]
    detector.feature_names_in_ = None
    detector.mean_ = x.mean(axis=0)
    std = x.std(axis=0)
    detector.scale_ = np.where(std < config.min_feature_scale, 1.0, std)
    kind = energy_kind or ("classifier" if y_train is not None else "mlp")
    y_index = None
    detector.classes_ = None
    if kind == "classifier":
        if y_train is None:
            raise ValueError("a classifier energy needs labels (y_train)")
        classes, y_index = np.unique(np.asarray(y_train), return_inverse=True)
        detector.classes_ = [c.item() if hasattr(c, "item") else c for c in classes]
    detector.energy_kind_ = kind
    generator = torch.Generator(device="cpu").manual_seed(seed)
    x_std = torch.as_tensor(detector._standardize(x), dtype=torch.float32)
    objective = make_objective(x_std, generator)
    n_classes = len(detector.classes_) if detector.classes_ is not None else None
    energy = build_energy(kind, x.shape[1], n_classes, config, seed)
    detector.history_ = train_energy(
        energy,
        objective,
        x_std,
        config.train,
        generator,
        y_train=torch.as_tensor(y_index, dtype=torch.long) if y_index is not None else None,
        device=config.device,
    )
    detector.energy_ = energy.eval()
    return detector


def set_temperature(detector: EnergyDetector, temperature: float) -> EnergyDetector:
    """Re-read a fitted classifier energy at another temperature (no retraining): E = -T lse(f / T)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    if getattr(detector, "energy_kind_", None) != "classifier":
        raise ValueError("set_temperature applies to classifier energies only")
    detector.energy_.temperature = float(temperature)
    return detector


class KernelDensityDetector:
    """Label-free detector with a `KernelDensityEnergy` on the training rows (no standardisation:
    the kernel works on directions). fit/calibrate/score/predict/p_value like `EnergyDetector`."""

    def __init__(self, temperature: float = 0.05):
        self.temperature = temperature

    def fit(self, x_train: np.ndarray, y_train=None, seed: int = 0) -> "KernelDensityDetector":
        x = _as_float_array(x_train, "x_train")
        self.n_features_in_ = x.shape[1]
        self.energy_ = KernelDensityEnergy(torch.as_tensor(x, dtype=torch.float32), self.temperature).eval()
        return self

    def score(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        if not hasattr(self, "energy_"):
            raise NotFittedError("this KernelDensityDetector is not fitted yet: call fit(x_train) first")
        x = _as_float_array(x, "x", n_features=self.n_features_in_)
        xt = torch.as_tensor(x, dtype=torch.float32)
        with torch.no_grad():
            out = [self.energy_(xt[s : s + batch_size]) for s in range(0, xt.shape[0], batch_size)]
        return torch.cat(out).double().numpy() if out else np.zeros(0)

    calibrate = EnergyDetector.calibrate
    p_value = EnergyDetector.p_value
    predict = EnergyDetector.predict

    def _check_calibrated(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotCalibratedError("not calibrated yet: call calibrate(x_cal, alpha) first")


class ComposedDetector:
    """Weighted sum of fitted detectors' energies: score(x) = sum_i w_i * detector_i.score(x).

    Every detector keeps its own standardisation, so the members need not share features scaling.
    With positive weights an input must look in-distribution to every member to score low.
    """

    def __init__(self, members: list[tuple[float, object]]):
        members = list(members)
        if not members:
            raise ValueError("ComposedDetector needs at least one (weight, detector) pair")
        for weight, _ in members:
            if not math.isfinite(float(weight)):
                raise ValueError(f"weights must be finite, got {[w for w, _ in members]}")
        self.members = [(float(w), d) for w, d in members]

    def score(self, x: np.ndarray) -> np.ndarray:
        total = None
        for weight, detector in self.members:
            if weight == 0.0:
                continue
            part = weight * np.asarray(detector.score(x), dtype=np.float64)
            total = part if total is None else total + part
        if total is None:
            return np.zeros(np.asarray(x).shape[0])
        return total

    calibrate = EnergyDetector.calibrate
    p_value = EnergyDetector.p_value
    predict = EnergyDetector.predict

    def _check_calibrated(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotCalibratedError("this ComposedDetector is not calibrated yet: call calibrate(x_cal, alpha) first")


__all__ = [
    "ComposedDetector",
    "CrossEntropyObjective",
    "KernelDensityDetector",
    "KernelDensityEnergy",
    "fit_with_objective",
    "set_temperature",
]
