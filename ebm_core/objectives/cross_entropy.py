from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ebm_core.objectives.base import ObjectiveConfig, ObjectiveContext, ObjectiveOutput
from ebm_core.objectives.labelled import class_logits, split_batch


class CrossEntropyObjective:
    """loss = CE(f(x), y) for an energy with `logits(x)`; nothing generative.

    The classifier's OOD score is then its free energy E(x) = -T logsumexp(f(x) / T) (Liu et al. 2020).
    """

    accepts_labels = True
    requires_labels = True

    def __call__(self, energy_fn, batch, generator: torch.Generator) -> ObjectiveOutput:
        x, y = split_batch(batch)
        if y is None:
            raise ValueError("CrossEntropyObjective needs labelled batches: pass y_train to train_energy")
        logits, y = class_logits(energy_fn, x, y, "CrossEntropyObjective")  # (B, K), (B,)
        loss = F.cross_entropy(logits, y)
        stats = {
            "ce_loss": float(loss.detach()),
            "train_accuracy": float((logits.argmax(dim=1) == y).float().mean()),
        }
        return ObjectiveOutput(loss=loss, stats=stats)


@dataclass(frozen=True)
class CEConfig(ObjectiveConfig):
    name = "ce"
    labels = "required"

    def build(self, context: ObjectiveContext) -> CrossEntropyObjective:
        return CrossEntropyObjective()
