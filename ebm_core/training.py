"""The training loop: one function, readable top to bottom.

It is objective-agnostic: the objective turns a data batch into an `ObjectiveOutput`. Each step is
checked for divergence (see `ebm_core.stability`): with `max_rollbacks > 0` a diverged step rolls back
to the last good snapshot with a lower learning rate and a new seed; otherwise (or when the rollbacks
are used up) the run stops with an error naming the step. A non-finite loss is never replaced by a value.

Checkpoints (`checkpoint_dir`) hold model, optimiser, objective state (replay buffer), EMA weights, the
generator's RNG state and the history, so `resume=True` continues a killed run and ends with the same
parameters as an uninterrupted one. Progress and telemetry go to callbacks; this module needs only torch.

Data-parallel (`distributed=DistributedContext(...)`, see `ebm_core.distributed`): every rank draws the
same global batch from `generator`, keeps its shard, runs the objective with its own noise generator,
and the gradients, loss and telemetry are all-reduced (shard-size weighted) before the checks and the
optimiser step, so the ranks keep identical parameters. Only rank 0 writes checkpoints. Without
`distributed` nothing of this runs: the single-process loop is the one below, unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from ebm_core.distributed import (
    DistributedContext,
    all_reduce_gradients,
    all_reduce_weighted,
    any_rank,
    broadcast_state,
    rank_seed,
    shard,
)
from ebm_core.checkpoint import load_checkpoint, save_checkpoint
from ebm_core.errors import NonFiniteError
from ebm_core.objectives.labelled import LabelledBatch, check_labels
from ebm_core.shapes import check_batch
from ebm_core.stability import (
    Divergence,
    ExponentialMovingAverage,
    RollbackRecord,
    check_grad_norm,
    check_loss,
)


@dataclass(frozen=True)
class TrainConfig:
    n_steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max global gradient norm of the energy's parameters
    log_every: int = 10
    # Stability. max_rollbacks = 0: a diverged step stops the run with an error naming the step.
    max_rollbacks: int = 0
    rollback_lr_factor: float = 0.5  # learning rate multiplier after each rollback
    energy_limit: float | None = 1e6  # |mean energy| statistics above this count as divergence
    grad_norm_limit: float | None = 1e6  # parameter gradient norms (before clipping) above this too
    checkpoint_every: int = 100  # steps between rollback snapshots and on-disk checkpoints
    ema_decay: float | None = None  # keep an EMA of the weights and end with it
    # Device: bf16 autocast applies on cuda only; compile wraps the energy in torch.compile.
    bf16: bool = True
    compile: bool = False

    def __post_init__(self):
        if self.n_steps < 1 or self.batch_size < 1 or self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError("n_steps, batch_size, log_every and checkpoint_every must be >= 1")
        if self.max_rollbacks < 0 or not 0.0 < self.rollback_lr_factor <= 1.0:
            raise ValueError(
                f"need max_rollbacks >= 0 and 0 < rollback_lr_factor <= 1; got {self.max_rollbacks}, "
                f"{self.rollback_lr_factor}"
            )
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingHistory:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    stats: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    rollbacks: list[dict] = field(default_factory=list)  # RollbackRecord.to_dict() per rollback
    resumed_from: list[int] = field(default_factory=list)  # checkpoint steps this run resumed from

    def record(self, step: int, loss: float, stats: dict[str, float]) -> None:
        self.steps.append(step)
        self.loss.append(loss)
        for name, value in stats.items():
            self.stats.setdefault(name, []).append(value)

    def truncate(self, n_records: int) -> None:
        """Forget records after the first n (the steps a rollback discarded)."""
        del self.steps[n_records:], self.loss[n_records:]
        for values in self.stats.values():
            del values[n_records:]

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "loss": self.loss,
            "stats": self.stats,
            "seconds": self.seconds,
            "rollbacks": self.rollbacks,
            "resumed_from": self.resumed_from,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingHistory":
        return cls(
            steps=list(data["steps"]),
            loss=list(data["loss"]),
            stats={k: list(v) for k, v in data["stats"].items()},
            seconds=float(data.get("seconds", 0.0)),
            rollbacks=[dict(r) for r in data.get("rollbacks", [])],
            resumed_from=list(data.get("resumed_from", [])),
        )


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
    *,
    y_train: torch.Tensor | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    distributed: DistributedContext | None = None,
) -> TrainingHistory:
    """Train `energy_fn` in place with `objective`; returns the history.

    y_train: (N,) class indices, passed to label-using objectives as `LabelledBatch(x, y)`.
    device: where the energy, objective state and data live (default: the energy's device).
    checkpoint_dir / resume: write checkpoints every `config.checkpoint_every` steps; with `resume`,
    continue from the checkpoint there if one exists.
    distributed: train as one rank of a torch.distributed group (module docstring); `generator` then
    drives only the data order and must be seeded alike on every rank.
    """
    check_batch(x_train, name="x_train")  # (N, D)
    n_rows = x_train.shape[0]
    _check_label_use(objective, y_train, n_rows)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if distributed is not None and resume:
        raise ValueError("resume=True is not supported with distributed training (per-rank sampler state is not checkpointed)")
    noise_generator = distributed.noise_generator if distributed is not None else generator

    # ---- placement, model wrapper, optimiser ------------------------------------------------
    device = torch.device(device) if device is not None else _module_device(energy_fn)
    energy_fn.to(device)
    if hasattr(objective, "to"):
        objective.to(device)
    x_train = x_train.to(device)
    y_train = check_labels(y_train, n_rows, "y_train").to(device) if y_train is not None else None
    model = _maybe_compile(energy_fn, objective, config.compile)
    autocast = (
        (lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16))
        if device.type == "cuda" and config.bf16
        else contextlib.nullcontext
    )
    extra_parameters = list(objective.parameters()) if hasattr(objective, "parameters") else []
    parameters = list(energy_fn.parameters()) + extra_parameters
    optimizer = torch.optim.Adam(
        [
            {"params": list(energy_fn.parameters()), "weight_decay": config.weight_decay},
            {"params": extra_parameters, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    if distributed is not None:  # every rank starts from rank 0's parameters and buffers
        broadcast_state(parameters + list(energy_fn.buffers()), src=0, group=distributed.group)
    ema = ExponentialMovingAverage(energy_fn, config.ema_decay) if config.ema_decay else None
    history = TrainingHistory()

    def capture(step: int) -> dict:
        """Everything needed to continue after `step` (deep copies)."""
        return {
            "step": step,
            "model": copy.deepcopy(energy_fn.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "objective": copy.deepcopy(objective.state_dict()) if hasattr(objective, "state_dict") else {},
            "ema": ema.state_dict() if ema is not None else {},
            "generator": generator.get_state(),
            "n_records": len(history.steps),
        }

    def restore(state: dict) -> None:
        energy_fn.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if hasattr(objective, "load_state_dict"):
            objective.load_state_dict(copy.deepcopy(state["objective"]))
        if ema is not None:
            ema.load_state_dict(state["ema"])

    # ---- resume ------------------------------------------------------------------------------
    start_step = 1
    saved = load_checkpoint(checkpoint_dir) if resume else None
    if saved is not None:
        restore(saved)
        generator.set_state(saved["generator"])
        history = TrainingHistory.from_dict(saved["history"])
        history.resumed_from.append(int(saved["step"]))
        start_step = int(saved["step"]) + 1
    last_good = capture(start_step - 1) if config.max_rollbacks > 0 else None

    # ---- the loop ----------------------------------------------------------------------------
    started = time.perf_counter() - history.seconds
    energy_fn.train()
    step = start_step
    while step <= config.n_steps:
        index = torch.randint(
            0, n_rows, (min(config.batch_size, n_rows),), generator=generator, device=generator.device
        ).to(device)
        if distributed is not None:  # (B,) -> this rank's (B / world_size,) share
            global_rows = index.shape[0]
            index = shard(index, distributed.rank, distributed.world_size)
            weight = index.shape[0] / global_rows
        x_batch = x_train[index]  # (B, D)
        batch = LabelledBatch(x_batch, y_train[index]) if y_train is not None else x_batch

        if distributed is not None:
            divergence, output, loss_value, step_stats, grad_norm = _distributed_step(
                step, model, objective, batch, noise_generator, autocast, optimizer, parameters, config,
                distributed, weight, device,
            )
        else:
            divergence: Divergence | None = None
            try:
                with autocast():
                    output = objective(model, batch, generator)
            except NonFiniteError as error:  # e.g. the sampler met a non-finite energy
                divergence = Divergence(step, f"objective raised {type(error).__name__}: {error}", cause=error)
            else:
                loss_value = float(output.loss.detach())
                step_stats = output.stats
                divergence = check_loss(step, loss_value, output.stats, config.energy_limit)
                if divergence is None:
                    optimizer.zero_grad(set_to_none=True)
                    output.loss.backward()
                    grad_norm = _clip_and_measure(parameters, config.grad_clip)
                    divergence = check_grad_norm(step, loss_value, grad_norm, config.grad_norm_limit)

        if divergence is not None:
            if len(history.rollbacks) >= config.max_rollbacks:
                raise divergence.error(len(history.rollbacks))
            step = _roll_back(divergence, last_good, restore, optimizer, generator, history, config, distributed)
            continue

        optimizer.step()
        if ema is not None:
            ema.update(energy_fn)

        if step % config.log_every == 0 or step == config.n_steps:
            learning_rate = optimizer.param_groups[0]["lr"]
            stats = {"param_grad_norm": grad_norm, "learning_rate": learning_rate, **step_stats}
            history.record(step, loss_value, stats)
            metrics = {"loss": loss_value, **stats, "rollbacks": float(len(history.rollbacks))}
            for callback in callbacks:
                callback(step, config.n_steps, metrics)

        # Snapshot after logging, so a resumed run's history holds this step's record exactly once.
        if step % config.checkpoint_every == 0 or step == config.n_steps:
            if config.max_rollbacks > 0:
                last_good = capture(step)
            if checkpoint_dir is not None and (distributed is None or distributed.is_main):
                history.seconds = time.perf_counter() - started
                state = last_good if last_good is not None and last_good["step"] == step else capture(step)
                save_checkpoint(checkpoint_dir, {**state, "history": history.to_dict(), "config": config.to_dict()})
        step += 1

    if ema is not None:
        ema.copy_to(energy_fn)
    energy_fn.eval()
    history.seconds = time.perf_counter() - started
    return history


def _distributed_step(
    step, model, objective, batch, noise_generator, autocast, optimizer, parameters, config, distributed, weight, device
):
    """One rank's step: objective on its shard, then the reductions every rank agrees on.

    Returns (divergence or None, output, global loss, global stats, global grad norm)."""
    group = distributed.group
    output, local_error = None, None
    try:
        with autocast():
            output = objective(model, batch, noise_generator)
    except NonFiniteError as error:
        local_error = error
    failed = any_rank(local_error is not None, distributed.world_size, distributed.rank, device, group)
    if failed:
        if local_error is not None:
            reason = f"objective raised {type(local_error).__name__} on rank {distributed.rank}: {local_error}"
            return Divergence(step, reason, cause=local_error), output, float("nan"), {}, float("nan")
        reason = f"objective raised a non-finite error on rank(s) {', '.join(map(str, failed))}"
        return Divergence(step, reason, cause=NonFiniteError(reason)), output, float("nan"), {}, float("nan")
    # Global loss and telemetry: the shard-weighted mean over ranks (the global batch's mean).
    names = sorted(output.stats)
    local = torch.tensor(
        [float(output.loss.detach())] + [float(output.stats[k]) for k in names], dtype=torch.float64, device=device
    )
    reduced = all_reduce_weighted(local, weight, group).tolist()
    loss_value, step_stats = reduced[0], dict(zip(names, reduced[1:]))
    divergence = check_loss(step, loss_value, step_stats, config.energy_limit)
    if divergence is not None:
        return divergence, output, loss_value, step_stats, float("nan")
    optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    all_reduce_gradients(parameters, weight, group)  # now the global batch's gradient
    grad_norm = _clip_and_measure(parameters, config.grad_clip)  # same on every rank
    divergence = check_grad_norm(step, loss_value, grad_norm, config.grad_norm_limit)
    return divergence, output, loss_value, step_stats, grad_norm


def _roll_back(divergence, last_good, restore, optimizer, generator, history, config, distributed=None) -> int:
    """Restore the last good snapshot, lower the learning rate, reseed; return the step to run next."""
    learning_rate = optimizer.param_groups[0]["lr"] * config.rollback_lr_factor
    # The new seed comes from the diverged run's generator: different from the path that failed, yet
    # reproducible from the original seed.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    restore(last_good)
    history.truncate(last_good["n_records"])
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    generator.manual_seed(seed)
    if distributed is not None:  # the data order stays shared; each rank's noise gets its own new seed
        distributed.noise_generator.manual_seed(rank_seed(seed, distributed.rank))
    record = RollbackRecord(
        step=divergence.step,
        restored_step=last_good["step"],
        reason=divergence.reason,
        learning_rate=learning_rate,
        seed=seed,
    )
    history.rollbacks.append(record.to_dict())
    return last_good["step"] + 1


def _check_label_use(objective, y_train: torch.Tensor | None, n_rows: int) -> None:
    name = type(objective).__name__
    if y_train is None and getattr(objective, "requires_labels", False):
        raise ValueError(f"{name} needs class labels: pass y_train to train_energy")
    if y_train is not None and not getattr(objective, "accepts_labels", False):
        raise ValueError(f"{name} does not use class labels; do not pass y_train")


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _maybe_compile(energy_fn: torch.nn.Module, objective, enabled: bool) -> torch.nn.Module:
    if not enabled:
        return energy_fn
    if getattr(objective, "needs_double_backward", False):
        raise ValueError(
            f"compile=True cannot be used with {type(objective).__name__}: torch.compile does not support "
            "the double backward that score matching needs"
        )
    return torch.compile(energy_fn)


def _clip_and_measure(parameters: list[torch.Tensor], max_norm: float | None) -> float:
    parameters = [p for p in parameters if p.grad is not None]
    if not parameters:
        return 0.0
    if max_norm is None:
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])))
    return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))
