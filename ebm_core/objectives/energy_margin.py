from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ebm_core.objectives.base import ObjectiveConfig, ObjectiveContext, ObjectiveOutput
from ebm_core.objectives.labelled import LabelledBatch, class_logits, split_batch
from ebm_core.shapes import check_batch


class EnergyMarginObjective:
    """Energy-margin training with auxiliary outliers (Liu et al. 2020, "Energy-based OOD detection").

    For users who hold some known-bad examples. Each step draws `outlier_batch_size` rows (default: the
    data batch size) from `outliers` and penalises in-distribution energies above m_in and outlier
    energies below m_out with squared hinges:

    loss = ce_weight * CE(f(x), y)   (labelled batches and an energy with logits only)
         + margin_weight * (mean relu(E(x_in) - m_in)^2 + mean relu(m_out - E(x_out))^2)

    The paper's values for a CIFAR-10 classifier are m_in = -25, m_out = -7, margin_weight = 0.1; the
    defaults here (m_in = -1, m_out = 1, margin_weight = 1) suit a label-free scalar energy on
    standardised features. Labels are optional: pass `y_train` to `train_energy` to add the CE term.
    """

    accepts_labels = True
    requires_labels = False

    def __init__(
        self,
        outliers: torch.Tensor,
        m_in: float = -1.0,
        m_out: float = 1.0,
        margin_weight: float = 1.0,
        ce_weight: float = 1.0,
        outlier_batch_size: int | None = None,
        synthetic: torch.Tensor | None = None,
        synthetic_share: float = 0.0,
    ):
        """`synthetic` (optional, (N_syn, D)): synthetic outliers mixed into every outlier batch at
        `synthetic_share` of its rows, so that a handful of known-bad rows adds to the margin's
        regulariser instead of replacing it (a margin against 30 rows alone learns those 30 rows)."""
        self.outliers = check_batch(outliers, name="outliers").detach()  # (N_out, D)
        if outliers.shape[0] == 0:
            raise ValueError("outliers must hold at least one row")
        if not m_in < m_out:
            raise ValueError(f"need m_in < m_out, got m_in={m_in}, m_out={m_out}")
        if outlier_batch_size is not None and outlier_batch_size < 1:
            raise ValueError(f"outlier_batch_size must be >= 1, got {outlier_batch_size}")
        self.m_in, self.m_out = float(m_in), float(m_out)
        self.margin_weight, self.ce_weight = float(margin_weight), float(ce_weight)
        self.outlier_batch_size = outlier_batch_size
        if not 0.0 <= synthetic_share < 1.0:
            raise ValueError(f"synthetic_share must be in [0, 1), got {synthetic_share}")
        if synthetic_share > 0 and synthetic is None:
            raise ValueError("synthetic_share > 0 needs synthetic outliers")
        self.synthetic = None
        if synthetic is not None:
            self.synthetic = check_batch(synthetic, name="synthetic outliers").detach()
            if self.synthetic.shape[1] != self.outliers.shape[1] or self.synthetic.shape[0] == 0:
                raise ValueError(
                    f"synthetic outliers must be (N>0, {self.outliers.shape[1]}), got {tuple(self.synthetic.shape)}"
                )
        self.synthetic_share = float(synthetic_share)

    def _draw(self, pool: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(0, pool.shape[0], (n,), generator=generator, device=generator.device)
        return pool[index.to(pool.device)]

    def __call__(
        self, energy_fn, batch: torch.Tensor | LabelledBatch, generator: torch.Generator
    ) -> ObjectiveOutput:
        x, y = split_batch(batch)
        n_out = self.outlier_batch_size or x.shape[0]
        # at least one known row per batch, however small the batch
        n_synthetic = min(int(round(self.synthetic_share * n_out)), n_out - 1) if self.synthetic is not None else 0
        parts = [self._draw(self.outliers, n_out - n_synthetic, generator)]
        if n_synthetic:
            parts.append(self._draw(self.synthetic, n_synthetic, generator))
        x_out = torch.cat([p.to(x.device, x.dtype) for p in parts])

        e_pos, e_neg = energy_fn(x), energy_fn(x_out)  # (B,), (B_out,)
        hinge_in = F.relu(e_pos - self.m_in).pow(2).mean()
        hinge_out = F.relu(self.m_out - e_neg).pow(2).mean()
        loss = self.margin_weight * (hinge_in + hinge_out)
        stats = {
            "e_pos": float(e_pos.mean().detach()),
            "e_neg": float(e_neg.mean().detach()),
            "energy_gap": float((e_neg.mean() - e_pos.mean()).detach()),
            "hinge_in": float(hinge_in.detach()),
            "hinge_out": float(hinge_out.detach()),
        }
        if y is not None:
            logits, y = class_logits(energy_fn, x, y, "labelled energy-margin training")  # (B, K), (B,)
            ce = F.cross_entropy(logits, y)
            loss = loss + self.ce_weight * ce
            stats["ce_loss"] = float(ce.detach())
            stats["train_accuracy"] = float((logits.argmax(dim=1) == y).float().mean())
        return ObjectiveOutput(loss=loss, stats=stats)


def feature_permuted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Synthetic outliers: each row's features shuffled, destroying structure but not marginals.

    Used by margin training when no known-bad examples are given; they must never be an evaluation
    OOD set, or the evaluation would leak."""
    order = torch.argsort(torch.rand(x.shape, generator=generator), dim=1)  # (N, D)
    return torch.gather(x, 1, order)


@dataclass(frozen=True)
class MarginConfig(ObjectiveConfig):
    """Energy-margin training; without the caller's outliers it trains against feature-permuted rows.
    With them, `synthetic_share` of every outlier batch is still feature-permuted training rows: known-bad
    rows are usually few (a team's first confirmed problems), and a margin against them alone fits those
    rows and loses the structure-free negatives that keep the energy low only near the data."""

    name = "margin"
    labels = "optional"
    uses_outliers = True
    m_in: float = -1.0
    m_out: float = 1.0
    margin_weight: float = 1.0
    ce_weight: float = 1.0
    outlier_batch_size: int | None = None
    synthetic_share: float = 0.5  # share of each outlier batch that is feature-permuted when outliers are given

    def __post_init__(self) -> None:
        share = self.synthetic_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
            raise ValueError(f"margin: synthetic_share must be a number in [0, 1), got {share!r}")

    def build(self, context: ObjectiveContext) -> EnergyMarginObjective:
        synthetic = feature_permuted(context.x_train, context.generator)
        known = context.outliers
        return EnergyMarginObjective(
            known if known is not None else synthetic,
            synthetic=synthetic if known is not None and self.synthetic_share > 0 else None,
            synthetic_share=self.synthetic_share if known is not None else 0.0,
            m_in=self.m_in,
            m_out=self.m_out,
            margin_weight=self.margin_weight,
            ce_weight=self.ce_weight,
            outlier_batch_size=self.outlier_batch_size,
        )
