from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, differentiable w.r.t. the energy's parameters
    stats: dict[str, float] = field(default_factory=dict)  # telemetry, e.g. e_pos, e_neg
