"""Detectors: one contract (`Detector`), one file per kind, `load_detector` for any saved one.

- `EnergyDetector` (energy.py): an energy network trained with any objective (`DetectorConfig`).
- `KernelDensityDetector` (kernel_density.py): a von Mises-Fisher kernel density, label-free.
- `ComposedDetector` (composed.py): a weighted sum of member detectors' energies.
- `TrainedEnergyDetector` (trained.py): what the two kinds with a trained torch energy on standardised rows
  share (chunked scoring, standardiser, saved weights and history).
- `ContrastiveHeadDetector` (contrastive_head.py): a head trained with the supervised contrastive loss,
  the energy a kernel density in its space (needs labels).
"""

from ebm_core.detectors.base import DETECTOR_KINDS, Assessment, Detector, load_detector
from ebm_core.detectors.composed import ComposedDetector
from ebm_core.detectors.contrastive_head import ContrastiveHeadConfig, ContrastiveHeadDetector
from ebm_core.detectors.energy import EnergyDetector
from ebm_core.detectors.energy_config import DetectorConfig
from ebm_core.detectors.kernel_density import KernelDensityDetector

__all__ = [
    "Assessment",
    "DETECTOR_KINDS",
    "ComposedDetector",
    "ContrastiveHeadConfig",
    "ContrastiveHeadDetector",
    "Detector",
    "DetectorConfig",
    "EnergyDetector",
    "KernelDensityDetector",
    "load_detector",
]
