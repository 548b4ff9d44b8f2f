"""The selection stage's candidates on Dask (EBMOPS_DASK_ADDRESS, flows/pipeline/task_runners.py): a
local cluster of two worker processes gives the same winner, the same candidate validation figures and
the same refit winner's test scores as the default in-process runner, with the same seed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from prefect.task_runners import ThreadPoolTaskRunner

from ebm_core import load_detector
from flows.data.datasets import pixel_columns
from flows.pipeline import selection, steps, task_runners
from flows.pipeline.config import SelectionConfig, demo_config
from flows.pipeline.train_and_register import train_and_register

TIMING_FIELDS = ("fit_seconds", "score_us_per_row")


def test_the_task_runner_follows_ebmops_dask_address_at_run_time(monkeypatch):
    from prefect_dask import DaskTaskRunner

    monkeypatch.delenv(task_runners.DASK_ADDRESS_ENV, raising=False)
    runner = train_and_register.task_runner.duplicate()  # what the flow engine enters for a run
    assert type(runner) is ThreadPoolTaskRunner and runner._max_workers == 1

    monkeypatch.setenv(task_runners.DASK_ADDRESS_ENV, "local")
    monkeypatch.setenv(task_runners.DASK_WORKERS_ENV, "3")
    runner = train_and_register.task_runner.duplicate()
    assert isinstance(runner, DaskTaskRunner) and runner.address is None
    assert runner.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1, "processes": True, "dashboard_address": None}

    monkeypatch.setenv(task_runners.DASK_ADDRESS_ENV, "tcp://10.0.0.5:8786")
    runner = train_and_register.task_runner.duplicate()
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://10.0.0.5:8786"

    monkeypatch.setenv(task_runners.DASK_ADDRESS_ENV, "local")
    monkeypatch.setenv(task_runners.DASK_WORKERS_ENV, "two")
    with pytest.raises(ValueError, match="EBMOPS_DASK_WORKERS must be a whole number of workers, got 'two'"):
        train_and_register.task_runner.duplicate()


def tiny_space(path: Path) -> Path:
    """The packaged search space (every kind: kernel densities, DSM and classifier energies, contrastive
    heads, compositions) with a `tiny` budget (5% of the steps) and two validation splits."""
    raw = yaml.safe_load(selection.SEARCH_SPACE_PATH.read_text())
    raw["budgets"] = {"tiny": 0.05}
    raw.setdefault("validation", {})["n_splits"] = 2
    path.write_text(yaml.safe_dump(raw))
    return path


def candidate_figures(selection_path: Path) -> dict[str, dict]:
    outcome = json.loads(Path(selection_path).read_text())
    return {
        c["name"]: {k: v for k, v in c.items() if k not in TIMING_FIELDS} for c in outcome["candidates"]
    }


def run_selection(config, run_label: str, monkeypatch, dask: bool):
    used = []
    real = task_runners.fan_out_task_runner

    def recording():
        runner = real()
        used.append(runner)
        return runner

    monkeypatch.setattr(task_runners, "fan_out_task_runner", recording)
    if dask:
        monkeypatch.setenv(task_runners.DASK_ADDRESS_ENV, "local")
        monkeypatch.setenv(task_runners.DASK_WORKERS_ENV, "2")
    else:
        monkeypatch.delenv(task_runners.DASK_ADDRESS_ENV, raising=False)
    result = train_and_register(config, progress=False)
    monkeypatch.delenv(task_runners.DASK_ADDRESS_ENV, raising=False)
    assert len(used) == 1, run_label
    return result, used[0]


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.usefixtures("prefect_harness")
def test_a_local_two_worker_cluster_selects_and_scores_like_the_in_process_runner(ebmops_home, tmp_path, monkeypatch):
    space = tiny_space(tmp_path / "space.yaml")
    config = replace(demo_config(), selection=SelectionConfig(budget="tiny", search_space=str(space)))

    local, local_runner = run_selection(config, "in-process", monkeypatch, dask=False)
    dask, dask_runner = run_selection(config, "dask", monkeypatch, dask=True)

    assert type(local_runner) is ThreadPoolTaskRunner
    assert type(dask_runner).__name__ == "DaskTaskRunner" and dask_runner._client is not None  # it was used
    assert dask_runner.cluster_kwargs["processes"] is True and dask_runner.cluster_kwargs["n_workers"] == 2

    local_selection = json.loads((local.run_dir / steps.SELECTION_FILE).read_text())
    dask_selection = json.loads((dask.run_dir / steps.SELECTION_FILE).read_text())
    assert dask_selection["winner"] == local_selection["winner"]
    local_figures = candidate_figures(local.run_dir / steps.SELECTION_FILE)
    dask_figures = candidate_figures(dask.run_dir / steps.SELECTION_FILE)
    assert len(local_figures) >= 10 and not any(f["error"] for f in local_figures.values())
    trained = [n for n, f in local_figures.items() if f["kind"] in ("energy", "contrastive_head")]
    assert len(trained) >= 4  # candidates whose parameters are drawn from torch's generator
    # identical, not close: the same seeds give the same draws in any process, one torch thread each,
    # and the summaries are rounded to 6 decimals (compositions are computed from the per-row scores)
    assert dask_figures == local_figures

    # The refit winner scores the test split identically, bit for bit: it is refit in the flow's
    # process from the same seed in both runs, so np.array_equal (not allclose) is the right check.
    x_test = pd.read_parquet(local.run_dir / "data" / "in_test.parquet")[pixel_columns()].to_numpy(np.float64)
    local_scores = load_detector(local.run_dir / "detector").score(x_test)
    dask_scores = load_detector(dask.run_dir / "detector").score(x_test)
    assert np.array_equal(local_scores, dask_scores)
    # and so does everything the report measures on the test splits (timings aside)
    untimed = lambda metrics: {k: v for k, v in metrics.items() if "seconds" not in k}  # noqa: E731
    assert untimed(dask.metrics) == untimed(local.metrics) and len(untimed(local.metrics)) > 10
