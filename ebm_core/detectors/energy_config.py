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
        overrides = {"objective": objective, "train": from_plain(TrainConfig, data.pop("train", None) or {}, "train")}
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
    return objective_config(raw.pop("name"), **raw)


def _sampler_from(raw) -> Sampler | None:
    if raw is None:
        return None  # the dataclass default
    if isinstance(raw, str):
        return sampler_config(raw)
    if not isinstance(raw, dict):
        raise ValueError(f"sampler must be a name or a mapping, got {raw!r}")
    raw = dict(raw)
    return sampler_config(raw.pop("name", "langevin"), **raw)  # the flat schema's sampler was Langevin
