"""Divergence recovery, EMA weights and checkpoint/resume of the training loop."""

import pytest
import torch

from ebm_core import LangevinSampler, MLPEnergy, NonFiniteLossError, TrainConfig, train_energy
from ebm_core.checkpoint import checkpoint_path, load_checkpoint
from ebm_core.energies.mlp import MLPEnergyConfig
from ebm_core.errors import NonFiniteError
from ebm_core.objectives import (
    DenoisingScoreMatching,
    NoiseContrastiveEstimation,
    ObjectiveOutput,
    PersistentContrastiveDivergence,
)
from ebm_core.replay_buffer import ReplayBuffer
from ebm_core.stability import DivergenceError, ExponentialMovingAverage


def small_mlp(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MLPEnergy(MLPEnergyConfig(2, (16, 16)))


def data(seed=0):
    return torch.randn((200, 2), generator=torch.Generator().manual_seed(seed))


def train(energy, objective, config, seed=0, **kwargs):
    return train_energy(energy, objective, data(), config, torch.Generator().manual_seed(seed), **kwargs)


class FailsAt:
    """Pulls energies down like a real objective, and goes wrong in one way on chosen calls."""

    def __init__(self, kind, bad_calls):
        self.kind = kind
        self.bad_calls = set(bad_calls)
        self.calls = 0

    def __call__(self, energy_fn, x, generator):
        self.calls += 1
        e_pos = energy_fn(x)
        loss = e_pos.mean() + 0.1 * e_pos.pow(2).mean()
        stats = {"e_pos": float(e_pos.mean().detach())}
        if self.calls in self.bad_calls or "always" in self.bad_calls:
            if self.kind == "nan-loss":
                loss = loss * float("nan")
            elif self.kind == "exploding-energy":
                stats["e_pos"] = 1e9
            elif self.kind == "exploding-gradient":
                loss = loss * 1e12
            elif self.kind == "sampler-error":
                raise NonFiniteError("Langevin sampler: energy gradient became non-finite")
        return ObjectiveOutput(loss=loss, stats=stats)


KINDS = {
    "nan-loss": (NonFiniteLossError, "nan"),
    "exploding-energy": (DivergenceError, "energy_limit"),
    "exploding-gradient": (DivergenceError, "grad_norm_limit"),
    "sampler-error": (NonFiniteError, "non-finite"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_diverged_step_rolls_back_lowers_the_learning_rate_reseeds_and_training_completes(kind):
    energy = small_mlp()
    config = TrainConfig(n_steps=20, learning_rate=1e-2, log_every=1, checkpoint_every=5, max_rollbacks=2)

    history = train(energy, FailsAt(kind, {8}), config)

    assert history.steps == list(range(1, 21))  # the discarded steps 6-7 were re-run and recorded once
    assert len(history.rollbacks) == 1
    record = history.rollbacks[0]
    assert (record["step"], record["restored_step"]) == (8, 5)
    assert record["learning_rate"] == pytest.approx(5e-3)
    assert KINDS[kind][1] in record["reason"].lower()
    learning_rates = history.stats["learning_rate"]
    assert learning_rates[4] == 1e-2 and learning_rates[-1] == pytest.approx(5e-3)
    assert all(torch.isfinite(p).all() for p in energy.parameters())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_without_rollback_a_divergence_stops_the_run_with_an_error_naming_the_step(kind):
    error_type, _ = KINDS[kind]
    config = TrainConfig(n_steps=20, log_every=1)  # max_rollbacks = 0 by default
    with pytest.raises(error_type, match="step 4") as info:
        train(small_mlp(), FailsAt(kind, {4}), config)
    if hasattr(info.value, "step"):
        assert info.value.step == 4


def test_rollbacks_are_bounded_and_the_last_error_names_its_step():
    config = TrainConfig(n_steps=20, log_every=1, checkpoint_every=5, max_rollbacks=2)
    with pytest.raises(NonFiniteLossError, match="2 rollback") as info:
        train(small_mlp(), FailsAt("nan-loss", {"always"}), config)
    assert info.value.step == 1  # rolled back to the start twice, then gave up at step 1


def test_a_different_seed_follows_each_rollback():
    config = TrainConfig(n_steps=12, log_every=1, checkpoint_every=5, max_rollbacks=1)
    runs = [train(small_mlp(), FailsAt("nan-loss", {8}), config) for _ in range(2)]
    assert runs[0].rollbacks == runs[1].rollbacks  # reproducible from the original seed
    assert runs[0].rollbacks[0]["seed"] != 0


def make_run(objective_name, tmp_seed=0):
    """Fresh objects for one run; the replay buffer shares the training generator."""
    generator = torch.Generator().manual_seed(tmp_seed)
    energy = small_mlp()
    x = data()
    if objective_name == "pcd":
        buffer = ReplayBuffer(100, torch.full((2,), -3.0), torch.full((2,), 3.0), 0.1, generator)
        sampler = LangevinSampler(step_size=0.05, noise_scale=0.1, n_steps=3)
        objective = PersistentContrastiveDivergence(sampler, buffer)
    else:
        objective = NoiseContrastiveEstimation.fitted_to(x, noise_ratio=2, noise_scale=1.5)
    return energy, objective, x, generator


class KillAt:
    def __init__(self, step):
        self.step = step

    def __call__(self, step, n_steps, metrics):
        if step == self.step:
            raise KeyboardInterrupt(f"killed at step {step}")


@pytest.mark.parametrize("objective_name", ["pcd", "nce"])
def test_a_killed_run_resumed_from_its_checkpoint_ends_with_the_uninterrupted_parameters(tmp_path, objective_name):
    config = TrainConfig(
        n_steps=30, batch_size=32, learning_rate=1e-2, log_every=1, checkpoint_every=5, ema_decay=0.9
    )

    energy, objective, x, generator = make_run(objective_name)
    uninterrupted = train_energy(energy, objective, x, config, generator)

    killed_energy, killed_objective, x, generator = make_run(objective_name)
    with pytest.raises(KeyboardInterrupt):
        train_energy(
            killed_energy, killed_objective, x, config, generator, callbacks=(KillAt(17),), checkpoint_dir=tmp_path
        )
    assert load_checkpoint(tmp_path)["step"] == 15  # the last checkpoint before the kill

    resumed_energy, resumed_objective, x, generator = make_run(objective_name)  # a new process, as it were
    resumed = train_energy(
        resumed_energy, resumed_objective, x, config, generator, checkpoint_dir=tmp_path, resume=True
    )

    for a, b in zip(energy.state_dict().values(), resumed_energy.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(objective.state_dict().values(), resumed_objective.state_dict().values()):
        if isinstance(a, dict):  # the replay buffer
            assert torch.equal(a["samples"], b["samples"]) and torch.equal(a["age"], b["age"])
        else:
            assert torch.equal(a, b)
    assert resumed.steps == uninterrupted.steps == list(range(1, 31))
    assert resumed.loss == uninterrupted.loss
    assert resumed.resumed_from == [15]


def test_resume_without_a_checkpoint_starts_fresh_and_needs_a_directory(tmp_path):
    config = TrainConfig(n_steps=6, log_every=1, checkpoint_every=3)
    history = train(small_mlp(), FailsAt("none", ()), config, checkpoint_dir=tmp_path, resume=True)
    assert history.resumed_from == [] and checkpoint_path(tmp_path).exists()
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(small_mlp(), FailsAt("none", ()), config, resume=True)
    # A finished run resumed again changes nothing.
    again = small_mlp(seed=1)
    train(again, FailsAt("none", ()), config, seed=5, checkpoint_dir=tmp_path, resume=True)
    finished = load_checkpoint(tmp_path)["model"]
    assert all(torch.equal(finished[k], v) for k, v in again.state_dict().items())


def test_ema_tracks_the_exponential_average_of_the_weights():
    module = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema = ExponentialMovingAverage(module, decay=0.5)
    for value in (1.0, 2.0, 4.0):
        with torch.no_grad():
            module.weight.fill_(value)
        ema.update(module)
    ema.copy_to(module)
    # ((0 * .5 + 1 * .5) * .5 + 2 * .5) * .5 + 4 * .5 = 2.625
    assert float(module.weight.detach()) == pytest.approx(2.625)


def test_device_and_compile_settings():
    energy = small_mlp()
    history = train(energy, FailsAt("none", ()), TrainConfig(n_steps=3), device="cpu")
    assert history.steps[-1] == 3 and next(energy.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="double backward"):
        train(small_mlp(), DenoisingScoreMatching(), TrainConfig(n_steps=3, compile=True))
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
