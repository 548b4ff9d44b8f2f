"""Training objectives: each turns a batch of data into a loss and a few telemetry numbers."""

from ebm_core.objectives.base import ObjectiveOutput
from ebm_core.objectives.contrastive_divergence import PersistentContrastiveDivergence

__all__ = ["ObjectiveOutput", "PersistentContrastiveDivergence"]
