from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ebm_core.objectives.base import ObjectiveConfig, ObjectiveContext, ObjectiveOutput
from ebm_core.samplers.noise import gaussian_noise
from ebm_core.shapes import check_batch


class GaussianNoise:
    """N(mean, covariance) with `sample(n, generator)` and `log_prob(x)`: the usual NCE noise."""

    def __init__(self, mean: torch.Tensor, covariance: torch.Tensor):
        mean = torch.as_tensor(mean, dtype=torch.float32)
        covariance = torch.as_tensor(covariance, dtype=torch.float32)
        if mean.ndim != 1 or covariance.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(
                f"mean must be (D,) and covariance (D, D); got {tuple(mean.shape)}, {tuple(covariance.shape)}"
            )
        self.mean = mean
        self.covariance = covariance
        self.cholesky = torch.linalg.cholesky(covariance)
        dim = mean.shape[0]
        log_det = 2.0 * torch.log(torch.diagonal(self.cholesky)).sum()
        self.log_constant = -0.5 * (dim * math.log(2 * math.pi) + float(log_det))

    @classmethod
    def fit(cls, x: torch.Tensor, scale: float = 1.0, jitter: float = 1e-4) -> "GaussianNoise":
        """The Gaussian with x's mean and covariance, its standard deviations multiplied by `scale`."""
        x = check_batch(x, name="x").detach().float().cpu()  # (N, D)
        if x.shape[0] < 2:
            raise ValueError("fitting a Gaussian needs at least 2 rows")
        centred = x - x.mean(dim=0)
        covariance = centred.T @ centred / (x.shape[0] - 1)
        covariance = scale**2 * covariance + jitter * torch.eye(x.shape[1])
        return cls(x.mean(dim=0), covariance)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = gaussian_noise((n, self.mean.shape[0]), generator, self.mean.device, self.mean.dtype)
        return self.mean + z @ self.cholesky.T  # (n, D)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        mean, cholesky = self.mean.to(x.device, x.dtype), self.cholesky.to(x.device, x.dtype)
        # Solve L u = (x - mean)^T, so |u|^2 is the Mahalanobis distance.
        u = torch.linalg.solve_triangular(cholesky, (x - mean).T, upper=False)  # (D, B)
        return self.log_constant - 0.5 * u.pow(2).sum(dim=0)


class NoiseContrastiveEstimation:
    """NCE (Gutmann & Hyvarinen 2010): tell data from noise with the model's own log-density.

    log p_model(x) = -E(x) - c, with c a learned log-normaliser. For nu = `noise_ratio` noise draws per
    data row and G(x) = log p_model(x) - log p_noise(x) - log nu,

    loss = mean softplus(-G(x_data)) + nu * mean softplus(G(x_noise))

    At the optimum p_model = p_data, so c converges to log integral exp(-E): the model becomes
    self-normalised. `noise` is any object with `sample(n, generator)` and `log_prob(x)`;
    `NoiseContrastiveEstimation.fitted_to(x_train)` uses a Gaussian fitted to the training data.
    The objective owns the trainable `log_normaliser`: `train_energy` optimises it with the energy and
    keeps it in checkpoints (`parameters()`, `state_dict()`).
    """

    def __init__(self, noise, noise_ratio: int = 1, initial_log_normaliser: float = 0.0):
        if noise_ratio < 1:
            raise ValueError(f"noise_ratio must be >= 1, got {noise_ratio}")
        for method in ("sample", "log_prob"):
            if not callable(getattr(noise, method, None)):
                raise TypeError(f"noise must have a {method}() method, got {type(noise).__name__}")
        self.noise = noise
        self.noise_ratio = int(noise_ratio)
        self.log_normaliser = torch.nn.Parameter(torch.tensor(float(initial_log_normaliser)))

    @classmethod
    def fitted_to(cls, x_train: torch.Tensor, noise_ratio: int = 1, noise_scale: float = 1.0, **kwargs):
        return cls(GaussianNoise.fit(x_train, scale=noise_scale), noise_ratio=noise_ratio, **kwargs)

    def __call__(self, energy_fn, x_data: torch.Tensor, generator: torch.Generator) -> ObjectiveOutput:
        x_noise = self.noise.sample(self.noise_ratio * x_data.shape[0], generator)
        x_noise = x_noise.to(x_data.device, x_data.dtype)  # (nu * B, D)
        log_nu = math.log(self.noise_ratio)
        e_pos, e_neg = energy_fn(x_data), energy_fn(x_noise)  # (B,), (nu*B,)
        g_data = -e_pos - self.log_normaliser - self.noise.log_prob(x_data) - log_nu
        g_noise = -e_neg - self.log_normaliser - self.noise.log_prob(x_noise) - log_nu
        loss = F.softplus(-g_data).mean() + self.noise_ratio * F.softplus(g_noise).mean()
        stats = {
            "e_pos": float(e_pos.mean().detach()),
            "e_neg": float(e_neg.mean().detach()),
            "energy_gap": float((e_neg.mean() - e_pos.mean()).detach()),
            "log_normaliser": float(self.log_normaliser.detach()),
            "nce_accuracy": float(torch.cat([g_data > 0, g_noise < 0]).float().mean()),
        }
        return ObjectiveOutput(loss=loss, stats=stats)

    # ---- trainable state, used by train_energy ------------------------------------------------
    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_normaliser]

    def to(self, device) -> "NoiseContrastiveEstimation":
        self.log_normaliser.data = self.log_normaliser.data.to(device)
        return self

    def state_dict(self) -> dict:
        return {"log_normaliser": self.log_normaliser.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.log_normaliser.copy_(state["log_normaliser"])


@dataclass(frozen=True)
class NCEConfig(ObjectiveConfig):
    """NCE against a Gaussian fitted to the standardised training rows, its spread scaled by noise_scale."""

    name = "nce"
    noise_ratio: int = 4
    noise_scale: float = 1.5

    def build(self, context: ObjectiveContext) -> NoiseContrastiveEstimation:
        return NoiseContrastiveEstimation.fitted_to(
            context.x_train, noise_ratio=self.noise_ratio, noise_scale=self.noise_scale
        )
