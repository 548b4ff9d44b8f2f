"""Training objectives: each turns a batch of data into a loss and a few telemetry numbers.

An objective is a callable `objective(energy_fn, batch, generator) -> ObjectiveOutput(loss, stats)`.
Optional extras that `train_energy` uses when present:
- `parameters()`: extra trainable tensors (NCE's log-normaliser), optimised with the energy's;
- `state_dict()` / `load_state_dict(state)`: state that must survive a checkpoint (PCD's replay buffer);
- `to(device)`: move that state;
- `accepts_labels` / `requires_labels`: the batch is a `LabelledBatch(x, y)` when `y_train` is given;
- `needs_double_backward`: the loss differentiates through grad E (score matching), so the energy
  cannot be `torch.compile`d.
"""

from ebm_core.objectives.base import ObjectiveOutput
from ebm_core.objectives.contrastive_divergence import ContrastiveDivergence, PersistentContrastiveDivergence
from ebm_core.objectives.cross_entropy import CrossEntropyObjective
from ebm_core.objectives.denoising_score_matching import DenoisingScoreMatching
from ebm_core.objectives.energy_margin import EnergyMarginObjective
from ebm_core.objectives.jem import JEMHybrid
from ebm_core.objectives.labelled import LabelledBatch
from ebm_core.objectives.noise_contrastive_estimation import GaussianNoise, NoiseContrastiveEstimation
from ebm_core.objectives.sliced_score_matching import SlicedScoreMatching

__all__ = [
    "ContrastiveDivergence",
    "CrossEntropyObjective",
    "DenoisingScoreMatching",
    "EnergyMarginObjective",
    "GaussianNoise",
    "JEMHybrid",
    "LabelledBatch",
    "NoiseContrastiveEstimation",
    "ObjectiveOutput",
    "PersistentContrastiveDivergence",
    "SlicedScoreMatching",
]
