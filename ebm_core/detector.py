"""EnergyDetector: fit an energy model, calibrate a conformal threshold, score, save and load.

Follows scikit-learn's fitted-state style (IsolationForest: `fit` then `offset_`): the constructor only
stores the config; `fit` sets `mean_`, `scale_`, `energy_`, `history_`; `calibrate` sets
`calibration_energies_`, `threshold_`, `alpha_`. Scores are energies: higher = more OOD.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ebm_core.calibration import conformal_p_values, conformal_threshold
from ebm_core.errors import NonFiniteError, NotCalibratedError, NotFittedError, ShapeError
from ebm_core.recipes import (
    LABELLED_OBJECTIVES,
    OBJECTIVES,
    build_energy,
    build_objective,
    energy_kind,
    feature_permuted,
)
from ebm_core.samplers.langevin import LangevinSampler
from ebm_core.training import TrainConfig, TrainingCallback, TrainingHistory, train_energy

FORMAT_VERSION = 1
_FITTED_ATTRIBUTES = (
    "n_features_in_", "feature_names_in_", "mean_", "scale_", "classes_", "energy_kind_", "history_",
    "energy_", "calibration_energies_", "alpha_", "threshold_",
)
WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "detector.json"


@dataclass(frozen=True)
class DetectorConfig:
    hidden_dims: tuple[int, ...] = (256, 256)
    spectral_norm: bool = False
    sampler: LangevinSampler = field(
        default_factory=lambda: LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=30, grad_clip=None)
    )
    buffer_capacity: int = 10_000
    buffer_reinit_rate: float = 0.05
    noise_margin: float = 0.25  # restart noise box = data box widened by this share of its range
    energy_l2: float = 0.01  # 0.1 pins energies at +-5 and flattens the in-distribution tail
    min_feature_scale: float = 1e-3  # features with a smaller std are not rescaled
    objective: str = "cd"  # one of ebm_core.recipes.OBJECTIVES
    temperature: float = 1.0  # classifier energies: E(x) = -T logsumexp(f(x) / T), while training
    score_temperature: float | None = None  # classifier energies: T used for scoring, if different
    dsm_sigmas: tuple[float, ...] = (0.1, 0.3, 1.0)
    ssm_projections: int = 1
    nce_noise_ratio: int = 4
    nce_noise_scale: float = 1.5
    margin_in: float = -1.0
    margin_out: float = 1.0
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "cpu"

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; expected one of {', '.join(OBJECTIVES)}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["hidden_dims"] = list(self.hidden_dims)
        data["dsm_sigmas"] = list(self.dsm_sigmas)
        if self.sampler.clamp is not None:
            data["sampler"]["clamp"] = list(self.sampler.clamp)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DetectorConfig":
        data = dict(data)
        sampler = dict(data.pop("sampler", {}))
        if sampler.get("clamp") is not None:
            sampler["clamp"] = tuple(sampler["clamp"])
        return cls(
            hidden_dims=tuple(data.pop("hidden_dims", (256, 256))),
            dsm_sigmas=tuple(data.pop("dsm_sigmas", (0.1, 0.3, 1.0))),
            sampler=LangevinSampler(**sampler),
            train=TrainConfig(**data.pop("train", {})),
            **data,
        )


class EnergyDetector:
    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()

    # ---- fitting -------------------------------------------------------------------------
    def fit(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray | None = None,
        outliers: np.ndarray | None = None,
        seed: int = 0,
        feature_names: list[str] | None = None,
        callbacks: tuple[TrainingCallback, ...] = (),
    ) -> "EnergyDetector":
        """Learn the standardisation and train the energy.

        y_train: optional labels (any hashable values); used by "jem" (required) and "margin".
        outliers: known-bad rows for "margin"; without them it trains against feature-permuted
        training rows.
        """
        x = _as_float_array(x_train, "x_train")
        # A refit that fails must not leave an old energy beside a new standardisation.
        for name in _FITTED_ATTRIBUTES:
            self.__dict__.pop(name, None)
        if feature_names is not None and len(feature_names) != x.shape[1]:
            raise ShapeError(f"{len(feature_names)} feature names for {x.shape[1]} feature columns")
        objective_name = self.config.objective
        if objective_name in LABELLED_OBJECTIVES and y_train is None:
            raise ValueError(f"objective {objective_name!r} needs labels (y_train)")
        self.n_features_in_ = x.shape[1]
        self.feature_names_in_ = list(feature_names) if feature_names is not None else None
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.scale_ = np.where(std < self.config.min_feature_scale, 1.0, std)

        uses_labels = y_train is not None and energy_kind(objective_name, True) == "classifier"
        y_index = None
        self.classes_ = None
        if uses_labels:
            y = np.asarray(y_train)
            if y.shape != (x.shape[0],):
                raise ShapeError(f"y_train must have shape ({x.shape[0]},), got {y.shape}")
            classes, y_index = np.unique(y, return_inverse=True)
            self.classes_ = [c.item() if hasattr(c, "item") else c for c in classes]
        self.energy_kind_ = energy_kind(objective_name, uses_labels)

        generator = torch.Generator(device="cpu").manual_seed(seed)
        x_std = torch.as_tensor(self._standardize(x), dtype=torch.float32)
        outliers_std = None
        if objective_name == "margin":
            outliers_std = (
                torch.as_tensor(self._standardize(_as_float_array(outliers, "outliers", x.shape[1])), dtype=torch.float32)
                if outliers is not None
                else feature_permuted(x_std, generator)
            )
        objective = build_objective(self.config, x_std, outliers_std, generator)
        n_classes = len(self.classes_) if self.classes_ is not None else None
        energy = build_energy(self.energy_kind_, self.n_features_in_, n_classes, self.config, seed)
        self.history_: TrainingHistory = train_energy(
            energy,
            objective,
            x_std,
            self.config.train,
            generator,
            callbacks,
            y_train=torch.as_tensor(y_index, dtype=torch.long) if uses_labels else None,
            device=self.config.device,
        )
        self.energy_ = _with_score_temperature(energy.eval(), self.config)
        return self

    def calibrate(self, x_cal: np.ndarray, alpha: float = 0.05) -> "EnergyDetector":
        energies = self.score(x_cal)
        threshold = conformal_threshold(energies, alpha)  # validates alpha before anything changes
        self.calibration_energies_ = np.sort(energies)
        self.alpha_ = float(alpha)
        self.threshold_ = threshold
        return self

    # ---- scoring -------------------------------------------------------------------------
    def score(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Energy per row (higher = more OOD), shape (N,)."""
        self._check_fitted()
        x = _as_float_array(x, "x", n_features=self.n_features_in_)
        device = next(self.energy_.parameters()).device
        x_std = torch.as_tensor(self._standardize(x), dtype=torch.float32)
        chunks = []
        with torch.no_grad():
            for start in range(0, x_std.shape[0], batch_size):
                chunks.append(self.energy_(x_std[start : start + batch_size].to(device)).cpu())
        energies = torch.cat(chunks).double().numpy() if chunks else np.zeros(0)
        if not np.isfinite(energies).all():
            rows = np.flatnonzero(~np.isfinite(energies))[:5].tolist()
            raise NonFiniteError(f"the energy is NaN or infinite for rows {rows}: the model cannot score them")
        return energies

    def p_value(self, x: np.ndarray) -> np.ndarray:
        self._check_calibrated()
        return conformal_p_values(self.calibration_energies_, self.score(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """True where the input is flagged as OOD (energy above the calibrated threshold)."""
        self._check_calibrated()
        return self.score(x) > self.threshold_

    # ---- persistence: safetensors weights + JSON, never pickle ----------------------------
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"energy.{k}": v.detach().cpu().contiguous() for k, v in self.energy_.state_dict().items()}
        tensors["standardizer.mean"] = torch.as_tensor(self.mean_)
        tensors["standardizer.scale"] = torch.as_tensor(self.scale_)
        calibrated = hasattr(self, "threshold_")
        if calibrated:
            tensors["calibration.energies"] = torch.as_tensor(self.calibration_energies_)
        metadata = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "n_features_in": self.n_features_in_,
            "feature_names_in": self.feature_names_in_,
            "energy_kind": self.energy_kind_,
            "classes": self.classes_,
            "alpha": self.alpha_ if calibrated else None,
            "threshold": _json_float(self.threshold_) if calibrated else None,
            "history": self.history_.to_dict() if hasattr(self, "history_") else None,
        }
        # Write into a sibling folder and swap it in, so a failure never leaves new weights beside
        # an old detector.json (or a half-written file) where a reader would find them.
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        previous = directory.with_name(f".{directory.name}.previous")
        try:
            save_file(tensors, str(staging / WEIGHTS_FILE))
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
            for extra in directory.iterdir():  # keep companions such as featurizer.json
                if extra.name not in (WEIGHTS_FILE, METADATA_FILE) and extra.is_file():
                    shutil.copy2(extra, staging / extra.name)
            shutil.rmtree(previous, ignore_errors=True)
            directory.rename(previous)
            staging.rename(directory)
            shutil.rmtree(previous, ignore_errors=True)
        except BaseException:
            if previous.exists() and not directory.exists():
                previous.rename(directory)  # the swap failed half-way: put the old detector back
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "EnergyDetector":
        from safetensors.torch import load_file

        directory = Path(directory)
        metadata_path, weights_path = directory / METADATA_FILE, directory / WEIGHTS_FILE
        for path in (metadata_path, weights_path):
            if not path.exists():
                raise FileNotFoundError(f"not a saved EnergyDetector: {path} is missing")
        metadata = json.loads(metadata_path.read_text())
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{metadata_path}: format_version {metadata.get('format_version')}, expected {FORMAT_VERSION}"
            )
        tensors = load_file(str(weights_path))
        config = DetectorConfig.from_dict({**metadata["config"], "device": device})
        detector = cls(config)
        detector.n_features_in_ = int(metadata["n_features_in"])
        detector.feature_names_in_ = metadata["feature_names_in"]
        detector.mean_ = tensors["standardizer.mean"].numpy()
        detector.scale_ = tensors["standardizer.scale"].numpy()
        detector.energy_kind_ = metadata.get("energy_kind", "mlp")
        detector.classes_ = metadata.get("classes")
        n_classes = len(detector.classes_) if detector.classes_ is not None else None
        energy = build_energy(detector.energy_kind_, detector.n_features_in_, n_classes, config, seed=0)
        energy.load_state_dict({k[len("energy.") :]: v for k, v in tensors.items() if k.startswith("energy.")})
        detector.energy_ = _with_score_temperature(energy.to(device).eval(), config)
        if metadata.get("history"):
            detector.history_ = TrainingHistory.from_dict(metadata["history"])
        if metadata["threshold"] is not None:
            detector.calibration_energies_ = tensors["calibration.energies"].numpy()
            detector.alpha_ = float(metadata["alpha"])
            detector.threshold_ = float(metadata["threshold"])
        return detector

    # ---- helpers ---------------------------------------------------------------------------
    def _standardize(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) / self.scale_

    def _check_fitted(self) -> None:
        if not hasattr(self, "energy_"):
            raise NotFittedError("this EnergyDetector is not fitted yet: call fit(x_train) first")

    def _check_calibrated(self) -> None:
        self._check_fitted()
        if not hasattr(self, "threshold_"):
            raise NotCalibratedError(
                "this EnergyDetector is not calibrated yet: call calibrate(x_cal, alpha) first"
            )


def _with_score_temperature(energy, config: DetectorConfig):
    """Read a trained classifier energy at `score_temperature` (a setting chosen on validation data)."""
    if config.score_temperature is not None and hasattr(energy, "temperature"):
        energy.temperature = float(config.score_temperature)
    return energy


def _as_float_array(x, name: str, n_features: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ShapeError(f"{name} must have shape (N, D), got {x.shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise ShapeError(f"{name} must have shape (N, {n_features}), got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))[:5].tolist()
        cols = np.flatnonzero(~finite.all(axis=0))[:5].tolist()
        raise ValueError(f"{name} contains NaN or infinite values (rows {rows}, columns {cols})")
    return x


def _json_float(value: float) -> float | str:
    return value if np.isfinite(value) else ("inf" if value > 0 else "-inf")
