"""MCMC samplers over an energy; each returns a `SamplerOutput` with samples and traces.

Every sampler is a frozen dataclass of its hyperparameters (its own config) with
`sample(energy_fn, x_init, generator, n_steps=None)`; `SAMPLERS` maps the names used in YAML to them.
"""

from ebm_core.config_dict import from_plain
from ebm_core.samplers.base import Sampler, SamplerOutput, energy_and_grad
from ebm_core.samplers.hmc import HMCSampler
from ebm_core.samplers.langevin import LangevinSampler
from ebm_core.samplers.mala import MALASampler

SAMPLERS: dict[str, type[Sampler]] = {sampler.name: sampler for sampler in (LangevinSampler, MALASampler, HMCSampler)}


def sampler_config(name: str, **fields) -> Sampler:
    """The sampler called `name` with `fields` (YAML's `sampler: {name: ..., **fields}`)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    return from_plain(SAMPLERS[name], fields, f"sampler {name!r}")


__all__ = [
    "HMCSampler",
    "LangevinSampler",
    "MALASampler",
    "SAMPLERS",
    "Sampler",
    "SamplerOutput",
    "energy_and_grad",
    "sampler_config",
]
