"""Pipeline configuration: frozen dataclasses loaded from YAML; `to_params()` becomes MLflow params."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ebm_core import DetectorConfig, LangevinSampler, TrainConfig
from ebm_core.config_dict import from_plain
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

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise ValueError(f"selection.enabled must be true or false, got {self.enabled!r}")
        if not isinstance(self.budget, str) or not self.budget:
            raise ValueError(f"selection.budget must be a name, got {self.budget!r}")
        if self.search_space is not None and not isinstance(self.search_space, str):
            raise ValueError(f"selection.search_space must be a path, got {self.search_space!r}")


@dataclass(frozen=True)
class FeedbackConfig:
    """Train on the feedback store (flows/monitoring/feedback_store.py): on, the snapshot's confirmed
    problems join the `outliers` split and its confirmed-fine flagged inputs the train split, after
    the same checks as any training data; the newest `holdout_batches` batches are held out (for the
    promotion gate, never trained on). `model_name`: whose store (default: the pipeline's model)."""

    use: bool = False
    model_name: str | None = None
    holdout_batches: int = 1

    def __post_init__(self):
        if not isinstance(self.use, bool):
            raise ValueError(f"feedback.use must be true or false, got {self.use!r}")
        if self.model_name is not None:
            check_model_name(self.model_name)
        if not isinstance(self.holdout_batches, int) or isinstance(self.holdout_batches, bool) or self.holdout_batches < 0:
            raise ValueError(f"feedback.holdout_batches must be a whole number >= 0, got {self.holdout_batches!r}")


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
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)

    def __post_init__(self):
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be a number in (0, 1), got {self.alpha!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")
        check_model_name(self.model_name)
        check_experiment_name(self.experiment_name)
        if self.featurizer is not None and self.featurizer not in KNOWN_FEATURIZERS:
            raise ValueError(f"featurizer must be one of {list(KNOWN_FEATURIZERS)} or null, got {self.featurizer!r}")
        for name, cls in (
            ("data", DigitsDataConfig), ("detector", DetectorConfig), ("selection", SelectionConfig),
            ("feedback", FeedbackConfig),
        ):  # fmt: skip
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")

    def check_runnable(self) -> None:
        """What only shows when the run gets there, checked now: the selection stage's search space loads
        and defines the budget. Raises ValueError naming the file or the budget."""
        if not self.selection.enabled:
            return
        from flows.pipeline import selection

        path = Path(self.selection.search_space or selection.SEARCH_SPACE_PATH)
        if not path.is_file():
            raise ValueError(f"selection.search_space {str(path)!r} is not a file")
        try:
            space = selection.SearchSpace.from_yaml(path)
        except (OSError, TypeError, ValueError, yaml.YAMLError) as error:
            raise ValueError(f"selection.search_space {path}: {_first_line(error)}") from error
        space.step_scale(self.selection.budget)  # ValueError naming the budgets that exist

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
        if not isinstance(data, dict):
            raise ValueError(f"a pipeline config is a mapping of keys to values, got {type(data).__name__}")
        data = dict(data)
        for section in ("data", "detector", "selection", "feedback"):
            if data.get(section) is not None and not isinstance(data[section], dict):
                raise ValueError(f"{section} must be a mapping, got {data[section]!r}")
        unknown = set(data) - {
            "experiment_name", "model_name", "alpha", "seed", "featurizer", "data", "detector", "selection", "feedback"
        }
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        digits = data.pop("data", {}) or {}
        return cls(
            data=from_plain(DigitsDataConfig, digits, "data"),
            detector=DetectorConfig.from_dict(data.pop("detector", {}) or {}),
            selection=from_plain(SelectionConfig, data.pop("selection", {}) or {}, "selection"),
            feedback=from_plain(FeedbackConfig, data.pop("feedback", {}) or {}, "feedback"),
            **data,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineConfig":
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ValueError(f"{path}: config file not found") from None
        except IsADirectoryError:
            raise ValueError(f"{path}: a directory, not a config file") from None
        except OSError as error:
            raise ValueError(f"{path}: cannot read the config file ({error.strerror or error})") from None
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or _first_line(error)
            raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
        try:
            return cls.from_dict({} if data is None else data)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {_first_line(error)}") from None

    def with_objective(self, objective: str) -> "PipelineConfig":
        """Train this one objective (the selection stage is turned off)."""
        return replace(
            self, detector=self.detector.with_objective(objective), selection=replace(self.selection, enabled=False)
        )

    def with_feedback(self, use: bool = True, holdout_batches: int | None = None) -> "PipelineConfig":
        """Train on the feedback store (or not); `holdout_batches` None keeps the configured number."""
        held = self.feedback.holdout_batches if holdout_batches is None else holdout_batches
        return replace(self, feedback=replace(self.feedback, use=use, holdout_batches=held))

    @property
    def feedback_model_name(self) -> str:
        """Whose feedback store a feedback run reads."""
        return self.feedback.model_name or self.model_name

    def with_selection_budget(self, budget: str) -> "PipelineConfig":
        return replace(self, selection=replace(self.selection, budget=budget))

    def with_training_steps(self, n_steps: int) -> "PipelineConfig":
        detector = replace(self.detector, train=replace(self.detector.train, n_steps=n_steps))
        return replace(self, detector=detector)


# MLflow's rules for a registered model name (mlflow.utils.validation._validate_model_name and the
# 256-character column), plus '@' and control characters, which would break models:/<name>@<alias>.
MAX_MODEL_NAME_LENGTH = 256
MAX_EXPERIMENT_NAME_LENGTH = 500
KNOWN_FEATURIZERS = ("all-MiniLM-L6-v2",)


def check_model_name(name) -> str:
    """`name` if MLflow can register it and ebmops can address it as models:/<name>@<alias>; else ValueError."""
    import posixpath
    import re

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model_name must be a non-empty string, got {name!r}")
    why = None
    if len(name) > MAX_MODEL_NAME_LENGTH:
        why = f"longer than {MAX_MODEL_NAME_LENGTH} characters"
    elif any(c in name for c in "/:@%\\"):
        why = "it may not contain '/', ':', '@', '%' or '\\'"
    elif re.search(r"[\x00-\x1f\x7f]", name):
        why = "it may not contain control characters"
    elif name != name.strip():
        why = "it may not start or end with spaces"
    elif posixpath.normpath(name) != name or name in (".", "..") or name.startswith(".."):
        why = f"it would resolve to the path {posixpath.normpath(name)!r}"
    if why:
        shown = name if len(name) <= 80 else name[:60] + "..."
        raise ValueError(f"model_name {shown!r} is not a valid registered model name: {why}")
    return name


def check_experiment_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"experiment_name must be a non-empty string, got {name!r}")
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise ValueError(f"experiment_name is longer than {MAX_EXPERIMENT_NAME_LENGTH} characters")
    return name


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
