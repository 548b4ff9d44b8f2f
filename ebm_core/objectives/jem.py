from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ebm_core.objectives.base import ObjectiveConfig, ObjectiveContext, ObjectiveOutput
from ebm_core.objectives.contrastive_divergence import PersistentContrastiveDivergence, replay_buffer_for
from ebm_core.objectives.labelled import LabelledBatch, class_logits, split_batch


class JEMHybrid:
    """The JEM hybrid (Grathwohl et al. 2020): a classifier that is also an energy model.

    With logits f(x) (B, K) from a `ClassifierEnergy` and E(x) = -T logsumexp(f(x) / T):

    loss = ce_weight * CE(f(x), y) + generative_weight * generative(E, x).loss

    `generative` is a `ContrastiveDivergence` (CD-k) or `PersistentContrastiveDivergence` (the paper's
    choice: SGLD from a replay buffer); it samples from and trains the logsumexp energy. Batches come
    as `LabelledBatch(x, y)`: pass `y_train` to `train_energy`.
    """

    accepts_labels = True
    requires_labels = True

    def __init__(self, generative, ce_weight: float = 1.0, generative_weight: float = 1.0):
        if ce_weight < 0 or generative_weight < 0:
            raise ValueError(f"weights must be >= 0, got {ce_weight}, {generative_weight}")
        self.generative = generative
        self.ce_weight = ce_weight
        self.generative_weight = generative_weight

    def __call__(self, energy_fn, batch: LabelledBatch, generator: torch.Generator) -> ObjectiveOutput:
        x, y = split_batch(batch)
        if y is None:
            raise ValueError("JEMHybrid needs labelled batches: pass y_train to train_energy")
        logits, y = class_logits(energy_fn, x, y, "JEMHybrid")  # (B, K), (B,)
        ce = F.cross_entropy(logits, y)
        generative = self.generative(energy_fn, x, generator)
        loss = self.ce_weight * ce + self.generative_weight * generative.loss
        stats = {
            **generative.stats,
            "ce_loss": float(ce.detach()),
            "train_accuracy": float((logits.argmax(dim=1) == y).float().mean()),
        }
        return ObjectiveOutput(loss=loss, stats=stats)

    def state_dict(self) -> dict:
        return self.generative.state_dict() if hasattr(self.generative, "state_dict") else {}

    def load_state_dict(self, state: dict) -> None:
        if hasattr(self.generative, "load_state_dict"):
            self.generative.load_state_dict(state)


@dataclass(frozen=True)
class JEMConfig(ObjectiveConfig):
    """JEM with the paper's generative term: PCD from a replay buffer (the fields of `CDConfig`)."""

    name = "jem"
    labels = "required"
    buffer_capacity: int = 10_000
    buffer_reinit_rate: float = 0.05
    noise_margin: float = 0.25
    energy_l2: float = 0.01
    ce_weight: float = 1.0
    generative_weight: float = 1.0

    def build(self, context: ObjectiveContext) -> JEMHybrid:
        buffer = replay_buffer_for(
            context.x_train, self.buffer_capacity, self.buffer_reinit_rate, self.noise_margin, context.generator
        )
        pcd = PersistentContrastiveDivergence(context.sampler, buffer, self.energy_l2)
        return JEMHybrid(pcd, ce_weight=self.ce_weight, generative_weight=self.generative_weight)
