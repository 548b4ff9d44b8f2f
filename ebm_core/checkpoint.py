"""Training checkpoints: everything a killed run needs to resume and finish as if never stopped.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only: model and optimiser state,
the objective's state (e.g. the replay buffer), EMA weights, the generator's RNG state, the step and
the history so far. It is written with `torch.save` to a temporary name and renamed (a crash never
leaves half a file) and read back with `torch.load(weights_only=True)`, which refuses pickled objects,
so loading never executes stored code.
"""

from __future__ import annotations

from pathlib import Path

import torch

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_VERSION = 1


def checkpoint_path(directory: str | Path) -> Path:
    return Path(directory) / CHECKPOINT_FILE


def save_checkpoint(directory: str | Path, state: dict) -> Path:
    path = checkpoint_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"checkpoint_version": CHECKPOINT_VERSION, **state}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(directory: str | Path) -> dict | None:
    """The saved state, or None when the directory holds no checkpoint."""
    path = checkpoint_path(directory)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: checkpoint_version {state.get('checkpoint_version')}, expected {CHECKPOINT_VERSION}"
        )
    return state
