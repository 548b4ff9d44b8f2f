"""Pipeline configuration: frozen dataclasses loaded from YAML; `to_params()` becomes MLflow params."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ebm_core import DetectorConfig, LangevinSampler, TrainConfig

DEMO_CONFIG_PATH = Path(__file__).with_name("configs") / "demo.yaml"
CLINC150_CONFIG_PATH = Path(__file__).with_name("configs") / "clinc150.yaml"


@dataclass(frozen=True)
class DigitsDataConfig:
    in_distribution_digits: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    ood_digits: tuple[int, ...] = (6, 7, 8, 9)
    train_fraction: float = 0.4
    calibration_fraction: float = 0.3
    n_uniform_noise: int = 500

    def __post_init__(self):
        overlap = set(self.in_distribution_digits) & set(self.ood_digits)
        if overlap:
            raise ValueError(f"digits {sorted(overlap)} are both in-distribution and OOD")
        if not 0 < self.train_fraction + self.calibration_fraction < 1:
            raise ValueError("train_fraction + calibration_fraction must leave a test share in (0, 1)")


@dataclass(frozen=True)
class PipelineConfig:
    experiment_name: str = "ebm-guard"
    model_name: str = "ebm-guard"
    alpha: float = 0.05
    seed: int = 0
    featurizer: str | None = None  # "all-MiniLM-L6-v2" when the guard takes raw text
    data: DigitsDataConfig = field(default_factory=DigitsDataConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["data"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["data"].items()}
        data["detector"] = self.detector.to_dict()
        return data

    def to_params(self) -> dict[str, str]:
        """Flat `section.key` -> value strings, for MLflow params."""
        return {key: str(value) for key, value in _flatten(self.to_dict()).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PipelineConfig":
        data = dict(data)
        unknown = set(data) - {"experiment_name", "model_name", "alpha", "seed", "featurizer", "data", "detector"}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        digits = {k: tuple(v) if isinstance(v, list) else v for k, v in (data.pop("data", {}) or {}).items()}
        return cls(
            data=DigitsDataConfig(**digits),
            detector=DetectorConfig.from_dict(data.pop("detector", {}) or {}),
            **data,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from error
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error

    def with_objective(self, objective: str) -> "PipelineConfig":
        return replace(self, detector=replace(self.detector, objective=objective))

    def with_training_steps(self, n_steps: int) -> "PipelineConfig":
        detector = replace(self.detector, train=replace(self.detector.train, n_steps=n_steps))
        return replace(self, detector=detector)


def demo_config() -> PipelineConfig:
    return PipelineConfig.from_yaml(DEMO_CONFIG_PATH)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


__all__ = ["DigitsDataConfig", "LangevinSampler", "PipelineConfig", "TrainConfig", "demo_config"]
