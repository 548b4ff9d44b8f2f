"""KernelDensityDetector: a label-free, non-parametric detector, the energy of a von Mises-Fisher kernel
density on the training rows (`ebm_core.energies.kernel_density.KernelDensityEnergy`).

No standardisation: the kernel compares directions (cosines), which is what sentence embeddings encode.
Fitted state: `n_features_in_`, `feature_names_in_`, `energy_`. Saved as the reference rows (unit
vectors, safetensors) and the temperature (JSON).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ebm_core.detectors.base import Detector, check_feature_names, check_features, energies_in_chunks
from ebm_core.energies.kernel_density import KernelDensityEnergy

SCORE_BATCH_SIZE = 1024  # query rows per block; the energy blocks the reference rows itself


class KernelDensityDetector(Detector):
    kind = "kernel_density"

    def __init__(self, temperature: float = 0.05):
        self.temperature = temperature

    def fit(
        self, x: np.ndarray, y: np.ndarray | None = None, *, feature_names: list[str] | None = None
    ) -> "KernelDensityDetector":
        """Keep the training rows as the kernel's reference; y is ignored (label-free)."""
        x = check_features(x, "x")
        self._reset_fitted_state()
        feature_names = check_feature_names(feature_names, x.shape[1])
        self.energy_ = KernelDensityEnergy(torch.as_tensor(x, dtype=torch.float32), self.temperature).eval()
        self.n_features_in_ = x.shape[1]
        self.feature_names_in_ = feature_names
        return self

    def _is_fitted(self) -> bool:
        return "energy_" in vars(self)

    def _energies(self, x: np.ndarray) -> np.ndarray:
        return energies_in_chunks(self.energy_, x, SCORE_BATCH_SIZE, self.energy_.reference.device)

    def _saved_state(self, folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
        return {"temperature": self.temperature}, {f"energy.{k}": v for k, v in self.energy_.state_dict().items()}

    @classmethod
    def _from_saved(cls, folder: Path, metadata: dict, tensors: dict[str, torch.Tensor], device: str):
        detector = cls(temperature=float(metadata["temperature"]))
        state = {k[len("energy.") :]: v for k, v in tensors.items() if k.startswith("energy.")}
        energy = KernelDensityEnergy(state["reference"], detector.temperature)
        # The saved rows are already unit vectors; loading them as the state (not only through the
        # constructor, which normalises again and may move them by an ulp) makes scores identical.
        energy.load_state_dict(state)
        detector.energy_ = energy.to(device).eval()
        detector.n_features_in_ = int(metadata["n_features_in"])
        detector.feature_names_in_ = metadata["feature_names_in"]
        return detector
