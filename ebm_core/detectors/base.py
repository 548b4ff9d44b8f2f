"""`Detector`: the one contract every detector kind implements, and `load_detector`.

Follows scikit-learn's fitted-state style (IsolationForest: `fit`, then `offset_`, then `predict`):
the constructor only stores its arguments; `fit(x, y=None, **fit_params)` returns self and sets
attributes ending in `_` (at least `n_features_in_`, `feature_names_in_`); `calibrate(x_cal, alpha)`
sets `calibration_energies_`, `alpha_`, `threshold_`. Scores are energies: higher = more OOD.

A subclass implements `fit`, `_is_fitted`, `_energies` (on checked float64 rows), `_saved_state` and
`_from_saved`, and names its `kind`; everything else (input and output checks, calibration, p-values,
the threshold rule, the atomic folder swap on save, loading by kind) lives here once.

Saved form: a folder with `detector.json` (format_version, kind, the kind's metadata) and
`weights.safetensors`; never pickle. Format 1 (EnergyDetector before kinds existed) has no `kind` and
loads as an energy detector.
"""

from __future__ import annotations

import abc
import math
import json
from dataclasses import dataclass
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ebm_core.calibration import conformal_p_values, conformal_threshold
from ebm_core.errors import CalibrationError, NonFiniteError, NotCalibratedError, NotFittedError, ShapeError

FORMAT_VERSION = 2  # 2 added `kind`; 1 is read as kind "energy"
WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "detector.json"
DETECTOR_KINDS: dict[str, type["Detector"]] = {}  # kind -> class, filled as each kind's module is imported


@dataclass(frozen=True)
class Assessment:
    energy: np.ndarray  # (N,) float64, higher = more OOD
    p_value: np.ndarray  # (N,) conformal p-values
    is_ood: np.ndarray  # (N,) bool, energy > threshold_


class Detector(abc.ABC):
    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is not None:
            if kind in DETECTOR_KINDS and DETECTOR_KINDS[kind] is not cls:
                raise ValueError(f"detector kind {kind!r} is registered twice")
            DETECTOR_KINDS[kind] = cls

    # ---- what a kind implements -----------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray | None = None, **fit_params) -> "Detector":
        """Learn from training rows x (N, D) and optional labels y (N,); return self."""

    @abc.abstractmethod
    def _is_fitted(self) -> bool: ...

    @abc.abstractmethod
    def _energies(self, x: np.ndarray) -> np.ndarray:
        """Energies (N,) of rows already checked to be finite float64 (N, n_features_in_)."""

    @abc.abstractmethod
    def _saved_state(self, folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
        """(metadata for detector.json, tensors for weights.safetensors); may write sub-folders of folder."""

    @classmethod
    @abc.abstractmethod
    def _from_saved(cls, folder: Path, metadata: dict, tensors: dict[str, torch.Tensor], device: str) -> "Detector":
        """The fitted detector `_saved_state` described (calibration is restored by the caller)."""

    # ---- the shared contract ----------------------------------------------------------------------
    def calibrate(self, x_cal: np.ndarray, alpha: float = 0.05) -> "Detector":
        """Set the threshold to the conformal quantile of the calibration energies at rate alpha.

        Raises CalibrationError (and changes nothing) when the calibration rows are too few for a finite
        threshold at alpha (the guard would flag nothing) or all score the same (it cannot rank inputs)."""
        energies = self.score(x_cal)
        threshold = conformal_threshold(energies, alpha)  # validates alpha before anything changes
        if not np.isfinite(threshold):
            needed = math.ceil((1.0 - alpha) / alpha)
            raise CalibrationError(
                f"{energies.shape[0]} calibration rows cannot give a finite threshold at alpha={alpha}: "
                f"the guard would flag nothing; give at least {needed} calibration rows"
            )
        if energies.shape[0] > 1 and np.ptp(energies) == 0.0:
            raise CalibrationError(
                f"every one of the {energies.shape[0]} calibration rows has the energy {energies[0]:.6g}: the "
                "detector cannot tell inputs apart (a constant energy); it is not calibrated"
            )
        self.calibration_energies_ = np.sort(energies)
        self.alpha_ = float(alpha)
        self.threshold_ = threshold
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Energy per row, shape (N,), float64; higher = more OOD."""
        self._check_fitted()
        x = check_features(x, "x", n_features=self.n_features_in_)
        energies = np.asarray(self._energies(x), dtype=np.float64)
        if energies.shape != (x.shape[0],):
            raise ShapeError(f"{type(self).__name__} energies must have shape ({x.shape[0]},), got {energies.shape}")
        if not np.isfinite(energies).all():
            rows = np.flatnonzero(~np.isfinite(energies))[:5].tolist()
            raise NonFiniteError(f"the energy is NaN or infinite for rows {rows}: the model cannot score them")
        return energies

    def p_value(self, x: np.ndarray) -> np.ndarray:
        """Conformal p-values (N,): small = unusually high energy for in-distribution data."""
        self._check_calibrated()
        return conformal_p_values(self.calibration_energies_, self.score(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """True where the input is flagged as OOD (energy above the calibrated threshold)."""
        return self.assess(x).is_ood

    def assess(self, x: np.ndarray) -> "Assessment":
        """Energy, p-value and flag per row from one scoring pass (what a served guard returns).
        The flag rule is written here once: energy strictly above the calibrated threshold."""
        self._check_calibrated()
        energy = self.score(x)
        return Assessment(
            energy=energy,
            p_value=conformal_p_values(self.calibration_energies_, energy),
            is_ood=energy > self.threshold_,
        )

    @property
    def is_calibrated(self) -> bool:
        return "threshold_" in vars(self)

    # ---- persistence ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the detector to `directory` (replacing a detector there); returns the directory.

        Written into a sibling folder and swapped in, so a failure never leaves new weights beside an
        old detector.json (or a half-written file) where a reader would find them. Files already in
        the folder that are not the detector's own (e.g. featurizer.json) are kept.
        """
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        previous = directory.with_name(f".{directory.name}.previous")
        try:
            self._write(staging)
            for extra in directory.iterdir():
                if extra.is_file() and not (staging / extra.name).exists():
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

    def _write(self, folder: Path) -> None:
        """Write into an empty or new folder (no swap: `save` and composite kinds provide the folder)."""
        from safetensors.torch import save_file

        self._check_fitted()
        folder.mkdir(parents=True, exist_ok=True)
        metadata, tensors = self._saved_state(folder)
        calibrated = self.is_calibrated
        if calibrated:
            tensors["calibration.energies"] = torch.as_tensor(self.calibration_energies_)
        metadata = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": self.feature_names_in_,
            **metadata,
            "alpha": self.alpha_ if calibrated else None,
            "threshold": _json_float(self.threshold_) if calibrated else None,
        }
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))
        (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2))

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "Detector":
        """`load_detector(directory)`, checked to be of this class."""
        detector = load_detector(directory, device=device)
        if not isinstance(detector, cls):
            raise TypeError(
                f"{directory} holds a {type(detector).__name__} (kind {detector.kind!r}), not a {cls.__name__}; "
                "use ebm_core.load_detector to load any kind"
            )
        return detector

    # ---- checks -----------------------------------------------------------------------------------
    def _reset_fitted_state(self) -> None:
        """Forget everything learnt, so a refit that fails never leaves old state beside new."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(x_train) first")

    def _check_calibrated(self) -> None:
        self._check_fitted()
        if not self.is_calibrated:
            raise NotCalibratedError(
                f"this {type(self).__name__} is not calibrated yet: call calibrate(x_cal, alpha) first"
            )


def load_detector(directory: str | Path, device: str = "cpu") -> Detector:
    """The detector saved in `directory`, of whichever kind its detector.json names."""
    from safetensors.torch import load_file

    directory = Path(directory)
    metadata_path, weights_path = directory / METADATA_FILE, directory / WEIGHTS_FILE
    for path in (metadata_path, weights_path):
        if not path.exists():
            raise FileNotFoundError(f"not a saved detector: {path} is missing")
    metadata = json.loads(metadata_path.read_text())
    version = metadata.get("format_version")
    if version == 1:
        kind = "energy"  # format 1 predates kinds: only EnergyDetector wrote it
    elif version == FORMAT_VERSION:
        kind = metadata.get("kind")
    else:
        raise ValueError(f"{metadata_path}: format_version {version}, expected 1 or {FORMAT_VERSION}")
    if kind not in DETECTOR_KINDS:
        raise ValueError(f"{metadata_path}: unknown detector kind {kind!r}; known kinds: {', '.join(DETECTOR_KINDS)}")
    tensors = load_file(str(weights_path))
    detector = DETECTOR_KINDS[kind]._from_saved(directory, metadata, tensors, device)
    if metadata.get("threshold") is not None:
        energies = tensors["calibration.energies"].numpy()
        alpha, threshold = float(metadata["alpha"]), float(metadata["threshold"])
        expected = conformal_threshold(energies, alpha) if 0.0 < alpha < 1.0 and energies.size else math.nan
        # The threshold is a function of the stored calibration energies: a value they do not give back
        # (edited to NaN, inf, 1e9, ...) would make a guard that flags nothing, and is refused.
        if not (math.isfinite(threshold) and threshold == expected):
            raise CalibrationError(
                f"{metadata_path}: the stored threshold {metadata['threshold']!r} is not the conformal quantile "
                f"{expected!r} of the stored calibration energies at alpha {metadata['alpha']!r}: the detector "
                "was altered or damaged; recalibrate it instead of loading it"
            )
        detector.calibration_energies_ = energies
        detector.alpha_ = alpha
        detector.threshold_ = threshold
    return detector


def energies_in_chunks(energy: torch.nn.Module, x: np.ndarray, batch_size: int, device) -> np.ndarray:
    """energy(x) (N,) as float64, `batch_size` rows at a time on `device`, without gradients."""
    rows = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        chunks = [energy(rows[s : s + batch_size].to(device)).cpu() for s in range(0, rows.shape[0], batch_size)]
    return torch.cat(chunks).double().numpy() if chunks else np.zeros(0)


def check_features(x, name: str, n_features: int | None = None) -> np.ndarray:
    """x as a finite float64 (N, D) array, D == n_features when given, or an error that says what is wrong."""
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


def check_feature_names(feature_names, n_features: int) -> list[str] | None:
    if feature_names is None:
        return None
    if len(feature_names) != n_features:
        raise ShapeError(f"{len(feature_names)} feature names for {n_features} feature columns")
    return list(feature_names)


def _json_float(value: float) -> float | str:
    return value if np.isfinite(value) else ("inf" if value > 0 else "-inf")
