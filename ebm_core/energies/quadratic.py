from __future__ import annotations

import math

import torch
from torch import nn

from ebm_core.energies.base import EnergyFunction


class QuadraticEnergy(EnergyFunction):
    """A trainable Gaussian energy: E(x) = 0.5 |L^T (x - mean)|^2, precision = L L^T.

    L is lower-triangular with a positive (exp-parametrised) diagonal, so the precision is always
    positive definite and the normaliser has a closed form:
    log Z = log integral exp(-E) = D/2 log(2 pi) - sum_i log L_ii.
    The simplest trainable energy with a known answer for score matching and NCE.
    """

    def __init__(self, input_dim: int):
        super().__init__()
        self.input_dim = input_dim
        self.mean = nn.Parameter(torch.zeros(input_dim))
        self.log_diagonal = nn.Parameter(torch.zeros(input_dim))
        self.off_diagonal = nn.Parameter(torch.zeros(input_dim, input_dim))

    def cholesky_factor(self) -> torch.Tensor:
        lower = torch.tril(self.off_diagonal, diagonal=-1)
        return lower + torch.diag(torch.exp(self.log_diagonal))  # (D, D)

    def precision(self) -> torch.Tensor:
        factor = self.cholesky_factor()
        return factor @ factor.T

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        projected = (x - self.mean) @ self.cholesky_factor()  # (B, D): rows are (L^T (x - mean))^T
        return 0.5 * projected.pow(2).sum(dim=1)

    def log_normaliser(self) -> torch.Tensor:
        return 0.5 * self.input_dim * math.log(2 * math.pi) - self.log_diagonal.sum()
