from __future__ import annotations

import math

import torch

from ebm_core.energies.base import EnergyFunction
from ebm_core.samplers.noise import gaussian_noise
from ebm_core.shapes import check_batch


class MixtureOfGaussiansEnergy(EnergyFunction):
    """E(x) = -log sum_k w_k N(x; mean_k, covariance_k): a known-answer multimodal energy.

    exp(-E) is the normalised mixture density, so `log_prob(x) = -E(x)`; `sample` draws exactly from it.
    `covariances` is (K, D, D), or (D, D) shared by every component; `weights` (K,) default to uniform.
    """

    def __init__(self, means: torch.Tensor, covariances: torch.Tensor, weights: torch.Tensor | None = None):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float32)
        covariances = torch.as_tensor(covariances, dtype=torch.float32)
        if means.ndim != 2:
            raise ValueError(f"means must be (K, D), got {tuple(means.shape)}")
        n_components, dim = means.shape
        if covariances.shape == (dim, dim):
            covariances = covariances.expand(n_components, dim, dim).clone()
        if covariances.shape != (n_components, dim, dim):
            raise ValueError(
                f"covariances must be ({n_components}, {dim}, {dim}) or ({dim}, {dim}), "
                f"got {tuple(covariances.shape)}"
            )
        if weights is None:
            weights = torch.full((n_components,), 1.0 / n_components)
        weights = torch.as_tensor(weights, dtype=torch.float32)
        valid = weights.shape == (n_components,) and bool((weights >= 0).all())
        if not valid or not math.isclose(float(weights.sum()), 1.0, rel_tol=1e-5):
            raise ValueError(f"weights must be ({n_components},), non-negative and sum to 1, got {weights.tolist()}")
        self.input_dim = dim
        cholesky = torch.linalg.cholesky(covariances)  # (K, D, D), raises if not positive definite
        self.register_buffer("means", means)
        self.register_buffer("covariances", covariances)
        self.register_buffer("weights", weights)
        self.register_buffer("cholesky", cholesky)
        self.register_buffer("precisions", torch.cholesky_inverse(cholesky))
        # log w_k - 0.5 log det(2 pi covariance_k)
        log_det = 2.0 * torch.log(torch.diagonal(cholesky, dim1=1, dim2=2)).sum(dim=1)
        log_coefficients = torch.log(weights) - 0.5 * (dim * math.log(2 * math.pi) + log_det)
        self.register_buffer("log_coefficients", log_coefficients)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        # (B, D) -> (B, K): log w_k + log N(x; mean_k, covariance_k)
        centred = x[:, None, :] - self.means[None]  # (B, K, D)
        mahalanobis = torch.einsum("bki,kij,bkj->bk", centred, self.precisions, centred)
        return self.log_coefficients[None] - 0.5 * mahalanobis

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.logsumexp(self.component_log_probs(x), dim=1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -self.forward(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """-grad E(x) = sum_k r_k(x) precision_k (mean_k - x), r = component responsibilities."""
        check_batch(x, self.input_dim)
        responsibilities = torch.softmax(self.component_log_probs(x), dim=1)  # (B, K)
        pulls = torch.einsum("kij,bkj->bki", self.precisions, self.means[None] - x[:, None, :])
        return (responsibilities[..., None] * pulls).sum(dim=1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, component): n exact draws (n, D) and the component each came from (n,)."""
        component = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator)
        component = component.to(self.means.device)
        z = gaussian_noise((n, self.input_dim), generator, self.means.device, self.means.dtype)
        x = self.means[component] + torch.einsum("bij,bj->bi", self.cholesky[component], z)
        return x, component
