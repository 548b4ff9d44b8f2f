"""ebm_core: energy functions, objectives, samplers, the training loop and the detector.

Imports only torch and numpy. Sign rule: energy is low for in-distribution inputs; the OOD score is
the energy (higher = more OOD).
"""

from ebm_core.calibration import conformal_p_values, conformal_threshold
from ebm_core.checkpoint import load_checkpoint, save_checkpoint
from ebm_core.composition import TemperedEnergy, WeightedSumEnergy
from ebm_core.detector import DetectorConfig, EnergyDetector
from ebm_core.energies import (
    ClassifierEnergy,
    ClassifierEnergyConfig,
    EnergyFunction,
    GaussianEnergy,
    MixtureOfGaussiansEnergy,
    MLPEnergy,
    MLPEnergyConfig,
    QuadraticEnergy,
)
from ebm_core.errors import NonFiniteError, NonFiniteLossError, NotCalibratedError, NotFittedError, ShapeError
from ebm_core.objectives import (
    ContrastiveDivergence,
    DenoisingScoreMatching,
    EnergyMarginObjective,
    GaussianNoise,
    JEMHybrid,
    LabelledBatch,
    NoiseContrastiveEstimation,
    ObjectiveOutput,
    PersistentContrastiveDivergence,
    SlicedScoreMatching,
)
from ebm_core.recipes import OBJECTIVES
from ebm_core.replay_buffer import ReplayBuffer
from ebm_core.samplers import HMCSampler, LangevinSampler, MALASampler, SamplerOutput
from ebm_core.stability import DivergenceError, ExponentialMovingAverage
from ebm_core.training import TrainConfig, TrainingHistory, train_energy

__all__ = [
    "ClassifierEnergy",
    "ClassifierEnergyConfig",
    "ContrastiveDivergence",
    "DenoisingScoreMatching",
    "DetectorConfig",
    "DivergenceError",
    "EnergyDetector",
    "EnergyFunction",
    "EnergyMarginObjective",
    "ExponentialMovingAverage",
    "GaussianEnergy",
    "GaussianNoise",
    "HMCSampler",
    "JEMHybrid",
    "LabelledBatch",
    "LangevinSampler",
    "MALASampler",
    "MLPEnergy",
    "MLPEnergyConfig",
    "MixtureOfGaussiansEnergy",
    "NoiseContrastiveEstimation",
    "NonFiniteError",
    "NonFiniteLossError",
    "NotCalibratedError",
    "NotFittedError",
    "OBJECTIVES",
    "ObjectiveOutput",
    "PersistentContrastiveDivergence",
    "QuadraticEnergy",
    "ReplayBuffer",
    "SamplerOutput",
    "ShapeError",
    "SlicedScoreMatching",
    "TemperedEnergy",
    "TrainConfig",
    "TrainingHistory",
    "WeightedSumEnergy",
    "conformal_p_values",
    "conformal_threshold",
    "load_checkpoint",
    "save_checkpoint",
    "train_energy",
]
