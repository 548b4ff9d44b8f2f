"""MCMC samplers over an energy; each returns a `SamplerOutput` with samples and traces.

Every sampler is a frozen dataclass with `sample(energy_fn, x_init, generator, n_steps=None)`.
"""

from ebm_core.samplers.base import SamplerOutput, energy_and_grad
from ebm_core.samplers.hmc import HMCSampler
from ebm_core.samplers.langevin import LangevinSampler
from ebm_core.samplers.mala import MALASampler

__all__ = ["HMCSampler", "LangevinSampler", "MALASampler", "SamplerOutput", "energy_and_grad"]
