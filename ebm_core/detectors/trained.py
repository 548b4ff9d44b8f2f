"""What detectors with a trained torch energy on standardised rows share (EnergyDetector,
ContrastiveHeadDetector): scoring in chunks, the standardiser, and the saved state common to both
(energy weights, standardiser, classes, training history). Each kind adds what is its own."""

from __future__ import annotations

import numpy as np
import torch

from ebm_core.detectors.base import Detector, energies_in_chunks
from ebm_core.energies.base import EnergyFunction
from ebm_core.training import TrainingHistory

SCORE_BATCH_SIZE = 4096  # rows per forward pass when scoring (the most; see score_chunk_rows)
SCORE_CHUNK_VALUES = 1 << 18  # values per scoring chunk: a float64 chunk of 2 MiB stays in cache


def score_chunk_rows(n_features: int) -> int:
    """Rows per scoring chunk: about SCORE_CHUNK_VALUES values, between 256 and SCORE_BATCH_SIZE rows."""
    return max(256, min(SCORE_BATCH_SIZE, SCORE_CHUNK_VALUES // max(n_features, 1)))


def _unchecked_forward(energy):
    """energy's forward without the per-batch finiteness read-back (the caller checked the rows)."""
    return energy.unchecked_forward() if isinstance(energy, EnergyFunction) else energy


class TrainedEnergyDetector(Detector):
    """Fitted state every subclass sets: `mean_`, `scale_`, `classes_`, `energy_` (a torch module on
    standardised rows), `history_`."""

    def _is_fitted(self) -> bool:
        return "energy_" in vars(self)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Energy per row, shape (N,), float64; higher = more OOD (see `Detector.score`).

        Float arrays of the right shape take the chunked path: no float64 copy of the whole input, each
        chunk checked, standardised and scored while it is in cache. Anything else, and any input the
        chunked path finds non-finite, goes through `Detector.score`, which raises its usual errors.
        """
        self._check_fitted()
        x_array = x if isinstance(x, np.ndarray) else None
        if x_array is not None and x_array.ndim == 2 and x_array.shape[1] == self.n_features_in_:
            if x_array.dtype.kind == "f":
                energies = self._chunked_energies(x_array)
                if energies is not None and np.isfinite(energies).all():
                    return energies
        return super().score(x)

    def _energies(self, x: np.ndarray) -> np.ndarray:
        energies = self._chunked_energies(x)
        if energies is not None:
            return energies
        device = next(self.energy_.parameters()).device  # the chunk overflowed: let the energy say so
        return energies_in_chunks(self.energy_, self._standardize(x), SCORE_BATCH_SIZE, device)

    def _chunked_energies(self, x: np.ndarray) -> np.ndarray | None:
        """Energies (N,) as float64, or None when a standardised row is not finite (nothing raised).

        Per chunk: (x - mean_) / scale_ in float64, as `_standardize` does, into a reused buffer; cast
        to float32, as the float32 energy reads it; forward under inference_mode. The values are those
        of `energies_in_chunks(energy_, _standardize(x))` up to the chunking of the matrix products."""
        n_rows, n_features = x.shape
        energy = self.energy_
        device = next(energy.parameters()).device
        rows = score_chunk_rows(n_features)
        out = torch.empty(n_rows, dtype=torch.float32)  # (N,)
        if n_rows == 0:
            return out.double().numpy()
        mean, scale = np.asarray(self.mean_, dtype=np.float64), np.asarray(self.scale_, dtype=np.float64)
        buffer = np.empty((min(rows, n_rows), n_features), dtype=np.float64)  # (chunk, D)
        buffer_32 = torch.empty(buffer.shape, dtype=torch.float32)
        forward = _unchecked_forward(energy)
        with torch.inference_mode():
            for start in range(0, n_rows, rows):
                chunk = x[start : start + rows]
                n = chunk.shape[0]
                standardized = np.subtract(chunk, mean, out=buffer[:n])
                np.divide(standardized, scale, out=standardized)
                rows_32 = buffer_32[:n].copy_(torch.from_numpy(standardized))
                # one pass: the sum is finite when every value is; a finite chunk whose sum overflows
                # only goes to the checked path (None)
                if not torch.isfinite(rows_32.sum()):
                    return None
                out[start : start + n] = forward(rows_32.to(device)).cpu()
        return out.double().numpy()

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
