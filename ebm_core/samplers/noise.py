"""Random draws that work whatever device the generator and the tensors live on.

`torch.randn(..., generator=g, device=d)` fails when `g` is a CPU generator and `d` is cuda. The
training loop keeps one CPU generator (so a run is reproducible and its state fits in a checkpoint), so
draws are made on the generator's device and moved to the tensors' device.
"""

from __future__ import annotations

import torch


def gaussian_noise(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal draws of `shape` on `device`."""
    draw = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return draw.to(device)


def uniform_noise(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """Uniform [0, 1) draws of `shape` on `device`."""
    draw = torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)
    return draw.to(device)


def gaussian_noise_(out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fill `out` with standard normal draws: the same draws `gaussian_noise(out.shape, ...)` makes."""
    if out.device == generator.device:
        return out.normal_(generator=generator)
    return out.copy_(torch.randn(out.shape, generator=generator, device=generator.device, dtype=out.dtype))
