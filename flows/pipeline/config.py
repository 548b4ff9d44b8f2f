"""Pipeline configuration: frozen dataclasses loaded from YAML; `to_params()` becomes MLflow params."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ebm_core import DetectorConfig, LangevinSampler, TrainConfig
from flows.data.datasets import DigitsDataConfig
from flows.guard.names import DEFAULT_MODEL_NAME

DEMO_CONFIG_PATH = Path(__file__).with_name("configs") / "demo.yaml"
DEFAULT_CONFIG_PATH = Path(__file__).with_name("configs") / "default.yaml"


@dataclass(frozen=True)
class SelectionConfig:
    """The selection stage: on (default), candidates from `search_space` (default: the packaged
    flows/pipeline/configs/search_space.yaml) are chosen on validation data; off, `detector` is
    trained as configured."""

    enabled: bool = True
    budget: str = "default"  # a key of the search space's `budgets` (multiplies training steps)
    search_space: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    experiment_name: str = DEFAULT_MODEL_NAME
    model_name: str = DEFAULT_MODEL_NAME
    alpha: float = 0.05
    seed: int = 0
    featurizer: str | None = None  # "all-MiniLM-L6-v2" when the guard takes raw text
    data: DigitsDataConfig = field(default_factory=DigitsDataConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

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
        unknown = set(data) - {
            "experiment_name", "model_name", "alpha", "seed", "featurizer", "data", "detector", "selection"
        }
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        digits = {k: tuple(v) if isinstance(v, list) else v for k, v in (data.pop("data", {}) or {}).items()}
        return cls(
            data=DigitsDataConfig(**digits),
            detector=DetectorConfig.from_dict(data.pop("detector", {}) or {}),
            selection=SelectionConfig(**(data.pop("selection", {}) or {})),
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
        """Train this one objective (the selection stage is turned off)."""
        return replace(
            self, detector=self.detector.with_objective(objective), selection=replace(self.selection, enabled=False)
        )

    def with_selection_budget(self, budget: str) -> "PipelineConfig":
        return replace(self, selection=replace(self.selection, budget=budget))

    def with_training_steps(self, n_steps: int) -> "PipelineConfig":
        detector = replace(self.detector, train=replace(self.detector.train, n_steps=n_steps))
        return replace(self, detector=detector)


def demo_config() -> PipelineConfig:
    return PipelineConfig.from_yaml(DEMO_CONFIG_PATH)


def default_config() -> PipelineConfig:
    """Settings for any user's data: the same for every data set (the selection stage adapts)."""
    return PipelineConfig.from_yaml(DEFAULT_CONFIG_PATH)


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
