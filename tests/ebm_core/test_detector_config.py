"""DetectorConfig: per-algorithm configs chosen by name, dict round trips, and the earlier flat schema."""

import json
from dataclasses import replace

import pytest
import yaml

from ebm_core import (
    OBJECTIVES,
    SAMPLERS,
    CDConfig,
    DetectorConfig,
    DSMConfig,
    HMCSampler,
    LangevinSampler,
    MarginConfig,
    NCEConfig,
    SSMConfig,
    TrainConfig,
    objective_config,
    sampler_config,
)

NESTED_YAML = """
hidden_dims: [256, 256]
objective: {name: cd, buffer_capacity: 10000, buffer_reinit_rate: 0.05, energy_l2: 0.01}
sampler: {name: langevin, step_size: 0.01, noise_scale: 0.1, n_steps: 20}
train: {n_steps: 1000, batch_size: 128, learning_rate: 0.0001, grad_clip: 1.0, max_rollbacks: 3}
device: cpu
"""
FLAT_YAML = """
hidden_dims: [256, 256]
sampler: {step_size: 0.01, noise_scale: 0.1, n_steps: 20}
buffer_capacity: 10000
buffer_reinit_rate: 0.05
energy_l2: 0.01
train: {n_steps: 1000, batch_size: 128, learning_rate: 0.0001, grad_clip: 1.0, max_rollbacks: 3}
device: cpu
"""


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_every_objective_and_sampler_round_trips_through_plain_json(objective, sampler):
    config = DetectorConfig().with_objective(objective).with_sampler(sampler)
    data = config.to_dict()
    assert data["objective"]["name"] == objective and data["sampler"]["name"] == sampler
    assert json.loads(json.dumps(data)) == data  # plain JSON types only
    assert DetectorConfig.from_dict(data) == config
    assert config.objective_name == objective and type(config.objective) is OBJECTIVES[objective]


def test_the_demo_config_reads_the_same_in_the_nested_and_the_flat_schema():
    nested = DetectorConfig.from_dict(yaml.safe_load(NESTED_YAML))
    flat = DetectorConfig.from_dict(yaml.safe_load(FLAT_YAML))
    assert nested == flat
    assert nested.objective == CDConfig(buffer_capacity=10_000, buffer_reinit_rate=0.05, energy_l2=0.01)
    assert nested.sampler == LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=20)
    assert nested.train == TrainConfig(n_steps=1000, batch_size=128, learning_rate=1e-4, max_rollbacks=3)


@pytest.mark.parametrize(
    "flat, expected",
    [
        ({"objective": "dsm", "dsm_sigmas": [0.5]}, DSMConfig(sigmas=(0.5,))),
        ({"objective": "ssm", "ssm_projections": 2}, SSMConfig(n_projections=2)),
        ({"objective": "nce", "nce_noise_ratio": 2, "nce_noise_scale": 3.0}, NCEConfig(noise_ratio=2, noise_scale=3.0)),
        ({"objective": "margin", "margin_in": -8.0, "margin_out": -2.0}, MarginConfig(m_in=-8.0, m_out=-2.0)),
        # keys of other objectives had no effect in the flat schema, and have none now
        ({"objective": "margin", "dsm_sigmas": [0.5], "buffer_capacity": 5}, MarginConfig()),
        ({"objective": "cdk", "energy_l2": 0.2, "buffer_capacity": 5}, objective_config("cdk", energy_l2=0.2)),
        ({"objective": "jem", "buffer_capacity": 5}, objective_config("jem", buffer_capacity=5)),
    ],
)
def test_flat_objective_keys_map_onto_the_named_objective_config(flat, expected):
    assert DetectorConfig.from_dict(flat).objective == expected


def test_a_name_alone_selects_the_default_config_of_an_objective_or_sampler():
    config = DetectorConfig.from_dict({"objective": "nce", "sampler": "hmc"})
    assert config.objective == NCEConfig() and config.sampler == HMCSampler()
    config = DetectorConfig.from_dict(
        {"objective": {"name": "dsm", "sigmas": [0.5]}, "sampler": {"name": "hmc", "n_leapfrog": 3}}
    )
    assert config.objective == DSMConfig(sigmas=(0.5,)) and config.sampler == HMCSampler(n_leapfrog=3)


def test_config_errors_say_what_to_change():
    with pytest.raises(ValueError, match=f"unknown objective 'gan'; expected one of {', '.join(OBJECTIVES)}"):
        DetectorConfig().with_objective("gan")
    with pytest.raises(ValueError, match="unknown sampler 'gibbs'; expected one of langevin, mala, hmc"):
        DetectorConfig.from_dict({"sampler": {"name": "gibbs"}})
    with pytest.raises(ValueError, match=r"dsm_sigmas -> objective.sigmas"):
        DetectorConfig.from_dict({"objective": {"name": "dsm"}, "dsm_sigmas": [0.5]})
    with pytest.raises(ValueError, match=r"objective 'dsm' has no field\(s\) \['sigma'\]; its fields are: sigmas"):
        DetectorConfig.from_dict({"objective": {"name": "dsm", "sigma": 0.5}})
    with pytest.raises(ValueError, match="needs a 'name'"):
        DetectorConfig.from_dict({"objective": {"sigmas": [0.5]}})
    with pytest.raises(ValueError, match=r"detector config has no field\(s\) \['hidden'\]"):
        DetectorConfig.from_dict({"hidden": [8]})
    with pytest.raises(ValueError, match=r"train has no field\(s\) \['steps'\]"):
        DetectorConfig.from_dict({"train": {"steps": 8}})
    with pytest.raises(TypeError, match="with_objective"):
        DetectorConfig(objective="dsm")


def test_helpers_swap_one_part_and_keep_the_rest():
    base = DetectorConfig(hidden_dims=(8,), score_temperature=0.5, sampler=sampler_config("mala", n_steps=3))
    swapped = base.with_objective("margin")
    assert swapped.objective == MarginConfig() and swapped.objective_name == "margin"
    assert replace(swapped, objective=base.objective) == base
    longer = base.with_training_steps(7)
    assert longer.train.n_steps == 7 and replace(longer, train=base.train) == base
