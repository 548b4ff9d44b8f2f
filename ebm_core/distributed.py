"""Data-parallel training across processes (torchrun / torch.distributed): what `train_energy` needs.

One detector, N processes ("ranks"). Every rank holds the whole training set and draws the same global
batch of B row indices from the shared data-order generator (seeded alike on every rank); rank r keeps
its contiguous shard `tensor_split(index, N)[r]` (B/N rows when N divides B). Each rank computes its
objective on its shard; gradients are all-reduced as the shard-size-weighted sum, so for an objective
whose loss is a mean over batch rows the reduced gradient equals the single-process gradient of the
global batch (up to float rounding). Loss and telemetry are reduced the same way before the divergence
checks, so every rank takes the same decision (step, roll back or stop).

Randomness: the data order comes from the generator the caller passes (same seed on every rank); the
objective's own noise (Langevin chains, replay buffer restarts, noise samples) comes from a per-rank
`noise_generator` seeded with `rank_seed(seed, rank)`, so the ranks draw different negatives yet a
rerun with the same seed and N draws the same ones. A replay buffer (cd, jem) is sharded: each rank
keeps capacity / N chains (`EnergyDetector.fit`), so together they hold the configured capacity and
each chain is continued as often as in one process.

Gradients are reduced here rather than by `DistributedDataParallel`: the objectives call the energy many
times per step (the sampler's chain with the parameters frozen, then positives and negatives), which
DDP's one-forward-one-backward bookkeeping does not allow without `static_graph` tricks. The result is
what DDP computes: averaged gradients, identical parameters on every rank.

This module needs only torch (torch.distributed) and numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the group; `noise_generator` is its own (see `rank_seed`)."""

    rank: int
    world_size: int
    noise_generator: torch.Generator
    group: object = None  # a torch.distributed process group; None = the default group

    def __post_init__(self):
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {self.rank} of {self.world_size}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_seed(seed: int, rank: int) -> int:
    """A seed for rank `rank`'s sampling noise: deterministic in (seed, rank), distinct per rank and
    distinct from `seed` itself (which drives the data order)."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(rank), 0xEB0D]).generate_state(1, dtype=np.uint64)
    return int(state[0] % np.uint64(2**63))


def context_from_env(seed: int) -> DistributedContext:
    """The context of an already initialised default process group (torchrun sets RANK/WORLD_SIZE)."""
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call init_process_group first")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank, world_size, torch.Generator(device="cpu").manual_seed(rank_seed(seed, rank)))


def init_from_env(device: str = "cpu") -> tuple[str, torch.device]:
    """Initialise the default group from torchrun's environment: `nccl` for a cuda device, else `gloo`.

    Returns (backend, this rank's device); a cuda device becomes `cuda:<LOCAL_RANK>`."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA device")
        torch.cuda.set_device(local_rank)
        backend, rank_device = "nccl", torch.device("cuda", local_rank)
    else:
        backend, rank_device = "gloo", torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return backend, rank_device


def shard(index: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank `rank`'s contiguous share of the global batch `index` (B,) -> (about B / world_size,)."""
    if index.shape[0] < world_size:
        raise ValueError(
            f"a global batch of {index.shape[0]} rows cannot be split over {world_size} processes: "
            "raise batch_size or lower the process count"
        )
    return torch.tensor_split(index, world_size)[rank]


def all_reduce_weighted(values: torch.Tensor, weight: float, group=None) -> torch.Tensor:
    """sum over ranks of weight_r * values_r (weights: each rank's share of the global batch)."""
    reduced = values.detach().clone() * weight
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM, group=group)
    return reduced


def all_reduce_gradients(parameters: list[torch.Tensor], weight: float, group=None) -> None:
    """Replace each parameter's gradient by sum_r weight_r * grad_r, in one flat all-reduce.

    A parameter with no gradient on this rank counts as zero; it gets a gradient only when some rank had
    one (so an optimiser that skips gradient-less parameters still does so on every rank alike)."""
    if not parameters:
        return
    device = parameters[0].device
    has_grad = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32, device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.SUM, group=group)
    used = [p for p, flag in zip(parameters, has_grad.tolist()) if flag > 0]
    if not used:
        return
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(torch.float32) for p in used]
    )
    flat.mul_(weight)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    offset = 0
    for p in used:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n


def broadcast_state(tensors: list[torch.Tensor], src: int = 0, group=None) -> None:
    """Copy rank `src`'s values of `tensors` (parameters, buffers) to every rank, in place."""
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=src, group=group)


def any_rank(flag: bool, world_size: int, rank: int, device, group=None) -> list[int]:
    """The ranks on which `flag` is true (every rank gets the same list)."""
    flags = torch.zeros(world_size, dtype=torch.float32, device=device)
    flags[rank] = float(flag)
    dist.all_reduce(flags, op=dist.ReduceOp.SUM, group=group)
    return [r for r, value in enumerate(flags.tolist()) if value > 0]
