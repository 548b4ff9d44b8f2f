from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ebm_core.objectives.base import ObjectiveConfig, ObjectiveContext, ObjectiveOutput
from ebm_core.samplers.noise import gaussian_noise


class DenoisingScoreMatching:
    """Denoising score matching (Vincent 2011), with one or several noise levels (Song & Ermon 2019).

    Each row gets a noise level sigma drawn uniformly from `sigmas`; x~ = x + sigma * z, z ~ N(0, I).
    The model score s(x~) = -grad E(x~) is regressed on the score of the noising kernel, -z / sigma,
    with the sigma^2 weighting that makes every level contribute on the same scale:

    loss = mean over rows of 0.5 * sigma^2 * |s(x~) + z / sigma|^2 = 0.5 * |sigma * s(x~) + z|^2

    The minimiser is the score of the data density smoothed by N(0, sigma^2 I), so a small sigma learns
    (nearly) the data score. Needs no sampling chain, but differentiates through a gradient.
    """

    needs_double_backward = True

    def __init__(self, sigmas: float | Sequence[float] = 0.1):
        sigmas = (float(sigmas),) if isinstance(sigmas, (int, float)) else tuple(float(s) for s in sigmas)
        if not sigmas or min(sigmas) <= 0:
            raise ValueError(f"sigmas must be one or more positive noise levels, got {sigmas}")
        self.sigmas = sigmas

    def __call__(self, energy_fn, x_data: torch.Tensor, generator: torch.Generator) -> ObjectiveOutput:
        n_rows = x_data.shape[0]
        levels = torch.tensor(self.sigmas, dtype=x_data.dtype)
        which = torch.randint(0, len(self.sigmas), (n_rows,), generator=generator, device=generator.device)
        sigma = levels[which.cpu()].to(x_data.device)[:, None]  # (B, 1)
        z = gaussian_noise(x_data.shape, generator, x_data.device, x_data.dtype)  # (B, D)
        x_noisy = (x_data + sigma * z).detach().requires_grad_(True)

        e_noisy = energy_fn(x_noisy)  # (B,)
        (grad,) = torch.autograd.grad(e_noisy.sum(), x_noisy, create_graph=True)  # (B, D) = -score
        loss = 0.5 * (z - sigma * grad).pow(2).sum(dim=1).mean()

        with torch.no_grad():
            e_pos = energy_fn(x_data)
        stats = {
            "e_pos": float(e_pos.mean()),
            "e_noisy": float(e_noisy.mean().detach()),
            "energy_gap": float((e_noisy.mean() - e_pos.mean()).detach()),
            "score_norm": float(grad.detach().norm(dim=1).mean()),
        }
        return ObjectiveOutput(loss=loss, stats=stats)


@dataclass(frozen=True)
class DSMConfig(ObjectiveConfig):
    name = "dsm"
    sigmas: tuple[float, ...] = (0.1, 0.3, 1.0)  # noise levels on standardised features

    def build(self, context: ObjectiveContext) -> DenoisingScoreMatching:
        return DenoisingScoreMatching(sigmas=self.sigmas)
