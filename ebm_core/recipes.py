"""How a `DetectorConfig` becomes an energy and an objective: the one place that maps names to
classes, so configs and the command line can say `objective: dsm` and nothing else changes."""

from __future__ import annotations

import torch

from ebm_core.energies.classifier import ClassifierEnergy, ClassifierEnergyConfig
from ebm_core.energies.mlp import MLPEnergy, MLPEnergyConfig
from ebm_core.objectives import (
    ContrastiveDivergence,
    CrossEntropyObjective,
    DenoisingScoreMatching,
    EnergyMarginObjective,
    JEMHybrid,
    NoiseContrastiveEstimation,
    PersistentContrastiveDivergence,
    SlicedScoreMatching,
)
from ebm_core.replay_buffer import ReplayBuffer

OBJECTIVES = ("cd", "cdk", "dsm", "ssm", "nce", "ce", "jem", "margin")
LABELLED_OBJECTIVES = ("ce", "jem")  # need labels; "margin" uses them when given


def energy_kind(objective: str, has_labels: bool) -> str:
    """CE and JEM always read a classifier as an energy; margin training does when labels exist."""
    if objective in ("ce", "jem") or (objective == "margin" and has_labels):
        return "classifier"
    return "mlp"


def build_energy(kind: str, n_features: int, n_classes: int | None, config, seed: int) -> torch.nn.Module:
    # Parameter init draws from torch's default generator; fork it so the global state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "classifier":
            if n_classes is None or n_classes < 2:
                raise ValueError(f"a classifier energy needs at least 2 classes, got {n_classes}")
            return ClassifierEnergy(
                ClassifierEnergyConfig(
                    n_features, n_classes, config.hidden_dims, config.spectral_norm, config.temperature
                )
            )
        if kind == "mlp":
            return MLPEnergy(MLPEnergyConfig(n_features, config.hidden_dims, config.spectral_norm))
    raise ValueError(f"unknown energy kind {kind!r}; expected 'mlp' or 'classifier'")


def build_objective(config, x_std: torch.Tensor, outliers_std: torch.Tensor | None, generator: torch.Generator):
    """The training objective named by `config.objective`, on standardised features (N, D)."""
    name = config.objective
    if name in ("cd", "jem"):
        low, high = x_std.min(dim=0).values, x_std.max(dim=0).values
        margin = config.noise_margin * (high - low) + 1e-3
        buffer = ReplayBuffer(
            config.buffer_capacity, low - margin, high + margin, config.buffer_reinit_rate, generator
        )
        pcd = PersistentContrastiveDivergence(config.sampler, buffer, config.energy_l2)
        return JEMHybrid(pcd) if name == "jem" else pcd
    if name == "ce":
        return CrossEntropyObjective()
    if name == "cdk":
        return ContrastiveDivergence(config.sampler, energy_l2=config.energy_l2)
    if name == "dsm":
        return DenoisingScoreMatching(sigmas=config.dsm_sigmas)
    if name == "ssm":
        return SlicedScoreMatching(n_projections=config.ssm_projections, projection="gaussian", variance_reduction=True)
    if name == "nce":
        return NoiseContrastiveEstimation.fitted_to(
            x_std, noise_ratio=config.nce_noise_ratio, noise_scale=config.nce_noise_scale
        )
    if name == "margin":
        if outliers_std is None:
            raise ValueError("objective 'margin' needs auxiliary outliers (known-bad examples)")
        return EnergyMarginObjective(outliers_std, m_in=config.margin_in, m_out=config.margin_out)
    raise ValueError(f"unknown objective {name!r}; expected one of {', '.join(OBJECTIVES)}")


def feature_permuted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Synthetic outliers: each row's features shuffled, destroying structure but not marginals.

    Used by margin training when no known-bad examples are given; they must never be an evaluation
    OOD set, or the evaluation would leak."""
    order = torch.argsort(torch.rand(x.shape, generator=generator), dim=1)  # (N, D)
    return torch.gather(x, 1, order)
