"""`DetectorConfig`: what an `EnergyDetector` trains: the energy network, one objective config, one
sampler config, the training loop's config and the device.

YAML (and `to_dict()`, which becomes MLflow params) nests the objective and the sampler by name:

    detector:
      hidden_dims: [256, 256]
      objective: {name: cd, buffer_capacity: 10000, buffer_reinit_rate: 0.05, energy_l2: 0.01}
      sampler: {name: langevin, step_size: 0.01, noise_scale: 0.1, n_steps: 20}
      train: {n_steps: 1000, batch_size: 128, learning_rate: 0.0001}

`from_dict` also reads the earlier flat schema (`objective: cd` beside `buffer_capacity`, `dsm_sigmas`,
`margin_in`, ... and a sampler without a name, which was always Langevin): see `LEGACY_OBJECTIVE_KEYS`.
Detectors saved before the nested schema carry a flat config, so this path stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from ebm_core.config_dict import from_plain, to_plain
from ebm_core.objectives import OBJECTIVES, CDConfig, ObjectiveConfig, objective_config
from ebm_core.samplers import SAMPLERS, LangevinSampler, Sampler, sampler_config
from ebm_core.training import TrainConfig

# Flat key of the earlier schema -> (objectives it configured, field of their config). A flat key that
# does not configure the named objective had no effect then and is dropped.
LEGACY_OBJECTIVE_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "buffer_capacity": (("cd", "jem"), "buffer_capacity"),
    "buffer_reinit_rate": (("cd", "jem"), "buffer_reinit_rate"),
    "noise_margin": (("cd", "jem"), "noise_margin"),
    "energy_l2": (("cd", "cdk", "jem"), "energy_l2"),
    "dsm_sigmas": (("dsm",), "sigmas"),
    "ssm_projections": (("ssm",), "n_projections"),
    "nce_noise_ratio": (("nce",), "noise_ratio"),
    "nce_noise_scale": (("nce",), "noise_scale"),
    "margin_in": (("margin",), "m_in"),
    "margin_out": (("margin",), "m_out"),
}


@dataclass(frozen=True)
class DetectorConfig:
    hidden_dims: tuple[int, ...] = (256, 256)
    spectral_norm: bool = False
    temperature: float = 1.0  # classifier energies: E(x) = -T logsumexp(f(x) / T), while training
    score_temperature: float | None = None  # classifier energies: T used for scoring, if different
    min_feature_scale: float = 1e-3  # features with a smaller std are not rescaled
    objective: ObjectiveConfig = field(default_factory=CDConfig)  # one of ebm_core.objectives.OBJECTIVES
    sampler: Sampler = field(  # negatives for cd, cdk and jem; one of ebm_core.samplers.SAMPLERS
        default_factory=lambda: LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=30, grad_clip=None)
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "cpu"

    def __post_init__(self):
        if type(self.objective) not in OBJECTIVES.values():
            raise TypeError(
                f"objective must be one of {', '.join(c.__name__ for c in OBJECTIVES.values())}, got "
                f"{self.objective!r}; to choose one by name: DetectorConfig().with_objective(name)"
            )
        if type(self.sampler) not in SAMPLERS.values():
            raise TypeError(
                f"sampler must be one of {', '.join(c.__name__ for c in SAMPLERS.values())}, got {self.sampler!r}"
            )
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        _check_detector_values(self)

    @property
    def objective_name(self) -> str:
        return self.objective.name

    def with_objective(self, name: str) -> "DetectorConfig":
        """This config with the default config of objective `name` (the rest kept)."""
        return replace(self, objective=objective_config(name))

    def with_sampler(self, name: str) -> "DetectorConfig":
        """This config with the default sampler `name` (the rest kept)."""
        return replace(self, sampler=sampler_config(name))

    def with_training_steps(self, n_steps: int) -> "DetectorConfig":
        return replace(self, train=replace(self.train, n_steps=n_steps))

    def to_dict(self) -> dict:
        """Plain JSON types, objective and sampler nested with their names."""
        data = {f.name: to_plain(getattr(self, f.name)) for f in fields(self)}
        data["objective"] = self.objective.to_dict()
        data["sampler"] = self.sampler.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DetectorConfig":
        """The nested schema of `to_dict`, or the earlier flat one (see the module docstring)."""
        data = dict(data)
        legacy = {key: data.pop(key) for key in list(data) if key in LEGACY_OBJECTIVE_KEYS}
        objective = _objective_from(data.pop("objective", None), legacy)
        sampler = _sampler_from(data.pop("sampler", None))
        train = data.pop("train", None) or {}
        _check_plain("detector.train", TrainConfig, train)  # before TrainConfig compares a str with an int
        overrides = {"objective": objective, "train": from_plain(TrainConfig, train, "train")}
        if sampler is not None:
            overrides["sampler"] = sampler
        return from_plain(cls, {**data, **overrides}, "detector config")


def _objective_from(raw, legacy: dict) -> ObjectiveConfig:
    if raw is None or isinstance(raw, str):
        name = raw or "cd"
        mapped = {field_name: legacy[key] for key, (names, field_name) in LEGACY_OBJECTIVE_KEYS.items()
                  if key in legacy and name in names}
        return objective_config(name, **mapped)
    if not isinstance(raw, dict):
        raise ValueError(f"objective must be a name or a mapping with a 'name', got {raw!r}")
    if legacy:
        hints = [f"{key} -> objective.{LEGACY_OBJECTIVE_KEYS[key][1]}" for key in sorted(legacy)]
        raise ValueError(
            f"flat keys {sorted(legacy)} of the earlier schema cannot be mixed with a nested objective; "
            f"move them into the objective mapping ({'; '.join(hints)})"
        )
    raw = dict(raw)
    if "name" not in raw:
        raise ValueError(f"objective mapping needs a 'name', one of {', '.join(OBJECTIVES)}; got {raw!r}")
    name = raw.pop("name")
    if name in OBJECTIVES:
        _check_plain(f"detector.objective({name})", OBJECTIVES[name], raw)
    return objective_config(name, **raw)


def _sampler_from(raw) -> Sampler | None:
    if raw is None:
        return None  # the dataclass default
    if isinstance(raw, str):
        return sampler_config(raw)
    if not isinstance(raw, dict):
        raise ValueError(f"sampler must be a name or a mapping, got {raw!r}")
    raw = dict(raw)
    name = raw.pop("name", "langevin")
    if name in SAMPLERS:
        _check_plain("detector.sampler", SAMPLERS[name], raw)
    return sampler_config(name, **raw)  # the flat schema's sampler was Langevin


# --- validation: a config that cannot train (or trains a constant energy) is refused when it is made --------

_COUNT_FIELDS = {"buffer_capacity", "noise_ratio", "n_projections", "k", "outlier_batch_size", "n_leapfrog"}
_SHARE_FIELDS = {"buffer_reinit_rate", "ema_decay", "step_jitter"}
_POSITIVE_FIELDS = {"learning_rate", "temperature", "score_temperature", "grad_clip", "rollback_lr_factor",
                    "energy_limit", "grad_norm_limit", "sigmas", "noise_scale_nce", "mass", "step_size"}
_NON_NEGATIVE_FIELDS = {"weight_decay", "noise_margin", "energy_l2", "min_feature_scale", "noise_scale",
                        "ce_weight", "margin_weight", "generative_weight"}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_value(where: str, name: str, annotation: str, value) -> None:
    """One field against its annotation ("int", "float | None", "tuple[float, ...]", "bool", "str") and
    the range its name implies. Raises ValueError naming `where.name`."""
    import math

    path = f"{where}.{name}"
    kind = str(annotation).replace(" ", "")
    if value is None:
        if "None" not in kind:
            raise ValueError(f"{path} must be set, got null")
        return
    base = kind.replace("|None", "")
    if base == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{path} must be true or false, got {value!r}")
        return
    if base == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{path} must be a whole number, got {value!r} ({type(value).__name__})")
        values = [value]
    elif base == "float":
        if not _is_number(value):
            hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
            raise ValueError(f"{path} must be a number, got {value!r} ({type(value).__name__}){hint}")
        values = [value]
    elif base.startswith("tuple[float") or base.startswith("tuple[int"):
        if not isinstance(value, (tuple, list)) or not all(_is_number(v) for v in value):
            raise ValueError(f"{path} must be a list of numbers, got {value!r}")
        values = list(value)
    else:
        return  # str, nested configs: checked by their own code
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{path} must be finite, got {v!r}")
        if name in _COUNT_FIELDS and v < 1:
            raise ValueError(f"{path} must be >= 1, got {v!r}")
        if name in _SHARE_FIELDS and not 0 <= v < 1:
            raise ValueError(f"{path} must be in [0, 1), got {v!r}")
        if name in _POSITIVE_FIELDS and not v > 0:
            raise ValueError(f"{path} must be > 0, got {v!r}")
        if name in _NON_NEGATIVE_FIELDS and not v >= 0:
            raise ValueError(f"{path} must be >= 0, got {v!r}")


def _check_fields(where: str, config) -> None:
    for f in fields(config):
        _check_value(where, f.name, f.type, getattr(config, f.name))


def _check_detector_values(config: "DetectorConfig") -> None:
    """Types and ranges of every field, the nested objective / sampler / train configs included: a
    hidden layer of width 0 (a constant energy), a negative learning rate, a step count given as text
    or a non-finite number is refused here, before anything trains."""
    dims = config.hidden_dims
    if not isinstance(dims, (tuple, list)) or not all(isinstance(h, int) and not isinstance(h, bool) for h in dims):
        raise ValueError(f"detector.hidden_dims must be a list of whole numbers, got {dims!r}")
    if any(h < 1 for h in dims):
        raise ValueError(
            f"detector.hidden_dims must be widths >= 1, got {list(dims)} (a layer of width 0 makes the energy constant)"
        )
    if not isinstance(config.device, str) or not (
        config.device in ("cpu", "cuda", "mps") or config.device.startswith("cuda:")
    ):
        raise ValueError(f"detector.device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {config.device!r}")
    for name in ("spectral_norm", "temperature", "score_temperature", "min_feature_scale"):
        annotation = next(f.type for f in fields(config) if f.name == name)
        _check_value("detector", name, annotation, getattr(config, name))
    _check_fields(f"detector.objective({config.objective.name})", config.objective)
    _check_fields("detector.sampler", config.sampler)
    _check_fields("detector.train", config.train)


def _check_plain(where: str, cls, raw) -> None:
    """The known fields of a plain mapping (YAML) against `cls`'s annotations, before `cls` is built (its
    own checks would compare a str with an int and raise a bare TypeError). Unknown keys are left to
    `from_plain`, which lists the fields that exist."""
    if not isinstance(raw, dict):
        return
    annotations = {f.name: f.type for f in fields(cls)}
    for key, value in raw.items():
        if key in annotations:
            _check_value(where, key, annotations[key], tuple(value) if isinstance(value, list) else value)
