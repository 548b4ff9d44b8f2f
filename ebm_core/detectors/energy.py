"""EnergyDetector: standardise the features, train an energy network with any registered objective,
then score, calibrate and save through the `Detector` contract.

Fitted state: `n_features_in_`, `feature_names_in_`, `mean_`, `scale_`, `classes_`, `energy_kind_`
("mlp", or "classifier" when the objective reads a classifier as an energy), `energy_`, `history_`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ebm_core.checkpoint import load_checkpoint
from ebm_core.detectors.base import check_feature_names, check_features
from ebm_core.detectors.energy_config import DetectorConfig
from ebm_core.detectors.trained import TrainedEnergyDetector
from ebm_core.distributed import DistributedContext
from ebm_core.energies.classifier import ClassifierEnergy, ClassifierEnergyConfig
from ebm_core.energies.mlp import MLPEnergy, MLPEnergyConfig
from ebm_core.errors import ShapeError
from ebm_core.objectives.base import ObjectiveContext
from ebm_core.training import TrainingCallback, TrainingHistory, train_energy

FIT_FINGERPRINT_FILE = "fit.json"  # beside the training checkpoint: which fit it belongs to


class EnergyDetector(TrainedEnergyDetector):
    kind = "energy"

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()

    # ---- fitting -------------------------------------------------------------------------------
    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray | None = None,
        *,
        outliers: np.ndarray | None = None,
        seed: int = 0,
        feature_names: list[str] | None = None,
        callbacks: tuple[TrainingCallback, ...] = (),
        checkpoint_dir: str | Path | None = None,
        distributed: DistributedContext | None = None,
    ) -> "EnergyDetector":
        """Learn the standardisation and train the energy with `config.objective`.

        y: optional labels (any hashable values); required by objectives with labels = "required"
        (ce, jem), used by "optional" ones (margin), ignored by the others.
        outliers: known-bad rows for objectives that use them (margin); without them margin trains
        against feature-permuted training rows. Ignored by objectives that do not use them.
        checkpoint_dir: write training checkpoints there every `train.checkpoint_every` steps; when it
        already holds one from the same fit (same config, seed and data), training resumes from it and
        ends with the parameters an uninterrupted fit would have. A checkpoint of another fit is refused.
        distributed: fit as one rank of a torch.distributed group (`ebm_core.distributed`): the data order
        comes from `seed` on every rank, the objective's noise (and replay buffer) from the rank's own
        `noise_generator`; only rank 0 writes checkpoints, and a distributed fit does not resume.
        """
        x = check_features(x, "x")
        self._reset_fitted_state()
        config, objective_config = self.config, self.config.objective
        feature_names = check_feature_names(feature_names, x.shape[1])
        if objective_config.labels == "required" and y is None:
            raise ValueError(f"objective {objective_config.name!r} needs labels (y)")
        uses_labels = y is not None and objective_config.labels != "ignored"
        y_index, classes = None, None
        if uses_labels:
            y = np.asarray(y)
            if y.shape != (x.shape[0],):
                raise ShapeError(f"y must have shape ({x.shape[0]},), got {y.shape}")
            unique, y_index = np.unique(y, return_inverse=True)
            classes = [c.item() if hasattr(c, "item") else c for c in unique]
        if not objective_config.uses_outliers:
            outliers = None  # only objectives that train on them see them (and the checkpoint fingerprint)
        outliers = check_features(outliers, "outliers", x.shape[1]) if outliers is not None else None
        if checkpoint_dir is not None and distributed is not None and not distributed.is_main:
            checkpoint_dir = None  # only rank 0 writes checkpoints
        if checkpoint_dir is not None:
            _claim_checkpoint_dir(Path(checkpoint_dir), config, seed, x, y_index, classes, outliers)

        self.n_features_in_ = x.shape[1]
        self.feature_names_in_ = feature_names
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.scale_ = np.where(std < config.min_feature_scale, 1.0, std)
        self.classes_ = classes
        self.energy_kind_ = "classifier" if objective_config.labels == "required" or uses_labels else "mlp"

        generator = torch.Generator(device="cpu").manual_seed(seed)
        x_std = torch.as_tensor(self._standardize(x), dtype=torch.float32)
        outliers_std = None
        if outliers is not None:
            outliers_std = torch.as_tensor(self._standardize(outliers), dtype=torch.float32)
        # Distributed: build-time draws (e.g. the replay buffer's fill) and the buffer's own draws use the
        # rank's noise generator; `generator` then drives only the shared data order.
        noise = distributed.noise_generator if distributed is not None else generator
        build_config = _per_rank(objective_config, distributed.world_size) if distributed is not None else objective_config
        objective = build_config.build(ObjectiveContext(x_std, noise, config.sampler, outliers_std))
        energy = _build_energy(self.energy_kind_, self.n_features_in_, classes, config, seed)
        self.history_: TrainingHistory = train_energy(
            energy,
            objective,
            x_std,
            config.train,
            generator,
            callbacks,
            y_train=torch.as_tensor(y_index, dtype=torch.long) if uses_labels else None,
            device=config.device,
            checkpoint_dir=checkpoint_dir,
            resume=checkpoint_dir is not None and distributed is None,
            distributed=distributed,
        )
        self.energy_ = _with_score_temperature(energy.eval(), config.score_temperature)
        return self

    def set_score_temperature(self, temperature: float) -> "EnergyDetector":
        """Read the fitted classifier energy at another temperature, E = -T lse(f / T), without retraining.

        The config's `score_temperature` follows, so a saved and reloaded detector scores the same."""
        self._check_fitted()
        if self.energy_kind_ != "classifier":
            raise ValueError("a score temperature applies to classifier energies only")
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        config = replace(self.config, score_temperature=float(temperature))
        self.config = config
        self.energy_ = _with_score_temperature(self.energy_, config.score_temperature)
        return self

    # ---- the Detector hooks (scoring and the shared state: TrainedEnergyDetector) ----------------
    def _saved_state(self, folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
        metadata, tensors = self._trained_state()
        return {**metadata, "energy_kind": self.energy_kind_}, tensors

    @classmethod
    def _from_saved(cls, folder: Path, metadata: dict, tensors: dict[str, torch.Tensor], device: str) -> "EnergyDetector":
        config = DetectorConfig.from_dict({**metadata["config"], "device": device})
        detector = cls(config)
        energy_state = detector._restore_trained_state(metadata, tensors)
        detector.energy_kind_ = metadata.get("energy_kind", "mlp")
        energy = _build_energy(detector.energy_kind_, detector.n_features_in_, detector.classes_, config, seed=0)
        energy.load_state_dict(energy_state)
        detector.energy_ = _with_score_temperature(energy.to(device).eval(), config.score_temperature)
        return detector


def _build_energy(kind: str, n_features: int, classes: list | None, config: DetectorConfig, seed: int):
    # Parameter init draws from torch's default generator; fork it so the global state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "classifier":
            n_classes = len(classes) if classes is not None else None
            if n_classes is None or n_classes < 2:
                raise ValueError(f"a classifier energy needs at least 2 classes, got {n_classes}")
            return ClassifierEnergy(
                ClassifierEnergyConfig(
                    n_features, n_classes, config.hidden_dims, config.spectral_norm, config.temperature
                )
            )
        if kind == "mlp":
            return MLPEnergy(MLPEnergyConfig(n_features, config.hidden_dims, config.spectral_norm))
    raise ValueError(f"unknown energy kind {kind!r}; expected 'mlp' or 'classifier'")


def _per_rank(objective_config, world_size: int):
    """A rank's share of a replay buffer: capacity / world_size, so the ranks' buffers together hold the
    configured capacity and each chain is continued as often as in one process (each rank draws B /
    world_size chains per step). Objectives without a buffer are returned as they are."""
    capacity = getattr(objective_config, "buffer_capacity", None)
    if capacity is None or world_size == 1:
        return objective_config
    return replace(objective_config, buffer_capacity=max(1, -(-capacity // world_size)))


def _with_score_temperature(energy, score_temperature: float | None):
    """Read a trained classifier energy at `score_temperature` (a setting chosen on validation data)."""
    if score_temperature is not None and hasattr(energy, "temperature"):
        energy.temperature = float(score_temperature)
    return energy


def _claim_checkpoint_dir(directory: Path, config: DetectorConfig, seed: int, x, y_index, classes, outliers) -> None:
    """Tie `directory` to this fit, or refuse it if it holds another fit's checkpoint."""
    digest = hashlib.sha256()
    for array in (x, y_index, outliers):
        digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    fingerprint = {
        "config": {**config.to_dict(), "device": None},  # the device may change between the two runs
        "seed": seed,
        "classes": [str(c) for c in classes] if classes is not None else None,
        "data_sha256": digest.hexdigest(),
    }
    path = directory / FIT_FINGERPRINT_FILE
    if load_checkpoint(directory) is not None:
        saved = json.loads(path.read_text()) if path.exists() else None
        if saved != fingerprint:
            raise ValueError(
                f"{directory} holds a training checkpoint of another fit (different config, seed or data); "
                "give an empty checkpoint_dir or delete that one"
            )
        return
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(fingerprint, indent=2))
    tmp.replace(path)
