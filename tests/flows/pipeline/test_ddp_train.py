"""`--nproc 2` (torchrun, gloo) against one process, through the pipeline, on the digits demo data.

The comparison trains the `ce` objective (a classifier energy by cross-entropy): it draws nothing but
the batch order, and the distributed loop draws the same global batches from the same seed, so the two
runs are the same computation up to float summation order (two half-batch gradients averaged instead
of one). Their AUROCs therefore agree far inside the 0.005 the issue asks for; the tolerance used is
that 0.005. (Sampling objectives like cd differ by their per-rank Langevin noise as two seeds differ:
benchmarks/ddp.py measures that case, docs/benchmarks.md has the figures.)
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from ebm_core import TrainConfig, load_detector
from flows.data.datasets import LABEL_COLUMN
from flows.pipeline import steps
from flows.pipeline.config import demo_config

pytestmark = pytest.mark.slow


def small_config(objective: str = "ce"):
    config = demo_config().with_objective(objective)
    detector = replace(
        config.detector, hidden_dims=(64, 64), train=TrainConfig(n_steps=120, batch_size=64, learning_rate=1e-3)
    )
    return replace(config, detector=detector)


@pytest.mark.usefixtures("prefect_harness")
def test_two_processes_register_a_detector_scoring_like_one_process(ebmops_home):
    from flows.pipeline.train_and_register import train_and_register

    config = small_config()
    single = train_and_register(config, progress=False)
    double = train_and_register(config, progress=False, nproc=2)
    assert (single.registered.version, double.registered.version) == ("1", "2")
    aurocs = {k: (v, double.metrics[k]) for k, v in single.metrics.items() if k.endswith(".auroc")}
    assert set(aurocs) == {"ood_digits.auroc", "ood_uniform_noise.auroc", "ood_inverted.auroc"}
    for name, (one, two) in aurocs.items():
        assert abs(one - two) <= 0.005, (name, one, two)
    assert single.metrics["ood_digits.auroc"] > 0.6  # it learned something in 120 steps
    # the same batches, the same losses (up to float summation order)
    loss_1 = load_detector(single.run_dir / "detector").history_.loss
    loss_2 = load_detector(double.run_dir / "detector").history_.loss
    assert loss_2 == pytest.approx(loss_1, rel=1e-3, abs=1e-4)
    leftovers = [p.name for p in double.run_dir.iterdir() if p.name.startswith(".detector")]
    assert leftovers == []
    assert json.loads((double.run_dir / "detector.ddp" / "job.json").read_text())["seed"] == config.seed


def test_nproc_with_the_selection_stage_is_refused_in_one_line(ebmops_home):
    from flows.pipeline.train_and_register import train_and_register

    with pytest.raises(ValueError, match="nproc > 1 trains one detector"):
        train_and_register.fn(demo_config(), progress=False, nproc=2)


def digits_data(tmp_path: Path) -> steps.PreparedData:
    config = small_config()
    return steps.load_data(config, tmp_path)


def test_an_error_in_the_ranks_is_one_line_and_leaves_no_detector_folder(tmp_path):
    data = digits_data(tmp_path)
    train = pd.read_parquet(data.path("train")).drop(columns=[LABEL_COLUMN])
    train.to_parquet(data.path("train"))  # ce needs labels: every rank refuses
    out_dir = tmp_path / "detector"
    with pytest.raises(steps.DistributedTrainingError) as caught:
        steps.train_detector(data, small_config().detector, 0, out_dir, progress=False, nproc=2)
    message = str(caught.value)
    assert "\n" not in message
    assert "distributed training failed on rank" in message
    assert "ValueError: objective 'ce' needs labels (y)" in message
    assert not out_dir.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".detector")] == []


def test_a_rank_killed_mid_run_leaves_no_detector_folder(tmp_path, monkeypatch):
    data = digits_data(tmp_path)
    monkeypatch.setenv("EBMOPS_FAULT_POINT", "ddp_train.rank1.after_fit")  # SIGKILL rank 1 after training
    config = replace(small_config().detector, train=TrainConfig(n_steps=5, batch_size=64))
    out_dir = tmp_path / "detector"
    with pytest.raises(steps.DistributedTrainingError, match=r"rank (0, )?1 stopped without reporting an error"):
        steps.train_detector(data, config, 0, out_dir, progress=False, nproc=2)
    assert not out_dir.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".detector")] == []


def test_cli_refuses_nproc_without_objective_in_one_line(ebmops_home):
    from typer.testing import CliRunner

    from flows.cli.app import app

    result = CliRunner().invoke(app, ["demo", "--nproc", "2"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "give --objective or drop --nproc" in " ".join(result.output.split())
