"""Energy functions: each maps a (B, D) batch to (B,) energies, low for in-distribution inputs."""

from ebm_core.energies.base import EnergyFunction
from ebm_core.energies.classifier import ClassifierEnergy, ClassifierEnergyConfig
from ebm_core.energies.gaussian import GaussianEnergy
from ebm_core.energies.kernel_density import KernelDensityEnergy
from ebm_core.energies.mixture import MixtureOfGaussiansEnergy
from ebm_core.energies.mlp import MLPEnergy, MLPEnergyConfig
from ebm_core.energies.quadratic import QuadraticEnergy

__all__ = [
    "ClassifierEnergy",
    "ClassifierEnergyConfig",
    "EnergyFunction",
    "GaussianEnergy",
    "KernelDensityEnergy",
    "MLPEnergy",
    "MLPEnergyConfig",
    "MixtureOfGaussiansEnergy",
    "QuadraticEnergy",
]
