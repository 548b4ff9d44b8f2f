"""Shape and finiteness checks with messages that say what was expected."""

from __future__ import annotations

import torch

from ebm_core.errors import NonFiniteError, ShapeError


def check_batch(x: torch.Tensor, dim: int | None = None, name: str = "x") -> torch.Tensor:
    """Check that `x` is a (B, D) floating tensor of finite values, D == dim when given."""
    check_batch_shape(x, dim, name)
    if not torch.isfinite(x).all():
        bad_rows = torch.nonzero(~torch.isfinite(x).all(dim=1)).flatten()[:5].tolist()
        raise NonFiniteError(f"{name} contains NaN or infinite values (first bad rows: {bad_rows})")
    return x


def check_batch_shape(x: torch.Tensor, dim: int | None = None, name: str = "x") -> torch.Tensor:
    """`check_batch` without the finiteness check (no value is read): type, (B, D) shape, floating dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, D), got {type(x).__name__}")
    if x.ndim != 2:
        raise ShapeError(f"{name} must have shape (B, D), got {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ShapeError(f"{name} must have shape (B, {dim}), got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    return x


def check_energy_output(energy: torch.Tensor, batch_size: int, name: str = "energy") -> torch.Tensor:
    """An energy maps (B, D) to (B,)."""
    if energy.shape != (batch_size,):
        raise ShapeError(f"{name} must have shape ({batch_size},), got {tuple(energy.shape)}")
    return energy
