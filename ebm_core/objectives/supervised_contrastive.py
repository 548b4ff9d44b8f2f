"""Supervised contrastive loss (Khosla et al. 2020) for a feature head.

For a batch of unit features z (B, d) and labels y: each anchor i is pulled towards the other rows of
its class and pushed from every other row,
    loss_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a != i} exp(z_i.z_a / tau) ),
averaged over anchors that have at least one positive in the batch. The model must expose
`features(x) -> (B, d)` unit vectors (a `ContrastiveHeadEnergy`). Nothing generative: the energy is
read afterwards as a kernel density in the learned space.
"""

from __future__ import annotations

import math

import torch

from ebm_core.objectives.base import ObjectiveOutput
from ebm_core.objectives.labelled import check_labels, split_batch


class SupervisedContrastive:
    accepts_labels = True
    requires_labels = True

    def __init__(self, temperature: float = 0.1):
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, model, batch, generator: torch.Generator) -> ObjectiveOutput:
        x, y = split_batch(batch)
        if y is None:
            raise ValueError("SupervisedContrastive needs labelled batches: pass y_train to train_energy")
        y = check_labels(y, x.shape[0])
        if not callable(getattr(model, "features", None)):
            raise TypeError(f"SupervisedContrastive needs a model with features(x), got {type(model).__name__}")
        z = model.features(x)  # (B, d), unit rows
        logits = z @ z.T / self.temperature  # (B, B)
        self_mask = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (B, B), -inf on the diagonal
        positives = (y[:, None] == y[None, :]) & ~self_mask  # (B, B)
        n_pos = positives.sum(dim=1)  # (B,)
        anchors = n_pos > 0
        if not bool(anchors.any()):
            raise ValueError(
                "no two rows of this batch share a label: SupervisedContrastive needs a batch larger than "
                "the number of classes (raise batch_size)"
            )
        pos_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)  # (B,)
        loss = -(pos_log_prob[anchors] / n_pos[anchors]).mean()
        return ObjectiveOutput(
            loss=loss, stats={"supcon_loss": float(loss.detach()), "anchors": float(anchors.float().mean())}
        )
