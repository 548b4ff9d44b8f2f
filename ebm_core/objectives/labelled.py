"""How labelled data reaches an objective.

An objective that uses labels declares `accepts_labels = True` (and `requires_labels = True` if it cannot
work without them). `train_energy(..., y_train=y)` then passes each batch as `LabelledBatch(x, y)`; every
other objective receives the plain (B, D) tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ebm_core.errors import ShapeError


class LabelledBatch(NamedTuple):
    x: torch.Tensor  # (B, D) float
    y: torch.Tensor  # (B,) long class indices


def split_batch(batch: torch.Tensor | LabelledBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y) from a labelled batch, (x, None) from a plain tensor."""
    if isinstance(batch, LabelledBatch):
        return batch.x, batch.y
    if isinstance(batch, tuple) and len(batch) == 2:
        return batch[0], batch[1]
    return batch, None


def check_labels(y: torch.Tensor, n_rows: int, name: str = "y") -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.shape != (n_rows,):
        raise ShapeError(f"{name} must have shape ({n_rows},), got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if n_rows and int(y.min()) < 0:
        raise ValueError(f"{name} must hold class indices >= 0, got {int(y.min())}")
    return y.long()


def class_logits(energy_fn, x: torch.Tensor, y: torch.Tensor, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits (B, K) and checked labels (B,) for an objective with a cross-entropy term;
    the energy must expose `logits(x)` (a ClassifierEnergy)."""
    y = check_labels(y, x.shape[0])
    if not callable(getattr(energy_fn, "logits", None)):
        raise TypeError(f"{who} needs an energy with logits(x) (ClassifierEnergy), got {type(energy_fn).__name__}")
    return energy_fn.logits(x), y
