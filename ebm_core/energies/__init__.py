"""Energy functions: each maps a (B, D) batch to (B,) energies, low for in-distribution inputs."""

from ebm_core.energies.base import EnergyFunction
from ebm_core.energies.gaussian import GaussianEnergy
from ebm_core.energies.mlp import MLPEnergy

__all__ = ["EnergyFunction", "GaussianEnergy", "MLPEnergy"]
