"""Text is checked inside the flow: bad text stops `ebmops train` before anything is embedded."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli.app import app

# `ebmops train` runs the train_and_register flow (stopped by the text checks): Prefect's test harness,
# whose start makes it slow.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _write(path, rows, columns):
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


@pytest.fixture
def bad_text_files(tmp_path):
    good = [(f"how do I reset my password number {i}", "password") for i in range(15)]
    good += [(f"what is my account balance today {i}", "balance") for i in range(15)]
    rows = good + [
        ("   ", "password"),  # blank
        ("transfer money to savings", "transfer"),
        ("Transfer  money to savings", "balance"),  # the same query under another label
    ]
    train = _write(tmp_path / "train.csv", rows, ["query", "intent"])
    ood = _write(
        tmp_path / "ood_val.csv",
        [("what is the weather on mars",), ("how do I reset my password number 3",)],  # second row is in train
        ["query"],
    )
    return train, ood


def test_bad_text_stops_before_embedding_with_exit_2_and_no_model_version(ebmops_home, bad_text_files, monkeypatch):
    import flows.data.featurize as featurize

    def embedding_must_not_run(*args, **kwargs):
        raise AssertionError("texts were embedded although the text checks failed")

    monkeypatch.setattr(featurize, "embed_with_cache", embedding_must_not_run)
    train, ood = bad_text_files
    result = CliRunner().invoke(
        app,
        [
            "train", "--data", str(train), "--text-column", "query", "--label-column", "intent",
            "--ood-val-data", str(ood), "--no-progress",
        ],
    )
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "Stopped before training" in out
    assert "expect_text_to_not_be_blank" in out
    assert "expect_each_query_to_have_one_label" in out
    assert "expect_ood_references_to_not_be_in_distribution" in out
    assert "'query'" in out  # the user's column is named, not the internal one

    from mlflow import MlflowClient

    from flows.guard import registry

    registry.configure_tracking()
    client = MlflowClient()
    assert client.search_registered_models() == []
    failed = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string="attributes.status = 'FAILED'"
    )
    assert len(failed) == 1
    assert "expect_text_to_not_be_blank" in failed[0].data.tags["ebmops.failure"]
    checks = list((ebmops_home / "runs").glob("*/text_checks.json"))
    assert len(checks) == 1 and '"success": false' in checks[0].read_text()
