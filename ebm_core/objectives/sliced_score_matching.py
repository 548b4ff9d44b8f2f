from __future__ import annotations

from dataclasses import dataclass

import torch

from ebm_core.objectives.base import ObjectiveConfig, ObjectiveContext, ObjectiveOutput
from ebm_core.samplers.noise import gaussian_noise, uniform_noise


class SlicedScoreMatching:
    """Sliced score matching (Song et al. 2019): Hyvarinen's score matching along random directions.

    With the model score s(x) = -grad E(x) and random projections v (E[v v^T] = I):

    loss = mean over rows and projections of  v^T (d s / dx) v + 0.5 (v^T s(x))^2
         = mean of  -v^T H_E(x) v + 0.5 (v^T grad E(x))^2

    Its minimiser is the data score, without knowing it (one Hessian-vector product per projection).
    `projection` is "rademacher" (entries +-1) or "gaussian"; `variance_reduction` (Gaussian only)
    replaces 0.5 (v^T s)^2 by its expectation 0.5 |s|^2 (SSM-VR).
    """

    needs_double_backward = True

    def __init__(self, n_projections: int = 1, projection: str = "rademacher", variance_reduction: bool = False):
        if n_projections < 1:
            raise ValueError(f"n_projections must be >= 1, got {n_projections}")
        if projection not in ("rademacher", "gaussian"):
            raise ValueError(f"projection must be 'rademacher' or 'gaussian', got {projection!r}")
        if variance_reduction and projection != "gaussian":
            raise ValueError("variance_reduction needs gaussian projections")
        self.n_projections = n_projections
        self.projection = projection
        self.variance_reduction = variance_reduction

    def __call__(self, energy_fn, x_data: torch.Tensor, generator: torch.Generator) -> ObjectiveOutput:
        x = x_data.repeat(self.n_projections, 1).detach().requires_grad_(True)  # (P*B, D)
        if self.projection == "gaussian":
            v = gaussian_noise(x.shape, generator, x.device, x.dtype)
        else:
            v = (uniform_noise(x.shape, generator, x.device, x.dtype) < 0.5).to(x.dtype) * 2.0 - 1.0

        energy = energy_fn(x)  # (P*B,)
        (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)  # (P*B, D) = -score
        grad_v = (grad * v).sum(dim=1)  # (P*B,) = v^T grad E
        (hessian_v,) = torch.autograd.grad(grad_v.sum(), x, create_graph=True)  # (P*B, D) = H v
        curvature = (v * hessian_v).sum(dim=1)  # v^T H v
        if self.variance_reduction:
            norm_term = 0.5 * grad.pow(2).sum(dim=1)
        else:
            norm_term = 0.5 * grad_v.pow(2)
        loss = (norm_term - curvature).mean()

        e_pos = energy[: x_data.shape[0]].detach()
        stats = {"e_pos": float(e_pos.mean()), "score_norm": float(grad.detach().norm(dim=1).mean())}
        return ObjectiveOutput(loss=loss, stats=stats)


@dataclass(frozen=True)
class SSMConfig(ObjectiveConfig):
    name = "ssm"
    n_projections: int = 1
    projection: str = "gaussian"  # Gaussian projections allow the variance-reduced form
    variance_reduction: bool = True

    def build(self, context: ObjectiveContext) -> SlicedScoreMatching:
        return SlicedScoreMatching(self.n_projections, self.projection, self.variance_reduction)
