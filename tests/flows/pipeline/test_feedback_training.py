"""Training on the feedback store: a digits run (margin objective, few steps) with feedback on takes
exactly the snapshot's training problems as outliers, the fine flagged rows into train, never the
holdout or an evaluation row, and the registered version names the snapshot."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ebm_core import LangevinSampler, TrainConfig
from flows.data.datasets import pixel_columns
from flows.guard import registry
from flows.monitoring.feedback_store import SNAPSHOT_TAG, FeedbackStore, input_hashes
from flows.pipeline import steps
from flows.pipeline.config import PipelineConfig, demo_config

FEATURES = pixel_columns()


def small_margin_config():
    config = demo_config().with_objective("margin")
    detector = replace(
        config.detector,
        hidden_dims=(32, 32),
        sampler=LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=5),
        train=TrainConfig(n_steps=60, batch_size=64, learning_rate=1e-3),
    )
    return replace(config, detector=detector)


def batch(x, feedback):
    frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=FEATURES)
    frame["feedback"] = pd.array(feedback, dtype="Int8")
    return frame


def fill_store(model_name, seed=0):
    """Three batches; returns the rows each part must end up in."""
    rng = np.random.default_rng(123 + seed)
    problems = rng.uniform(0, 16, (7, 64)).round()
    fine = rng.uniform(0, 4, (3, 64)).round()
    held = rng.uniform(0, 16, (2, 64)).round()
    store = FeedbackStore.for_model(model_name)
    add = lambda frame, bid, flags: store.add_batch(  # noqa: E731
        frame, input_columns=FEATURES, batch_id=bid, source=bid, model_version="1", is_ood=flags
    )
    add(batch(np.vstack([problems[:4], fine]), [1] * 4 + [0] * 3), "b0", [False] * 4 + [True] * 3)
    add(batch(problems[4:], [1] * 3), "b1", [False] * 3)
    add(batch(held, [1, 1]), "b2", [False, False])  # the newest batch: holdout
    return problems, fine, held


def test_config_feedback_section_round_trips_and_is_checked():
    config = PipelineConfig.from_dict({"feedback": {"use": True, "holdout_batches": 2}})
    assert config.feedback.use and config.feedback.holdout_batches == 2 and config.feedback_model_name == config.model_name
    assert config.to_params()["feedback.use"] == "True"
    assert PipelineConfig().feedback.use is False  # off unless asked for
    assert demo_config().with_feedback().feedback.use is True
    with pytest.raises(ValueError, match="feedback.holdout_batches"):
        PipelineConfig.from_dict({"feedback": {"holdout_batches": -1}})
    with pytest.raises(ValueError, match="feedback has no field"):
        PipelineConfig.from_dict({"feedback": {"usee": True}})


def test_add_feedback_merges_known_rows_and_drops_evaluation_rows(ebmops_home, tmp_path):
    config = small_margin_config()
    data = steps.load_data(config, tmp_path / "run")
    problems, fine, held = fill_store(config.model_name)
    in_test_row = pd.read_parquet(data.path("in_test"))[FEATURES].to_numpy()[:1]
    train_row = pd.read_parquet(data.path("train"))[FEATURES].to_numpy()[:1]
    store = FeedbackStore.for_model(config.model_name)
    # b3 (newest): one problem equal to a test row, one fine row already in train
    store.add_batch(batch(np.vstack([in_test_row, train_row]), [1, 0]), input_columns=FEATURES, batch_id="b3",
                    source="b3", model_version="1", is_ood=[False, True])  # fmt: skip
    from flows.monitoring.feedback_store import take_snapshot

    snapshot_json = take_snapshot(config.model_name, 1, tmp_path / "run" / "feedback")  # b3 held out
    merged, record_path = steps.add_feedback(data, snapshot_json, tmp_path / "run")
    assert "outliers" not in merged.split_paths  # the user gave none; confirmed problems are a split of their own
    outliers = pd.read_parquet(merged.path("outliers_feedback"))
    assert outliers.to_numpy().tolist() == np.vstack([problems, held]).tolist()
    assert steps.known_outliers(merged).tolist() == outliers.to_numpy().tolist()
    train = pd.read_parquet(merged.path("train"))
    before = pd.read_parquet(data.path("train"))
    assert len(train) == len(before) + 3 and train["label"].iloc[-3:].tolist() == [-1, -1, -1]
    assert merged.allowed_labels == (*data.allowed_labels, -1)
    record = json.loads(record_path.read_text())
    assert record["holdout_batch_ids"] == ["b3"] and record["applied"]["problems_added_to_outliers"] == 9

    # holding b3 out keeps its rows out; with no holdout they are dropped as evaluation / training rows
    snapshot_json = take_snapshot(config.model_name, 0, tmp_path / "run2" / "feedback")
    merged, record_path = steps.add_feedback(data, snapshot_json, tmp_path / "run2")
    record = json.loads(record_path.read_text())
    assert record["applied"]["dropped"] == {"problems_in_evaluation_data": 1, "fine_already_in_training_data": 1}
    assert len(pd.read_parquet(merged.path("outliers_feedback"))) == 9
    steps.validate_data(merged, tmp_path / "run2")  # the merged splits pass the same data checks


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_pipeline_with_feedback_trains_margin_on_exactly_the_problem_rows(ebmops_home, monkeypatch):
    from ebm_core import EnergyDetector
    from flows.pipeline.train_and_register import train_and_register

    config = small_margin_config()
    problems, fine, held = fill_store(config.model_name)
    seen = []

    class Recording(EnergyDetector):  # the real detector; records what its fit was given
        def fit(self, x, y=None, *, outliers=None, **kwargs):
            seen.append(None if outliers is None else np.asarray(outliers).copy())
            return super().fit(x, y, outliers=outliers, **kwargs)

    monkeypatch.setattr(steps, "EnergyDetector", Recording)
    result = train_and_register(config, progress=False, use_feedback=True)

    expected = problems.tolist()  # b0 and b1; b2 (held out) never
    assert len(seen) == 1 and seen[0].tolist() == expected
    data_dir = result.run_dir / "data_feedback"
    assert pd.read_parquet(data_dir / "outliers_feedback.parquet").to_numpy().tolist() == expected
    train = pd.read_parquet(data_dir / "train.parquet")
    assert train[FEATURES].to_numpy()[-3:].tolist() == fine.tolist() and (train["label"].iloc[-3:] == -1).all()
    held_hashes = set(input_hashes(pd.DataFrame(held, columns=FEATURES), FEATURES))
    assert not held_hashes & set(input_hashes(train, FEATURES))

    snapshot = FeedbackStore.for_model(config.model_name).snapshot(1)
    record = json.loads((result.run_dir / "feedback_snapshot.json").read_text())
    assert record["id"] == snapshot.id and record["holdout_batch_ids"] == ["b2"]
    assert record["counts"]["n_problems"] == 7 and record["counts"]["n_fine_flagged"] == 3
    registry.configure_tracking()
    client = MlflowClient()
    version = client.get_model_version(config.model_name, result.registered.version)
    assert version.tags[SNAPSHOT_TAG] == snapshot.id
    assert json.loads(version.tags["ebmops.feedback.holdout_batch_ids"]) == ["b2"]
    run = client.get_run(result.registered.run_id)
    assert run.data.params["feedback.snapshot_id"] == snapshot.id and run.data.params["feedback.problems_added"] == "7"
    assert run.data.tags[SNAPSHOT_TAG] == snapshot.id
    report = json.loads(result.report_json.read_text())
    assert "outliers" not in report["ood_metrics"]  # never evaluation data


def test_text_feedback_becomes_checked_splits_without_evaluation_queries(ebmops_home, tmp_path):
    from flows.data import text_splits
    from flows.data.sources import TextTablesSource
    from flows.monitoring.feedback_store import take_snapshot

    train = pd.DataFrame({"text": [f"please book flight number {i} to paris" for i in range(150)]})
    train.to_csv(tmp_path / "train.csv", index=False)
    files = text_splits.write_text_splits(TextTablesSource(train=str(tmp_path / "train.csv")), tmp_path / "text", seed=0)
    test_query = pd.read_parquet(files.paths["in_test"])["text"].iloc[0]
    store = FeedbackStore.for_model("chat-guard")
    frame = pd.DataFrame({"text": ["how do I hack the bank", test_query.upper(), "book flight 7 to rome please", "tell me a joke"],
                          "feedback": pd.array([1, 1, 0, 0], dtype="Int8")})  # fmt: skip
    store.add_batch(frame, input_columns=["text"], batch_id="t0", source="t0", model_version="1",
                    is_ood=[False, False, True, False])  # fmt: skip
    snapshot_json = take_snapshot("chat-guard", 0, tmp_path / "feedback")
    with_feedback = text_splits.add_feedback_text_splits(files, snapshot_json)
    problems = pd.read_parquet(with_feedback.paths["feedback_problems"])
    assert problems["text"].tolist() == ["how do I hack the bank"]  # the test query (any case) is dropped
    assert pd.read_parquet(with_feedback.paths["feedback_fine"])["text"].tolist() == ["book flight 7 to rome please"]
    assert json.loads(snapshot_json.read_text())["applied_text"]["dropped"] == {"problems_in_evaluation_data": 1}
    text_splits.check_text_splits(with_feedback, tmp_path / "text_checks.json")  # passes the same checks
    merged = text_splits.train_texts_with_feedback(with_feedback, tmp_path / "train_texts.parquet")
    assert pd.read_parquet(merged)["text"].tolist()[-1] == "book flight 7 to rome please"
