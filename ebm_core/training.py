"""The training loop: one function, readable top to bottom.

It is objective-agnostic: the objective turns a data batch into an `ObjectiveOutput`. A non-finite
loss stops the run with `NonFiniteLossError` naming the step; it is never replaced by a value.
Progress and telemetry go to callbacks, so this module needs nothing beyond torch.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import torch

from ebm_core.errors import NonFiniteLossError
from ebm_core.shapes import check_batch


@dataclass(frozen=True)
class TrainConfig:
    n_steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max global gradient norm of the energy's parameters
    log_every: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingHistory:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    stats: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self, step: int, loss: float, stats: dict[str, float]) -> None:
        self.steps.append(step)
        self.loss.append(loss)
        for name, value in stats.items():
            self.stats.setdefault(name, []).append(value)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "loss": self.loss, "stats": self.stats, "seconds": self.seconds}


class TrainingCallback(Protocol):
    def __call__(self, step: int, n_steps: int, metrics: dict[str, float]) -> None: ...


Objective = Callable[[torch.nn.Module, torch.Tensor, torch.Generator], "object"]


def train_energy(
    energy_fn: torch.nn.Module,
    objective: Objective,
    x_train: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    callbacks: tuple[TrainingCallback, ...] = (),
) -> TrainingHistory:
    check_batch(x_train, name="x_train")  # (N, D)
    optimizer = torch.optim.Adam(
        energy_fn.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    history = TrainingHistory()
    n_rows = x_train.shape[0]
    started = time.perf_counter()
    energy_fn.train()
    for step in range(1, config.n_steps + 1):
        index = torch.randint(0, n_rows, (min(config.batch_size, n_rows),), generator=generator)
        x_batch = x_train[index]  # (B, D)

        output = objective(energy_fn, x_batch, generator)
        loss_value = float(output.loss.detach())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(step, loss_value, detail=_format_stats(output.stats))

        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        grad_norm = _clip_and_measure(energy_fn, config.grad_clip)
        if not math.isfinite(grad_norm):
            raise NonFiniteLossError(step, loss_value, detail=f"parameter gradient norm {grad_norm}")
        optimizer.step()

        if step % config.log_every == 0 or step == config.n_steps:
            metrics = {"loss": loss_value, "param_grad_norm": grad_norm, **output.stats}
            history.record(step, loss_value, {"param_grad_norm": grad_norm, **output.stats})
            for callback in callbacks:
                callback(step, config.n_steps, metrics)
    energy_fn.eval()
    history.seconds = time.perf_counter() - started
    return history


def _clip_and_measure(module: torch.nn.Module, max_norm: float | None) -> float:
    parameters = [p for p in module.parameters() if p.grad is not None]
    if not parameters:
        return 0.0
    if max_norm is None:
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])))
    return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))


def _format_stats(stats: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in stats.items())
