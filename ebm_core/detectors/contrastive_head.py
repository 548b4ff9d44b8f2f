"""ContrastiveHeadDetector: a small head trained on frozen features with the supervised contrastive
loss, the energy read as a kernel density of the training rows in the head's space
(`ebm_core.energies.contrastive_head.ContrastiveHeadEnergy`).

Why: classifier energies only see the directions that separate the known classes; a kernel density on
the raw features sees every direction equally. The contrastive head learns a space where the known
classes are tight clusters, and a query far from every cluster has high energy. Needs labels, or
`pseudo_label_clusters` to learn from spherical k-means clusters of the rows (label-free).

Fitted state: `n_features_in_`, `feature_names_in_`, `mean_`, `scale_`, `classes_`, `energy_`, `history_`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ebm_core.clustering import auto_n_clusters, spherical_kmeans
from ebm_core.detectors.base import check_feature_names, check_features
from ebm_core.detectors.trained import TrainedEnergyDetector
from ebm_core.energies.contrastive_head import ContrastiveHeadEnergy
from ebm_core.errors import ShapeError
from ebm_core.objectives.supervised_contrastive import SupervisedContrastive
from ebm_core.training import TrainConfig, TrainingCallback, TrainingHistory, train_energy



@dataclass(frozen=True)
class ContrastiveHeadConfig:
    hidden_dims: tuple[int, ...] = (512,)
    feature_dim: int = 128
    contrastive_temperature: float = 0.1  # tau of the SupCon loss
    density_temperature: float = 0.05  # kernel width of the density in the head's space
    min_feature_scale: float = 1e-3  # features with a smaller std are not rescaled
    # Without labels: learn from spherical k-means clusters of the rows instead ("auto": sqrt(N / 2)
    # clusters); None: labels are required.
    pseudo_label_clusters: int | str | None = None
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(n_steps=1000, batch_size=512, learning_rate=1e-3, weight_decay=1e-4)
    )
    device: str = "cpu"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["hidden_dims"] = list(self.hidden_dims)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ContrastiveHeadConfig":
        data = dict(data)
        if "hidden_dims" in data:
            data["hidden_dims"] = tuple(int(h) for h in data["hidden_dims"])
        if "train" in data:
            data["train"] = TrainConfig(**data["train"])
        return cls(**data)


class ContrastiveHeadDetector(TrainedEnergyDetector):
    kind = "contrastive_head"

    def __init__(self, config: ContrastiveHeadConfig | None = None):
        self.config = config or ContrastiveHeadConfig()

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray | None = None,
        *,
        seed: int = 0,
        feature_names: list[str] | None = None,
        callbacks: tuple[TrainingCallback, ...] = (),
        **ignored,
    ) -> "ContrastiveHeadDetector":
        """Train the head on standardised rows x (N, D) with labels y (N,), then keep the training
        rows' features as the density's reference. Keyword arguments other detectors take (outliers)
        are accepted and ignored."""
        x = check_features(x, "x")
        self._reset_fitted_state()
        config = self.config
        if y is None:
            if config.pseudo_label_clusters is None:
                raise ValueError(
                    "ContrastiveHeadDetector needs labels (y): it learns a space where classes cluster "
                    "(or set pseudo_label_clusters to learn from k-means clusters of the rows)"
                )
            n_clusters = (
                auto_n_clusters(x.shape[0]) if config.pseudo_label_clusters == "auto" else int(config.pseudo_label_clusters)
            )
            y = spherical_kmeans(x - x.mean(axis=0), min(n_clusters, x.shape[0]), seed=seed)
        y = np.asarray(y)
        if y.shape != (x.shape[0],):
            raise ShapeError(f"y must have shape ({x.shape[0]},), got {y.shape}")
        unique, y_index = np.unique(y, return_inverse=True)
        if len(unique) < 2:
            raise ValueError(f"ContrastiveHeadDetector needs at least 2 classes, got {len(unique)}")
        feature_names = check_feature_names(feature_names, x.shape[1])
        self.n_features_in_ = x.shape[1]
        self.feature_names_in_ = feature_names
        self.classes_ = [c.item() if hasattr(c, "item") else c for c in unique]
        # Centre, then one global scale (the RMS norm of the centred rows): per-feature scaling would
        # reweight the directions of embeddings whose geometry is what the head should start from.
        self.mean_ = x.mean(axis=0)
        rms = float(np.sqrt(((x - self.mean_) ** 2).sum(axis=1).mean()))
        self.scale_ = np.full(x.shape[1], rms if rms > config.min_feature_scale else 1.0)

        generator = torch.Generator(device="cpu").manual_seed(seed)
        x_std = torch.as_tensor(self._standardize(x), dtype=torch.float32)
        energy = _build_energy(self.n_features_in_, config, seed)
        # Batches larger than the data would only repeat rows.
        train_config = config.train
        if train_config.batch_size > x.shape[0]:
            from dataclasses import replace

            train_config = replace(train_config, batch_size=x.shape[0])
        self.history_: TrainingHistory = train_energy(
            energy,
            SupervisedContrastive(config.contrastive_temperature),
            x_std,
            train_config,
            generator,
            callbacks,
            y_train=torch.as_tensor(y_index, dtype=torch.long),
            device=config.device,
        )
        energy = energy.eval()
        energy.set_reference(x_std.to(next(energy.parameters()).device))
        self.energy_ = energy
        return self

    def _saved_state(self, folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
        return self._trained_state()

    @classmethod
    def _from_saved(cls, folder: Path, metadata: dict, tensors: dict[str, torch.Tensor], device: str):
        from ebm_core.energies.kernel_density import KernelDensityEnergy

        config = ContrastiveHeadConfig.from_dict({**metadata["config"], "device": device})
        detector = cls(config)
        state = detector._restore_trained_state(metadata, tensors)
        energy = _build_energy(detector.n_features_in_, config, seed=0)
        energy.density = KernelDensityEnergy(state["density.reference"], config.density_temperature)
        energy.load_state_dict(state)
        detector.energy_ = energy.to(device).eval()
        return detector


def _build_energy(n_features: int, config: ContrastiveHeadConfig, seed: int) -> ContrastiveHeadEnergy:
    # Parameter init draws from torch's default generator; fork it so the global state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ContrastiveHeadEnergy(n_features, config.hidden_dims, config.feature_dim, config.density_temperature)
