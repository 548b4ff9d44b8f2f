from __future__ import annotations

import torch

from ebm_core.energies.base import EnergyFunction


class GaussianEnergy(EnergyFunction):
    """E(x) = 0.5 (x - mean)^T precision (x - mean): the known-answer energy of N(mean, covariance)."""

    def __init__(self, mean: torch.Tensor, covariance: torch.Tensor):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32)
        covariance = torch.as_tensor(covariance, dtype=torch.float32)
        if mean.ndim != 1 or covariance.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(
                f"mean must be (D,) and covariance (D, D); got {tuple(mean.shape)} and {tuple(covariance.shape)}"
            )
        self.input_dim = mean.shape[0]
        self.register_buffer("mean", mean)
        self.register_buffer("covariance", covariance)
        self.register_buffer("precision", torch.linalg.inv(covariance))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self.mean  # (B, D)
        return 0.5 * torch.einsum("bi,ij,bj->b", centred, self.precision, centred)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The true score, -grad E(x) = -precision (x - mean), for known-answer tests."""
        return -(x - self.mean) @ self.precision
