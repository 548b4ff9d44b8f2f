from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ebm_core.config_dict import to_plain


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, differentiable w.r.t. the energy's parameters
    stats: dict[str, float] = field(default_factory=dict)  # telemetry, e.g. e_pos, e_neg


@dataclass(frozen=True)
class ObjectiveContext:
    """What a detector hands an objective config to build its objective from."""

    x_train: torch.Tensor  # (N, D) standardised training rows
    generator: torch.Generator  # the run's generator: every draw at build time comes from it
    sampler: Any  # the detector's sampler, for objectives that draw negatives (cd, cdk, jem)
    outliers: torch.Tensor | None = None  # (N_out, D) standardised known-bad rows, if the caller has some


@dataclass(frozen=True)
class ObjectiveConfig:
    """Base of the per-objective configs: one frozen dataclass of hyperparameters per objective.

    `name` is the key in `ebm_core.objectives.OBJECTIVES` and in YAML (`objective: {name: dsm, ...}`).
    `labels` says what the detector does with class labels: "ignored" (an MLP energy, labels dropped),
    "optional" (a classifier energy when labels are given, else an MLP), "required" (always a classifier).
    `uses_outliers`: the objective trains on the caller's known-bad rows when given (`fit(outliers=...)`).
    """

    name: ClassVar[str]
    labels: ClassVar[str] = "ignored"
    uses_outliers: ClassVar[bool] = False

    def build(self, context: ObjectiveContext):  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"name": self.name, **to_plain(self)}
