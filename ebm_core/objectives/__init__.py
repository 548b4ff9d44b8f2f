"""Training objectives: each turns a batch of data into a loss and a few telemetry numbers.

An objective is a callable `objective(energy_fn, batch, generator) -> ObjectiveOutput(loss, stats)`.
Optional extras that `train_energy` uses when present:
- `parameters()`: extra trainable tensors (NCE's log-normaliser), optimised with the energy's;
- `state_dict()` / `load_state_dict(state)`: state that must survive a checkpoint (PCD's replay buffer);
- `to(device)`: move that state;
- `accepts_labels` / `requires_labels`: the batch is a `LabelledBatch(x, y)` when `y_train` is given;
- `needs_double_backward`: the loss differentiates through grad E (score matching), so the energy
  cannot be `torch.compile`d.

Each objective has its own frozen config (`CDConfig`, `DSMConfig`, ...) that builds it from an
`ObjectiveContext`; `OBJECTIVES` maps the names used in YAML to those config classes.
"""

from ebm_core.config_dict import from_plain
from ebm_core.objectives.base import ObjectiveConfig, ObjectiveContext, ObjectiveOutput
from ebm_core.objectives.contrastive_divergence import (
    CDConfig,
    CDKConfig,
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
)
from ebm_core.objectives.cross_entropy import CEConfig, CrossEntropyObjective
from ebm_core.objectives.denoising_score_matching import DenoisingScoreMatching, DSMConfig
from ebm_core.objectives.energy_margin import EnergyMarginObjective, MarginConfig
from ebm_core.objectives.jem import JEMConfig, JEMHybrid
from ebm_core.objectives.labelled import LabelledBatch
from ebm_core.objectives.noise_contrastive_estimation import GaussianNoise, NCEConfig, NoiseContrastiveEstimation
from ebm_core.objectives.sliced_score_matching import SlicedScoreMatching, SSMConfig

OBJECTIVES: dict[str, type[ObjectiveConfig]] = {
    config.name: config
    for config in (CDConfig, CDKConfig, DSMConfig, SSMConfig, NCEConfig, CEConfig, JEMConfig, MarginConfig)
}


def objective_config(name: str, **fields) -> ObjectiveConfig:
    """The config of the objective called `name` (YAML's `objective: {name: ..., **fields}`)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {', '.join(OBJECTIVES)}")
    return from_plain(OBJECTIVES[name], fields, f"objective {name!r}")


__all__ = [
    "CDConfig",
    "CDKConfig",
    "CEConfig",
    "ContrastiveDivergence",
    "CrossEntropyObjective",
    "DSMConfig",
    "DenoisingScoreMatching",
    "EnergyMarginObjective",
    "GaussianNoise",
    "JEMConfig",
    "JEMHybrid",
    "LabelledBatch",
    "MarginConfig",
    "NCEConfig",
    "NoiseContrastiveEstimation",
    "OBJECTIVES",
    "ObjectiveConfig",
    "ObjectiveContext",
    "ObjectiveOutput",
    "PersistentContrastiveDivergence",
    "SSMConfig",
    "SlicedScoreMatching",
    "objective_config",
]
