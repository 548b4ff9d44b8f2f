"""What detectors with a trained torch energy on standardised rows share (EnergyDetector,
ContrastiveHeadDetector): scoring in chunks, the standardiser, and the saved state common to both
(energy weights, standardiser, classes, training history). Each kind adds what is its own."""

from __future__ import annotations

import numpy as np
import torch

from ebm_core.detectors.base import Detector, energies_in_chunks
from ebm_core.training import TrainingHistory

SCORE_BATCH_SIZE = 4096  # rows per forward pass when scoring


class TrainedEnergyDetector(Detector):
    """Fitted state every subclass sets: `mean_`, `scale_`, `classes_`, `energy_` (a torch module on
    standardised rows), `history_`."""

    def _is_fitted(self) -> bool:
        return "energy_" in vars(self)

    def _energies(self, x: np.ndarray) -> np.ndarray:
        device = next(self.energy_.parameters()).device
        return energies_in_chunks(self.energy_, self._standardize(x), SCORE_BATCH_SIZE, device)

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) / self.scale_

    def _trained_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        tensors = {f"energy.{k}": v for k, v in self.energy_.state_dict().items()}
        tensors["standardizer.mean"] = torch.as_tensor(self.mean_)
        tensors["standardizer.scale"] = torch.as_tensor(self.scale_)
        metadata = {
            "config": self.config.to_dict(),
            "classes": self.classes_,
            "history": self.history_.to_dict() if "history_" in vars(self) else None,
        }
        return metadata, tensors

    def _restore_trained_state(self, metadata: dict, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Set the shared fitted attributes (not `energy_`); returns the energy's state dict."""
        self.n_features_in_ = int(metadata["n_features_in"])
        self.feature_names_in_ = metadata["feature_names_in"]
        self.classes_ = metadata.get("classes")
        self.mean_ = tensors["standardizer.mean"].numpy()
        self.scale_ = tensors["standardizer.scale"].numpy()
        if metadata.get("history"):
            self.history_ = TrainingHistory.from_dict(metadata["history"])
        return {k[len("energy.") :]: v for k, v in tensors.items() if k.startswith("energy.")}
