"""ebm_core: energy functions, objectives, samplers, the training loop and the detector.

Imports only torch and numpy. Sign rule: energy is low for in-distribution inputs; the OOD score is
the energy (higher = more OOD).
"""

from ebm_core.calibration import conformal_p_values, conformal_threshold
from ebm_core.detector import DetectorConfig, EnergyDetector
from ebm_core.energies import EnergyFunction, GaussianEnergy, MLPEnergy
from ebm_core.errors import NonFiniteError, NonFiniteLossError, NotCalibratedError, NotFittedError, ShapeError
from ebm_core.samplers import LangevinSampler, SamplerOutput
from ebm_core.training import TrainConfig, TrainingHistory, train_energy

__all__ = [
    "DetectorConfig",
    "EnergyDetector",
    "EnergyFunction",
    "GaussianEnergy",
    "LangevinSampler",
    "MLPEnergy",
    "NonFiniteError",
    "NonFiniteLossError",
    "NotCalibratedError",
    "NotFittedError",
    "SamplerOutput",
    "ShapeError",
    "TrainConfig",
    "TrainingHistory",
    "conformal_p_values",
    "conformal_threshold",
    "train_energy",
]
