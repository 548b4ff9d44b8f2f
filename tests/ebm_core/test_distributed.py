"""Data-parallel training (ebm_core.distributed + train_energy(distributed=...)) with 2 gloo processes.

Known answers: the all-reduced gradient of two half batches is the single-process gradient of the whole
batch (and, for a Gaussian energy, the analytic one); a deterministic objective trained on 2 ranks ends
where the single-process loop ends; PCD on 2 ranks leaves both ranks with identical parameters; an error
on one rank stops every rank with that error named.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ebm_core import LangevinSampler, MLPEnergy, TrainConfig, train_energy
from ebm_core.distributed import (
    DistributedContext,
    all_reduce_gradients,
    rank_seed,
    shard,
)
from ebm_core.energies.mlp import MLPEnergyConfig
from ebm_core.errors import NonFiniteError
from ebm_core.objectives import ObjectiveOutput
from ebm_core.objectives.contrastive_divergence import PersistentContrastiveDivergence, replay_buffer_for

WORLD = 2
pytestmark = pytest.mark.slow  # each test starts two Python processes that import torch


class GaussianEnergy(torch.nn.Module):
    """E(x) = 0.5 * sum_d (x_d - mu_d)^2 * exp(log_prec_d): dE/dmu = -(x - mu) * prec."""

    def __init__(self, dim: int):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.linspace(-0.5, 0.5, dim))
        self.log_prec = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x):  # (B, D) -> (B,)
        return 0.5 * ((x - self.mu) ** 2 * self.log_prec.exp()).sum(dim=1)


class MeanEnergy:
    """A deterministic objective (no draws): loss = mean E + 0.1 mean E^2."""

    def __call__(self, energy_fn, x, generator):
        e = energy_fn(x)
        return ObjectiveOutput(loss=e.mean() + 0.1 * e.pow(2).mean(), stats={"e_pos": float(e.mean().detach())})


class FailOnRank:
    """Raises NonFiniteError on one rank at one step (a sampler meeting NaN energies there)."""

    def __init__(self, rank: int, bad_call: int):
        self.rank, self.bad_call, self.calls = rank, bad_call, 0

    def __call__(self, energy_fn, x, generator):
        self.calls += 1
        if dist.get_rank() == self.rank and self.calls == self.bad_call:
            raise NonFiniteError("sampler met a non-finite energy")
        return MeanEnergy()(energy_fn, x, generator)


def gaussian_data(n: int = 64, dim: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return 1.0 + 0.5 * torch.randn((n, dim), generator=generator)


def _init(rank: int, store: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120)
    )


def _worker(rank: int, store: str, out_dir: str, case: str) -> None:
    _init(rank, store)
    try:
        result = CASES[case](rank)
        torch.save(result, Path(out_dir) / f"{case}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _case_gradients(rank: int) -> dict:
    x = gaussian_data()
    energy = GaussianEnergy(x.shape[1])
    index = torch.arange(x.shape[0])
    mine = shard(index, rank, WORLD)
    energy(x[mine]).mean().backward()
    all_reduce_gradients(list(energy.parameters()), mine.shape[0] / index.shape[0])
    return {
        "rows": mine,
        "grad_mu": energy.mu.grad.clone(),
        "grad_log_prec": energy.log_prec.grad.clone(),
    }


def _case_deterministic_training(rank: int) -> dict:
    x = gaussian_data()
    energy = GaussianEnergy(x.shape[1])
    if rank == 1:  # different start: the broadcast from rank 0 must put it right
        with torch.no_grad():
            energy.mu.add_(3.0)
    context = DistributedContext(rank, WORLD, torch.Generator().manual_seed(rank_seed(0, rank)))
    config = TrainConfig(n_steps=8, batch_size=16, learning_rate=0.05, log_every=1)
    history = train_energy(energy, MeanEnergy(), x, config, torch.Generator().manual_seed(3), distributed=context)
    return {"state": {k: v.clone() for k, v in energy.state_dict().items()}, "loss": history.loss}


def _case_pcd(rank: int) -> dict:
    x = gaussian_data(256, 2)
    with torch.random.fork_rng():
        torch.manual_seed(rank)  # different inits on purpose
        energy = MLPEnergy(MLPEnergyConfig(2, (16, 16)))
    noise = torch.Generator().manual_seed(rank_seed(0, rank))
    objective = PersistentContrastiveDivergence(
        LangevinSampler(step_size=0.01, noise_scale=0.5, n_steps=5), replay_buffer_for(x, 256, 0.05, 0.25, noise), 0.1
    )
    context = DistributedContext(rank, WORLD, noise)
    config = TrainConfig(n_steps=6, batch_size=32, learning_rate=1e-2, log_every=1)
    history = train_energy(energy, objective, x, config, torch.Generator().manual_seed(0), distributed=context)
    return {
        "state": {k: v.clone() for k, v in energy.state_dict().items()},
        "loss": history.loss,
        "buffer": objective.buffer.samples[:8].clone(),
    }


def _case_error_on_one_rank(rank: int) -> dict:
    x = gaussian_data()
    context = DistributedContext(rank, WORLD, torch.Generator().manual_seed(rank_seed(0, rank)))
    config = TrainConfig(n_steps=5, batch_size=16, learning_rate=0.05)
    try:
        train_energy(GaussianEnergy(3), FailOnRank(1, 3), x, config, torch.Generator().manual_seed(0), distributed=context)
    except NonFiniteError as error:
        return {"error": f"{type(error).__name__}: {error}"}
    return {"error": None}


CASES = {
    "gradients": _case_gradients,
    "deterministic": _case_deterministic_training,
    "pcd": _case_pcd,
    "error": _case_error_on_one_rank,
}


def run_ranks(case: str, tmp_path: Path) -> list[dict]:
    store = tmp_path / f"store-{case}"
    mp.spawn(_worker, args=(str(store), str(tmp_path), case), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"{case}-rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_all_reduced_shard_gradients_equal_the_whole_batch_gradient(tmp_path):
    results = run_ranks("gradients", tmp_path)
    x = gaussian_data()
    energy = GaussianEnergy(x.shape[1])
    energy(x).mean().backward()  # single process, the whole batch
    prec = energy.log_prec.detach().exp()
    analytic_mu = -((x - energy.mu.detach()) * prec).mean(dim=0)
    assert torch.equal(torch.cat([r["rows"] for r in results]), torch.arange(x.shape[0]))  # a partition
    for r in results:
        torch.testing.assert_close(r["grad_mu"], energy.mu.grad, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(r["grad_mu"], analytic_mu, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["grad_log_prec"], energy.log_prec.grad, rtol=1e-6, atol=1e-6)


def test_two_ranks_end_where_the_single_process_loop_ends(tmp_path):
    results = run_ranks("deterministic", tmp_path)
    x = gaussian_data()
    energy = GaussianEnergy(x.shape[1])
    config = TrainConfig(n_steps=8, batch_size=16, learning_rate=0.05, log_every=1)
    history = train_energy(energy, MeanEnergy(), x, config, torch.Generator().manual_seed(3))
    for r in results:
        for name, value in energy.state_dict().items():
            torch.testing.assert_close(r["state"][name], value, rtol=1e-5, atol=1e-6)
        assert r["loss"] == pytest.approx(history.loss, rel=1e-5)
    assert not torch.allclose(results[0]["state"]["mu"], torch.linspace(-0.5, 0.5, 3))  # it did train


def test_pcd_on_two_ranks_keeps_identical_parameters_and_distinct_chains(tmp_path):
    rank0, rank1 = run_ranks("pcd", tmp_path)
    for name in rank0["state"]:
        assert torch.equal(rank0["state"][name], rank1["state"][name]), name
    assert rank0["loss"] == rank1["loss"]  # reduced: every rank logs the global batch's loss
    assert not torch.equal(rank0["buffer"], rank1["buffer"])  # each rank samples its own negatives


def test_an_error_on_one_rank_stops_every_rank_naming_it(tmp_path):
    rank0, rank1 = run_ranks("error", tmp_path)
    assert "rank(s) 1" in rank0["error"]
    assert rank1["error"].startswith("NonFiniteError: sampler met a non-finite energy")


def test_rank_seeds_are_deterministic_and_distinct():
    seeds = [rank_seed(0, r) for r in range(4)] + [rank_seed(1, 0)]
    assert len(set(seeds)) == 5 and 0 not in seeds
    assert rank_seed(0, 1) == rank_seed(0, 1)
    with pytest.raises(ValueError, match="cannot be split over 4"):
        shard(torch.arange(3), 0, 4)
