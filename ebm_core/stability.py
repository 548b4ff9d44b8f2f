"""Keeping a training run alive: divergence checks, rollback records and EMA weights.

A step has diverged when its loss is non-finite, when the objective's sampler meets a non-finite energy,
when an energy statistic (e_pos, e_neg, ...) is non-finite or larger in magnitude than `energy_limit`,
or when the parameter gradient norm (before clipping) is non-finite or above `grad_norm_limit`.
`train_energy` then rolls back to the last good snapshot, lowers the learning rate and reseeds, at most
`max_rollbacks` times; each rollback is a `RollbackRecord` in the history. A non-finite value is never
replaced by a number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ebm_core.errors import NonFiniteLossError


class DivergenceError(RuntimeError):
    """Training diverged (exploding energies or gradients) and no rollback was left."""

    def __init__(self, step: int, reason: str):
        self.step = step
        self.reason = reason
        super().__init__(f"training diverged at step {step}: {reason}")


@dataclass
class Divergence:
    """What went wrong at one step; `error()` is the exception to raise when no rollback is left."""

    step: int
    reason: str
    loss: float | None = None  # set when the run must stop with NonFiniteLossError
    cause: BaseException | None = None  # the objective's own error, if it raised one
    detail: str = ""  # what NonFiniteLossError adds after the loss

    def error(self, n_rollbacks: int) -> BaseException:
        suffix = f"{n_rollbacks} rollback(s) used" if n_rollbacks else ""
        if self.cause is not None:
            self.cause.add_note(f"at training step {self.step}" + (f"; {suffix}" if suffix else ""))
            return self.cause
        if self.loss is not None:
            detail = "; ".join(part for part in (self.detail, suffix) if part)
            return NonFiniteLossError(self.step, self.loss, detail=detail)
        return DivergenceError(self.step, self.reason + (f"; {suffix}" if suffix else ""))


@dataclass
class RollbackRecord:
    step: int  # the step that diverged
    restored_step: int  # the step of the snapshot training went back to
    reason: str
    learning_rate: float  # the lowered learning rate training continued with
    seed: int  # the generator's new seed

    def to_dict(self) -> dict:
        return asdict(self)


def check_loss(
    step: int, loss: float, stats: dict[str, float], energy_limit: float | None
) -> Divergence | None:
    """Divergence of the loss or of the energy statistics (keys starting with 'e_')."""
    detail = ", ".join(f"{k}={v:.4g}" for k, v in stats.items())
    if not math.isfinite(loss):
        return Divergence(step, f"non-finite loss {loss} ({detail})", loss=loss, detail=detail)
    for name, value in stats.items():
        if not name.startswith("e_"):
            continue
        if not math.isfinite(value):
            return Divergence(step, f"non-finite {name}={value}")
        if energy_limit is not None and abs(value) > energy_limit:
            return Divergence(step, f"|{name}| = {abs(value):.4g} exceeds energy_limit {energy_limit:.4g}")
    return None


def check_grad_norm(step: int, loss: float, grad_norm: float, limit: float | None) -> Divergence | None:
    if not math.isfinite(grad_norm):
        reason = f"parameter gradient norm {grad_norm}"
        return Divergence(step, f"non-finite {reason}", loss=loss, detail=reason)
    if limit is not None and grad_norm > limit:
        return Divergence(step, f"parameter gradient norm {grad_norm:.4g} exceeds grad_norm_limit {limit:.4g}")
    return None


class ExponentialMovingAverage:
    """shadow <- decay * shadow + (1 - decay) * parameter after every optimiser step.

    `copy_to(module)` writes the averaged parameters into the module (buffers are left as they are).
    """

    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for name, p in module.named_parameters():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for name, p in module.named_parameters():
            p.copy_(self.shadow[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.clone() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, t in state.items():
            self.shadow[name].copy_(t)
