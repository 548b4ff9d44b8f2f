"""MCMC samplers over an energy; each returns a `SamplerOutput` with samples and traces."""

from ebm_core.samplers.base import SamplerOutput, energy_and_grad
from ebm_core.samplers.langevin import LangevinSampler

__all__ = ["LangevinSampler", "SamplerOutput", "energy_and_grad"]
