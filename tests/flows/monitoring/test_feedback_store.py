"""The feedback store: round trips, deduplication (newest label wins), idempotent adds, snapshot
contents and the stability of the snapshot id, with hand-made batches whose answers are known."""

import json

import numpy as np
import pandas as pd
import pytest

from flows.monitoring.feedback_store import (
    FeedbackStore,
    FeedbackStoreError,
    holdout_frame,
    input_hashes,
    take_snapshot,
)

COLUMNS = ["x0", "x1"]


def vectors(values, feedback, timestamps=True):
    frame = pd.DataFrame(np.asarray(values, dtype=np.float64), columns=COLUMNS)
    if timestamps:
        frame.insert(0, "timestamp", pd.date_range("2024-05-01", periods=len(frame), freq="min", tz="UTC"))
    frame["feedback"] = pd.array(feedback, dtype="Int8")
    return frame


def texts(items, feedback):
    return pd.DataFrame({"text": items, "feedback": pd.array(feedback, dtype="Int8")})


def add(store, frame, batch_id, flags, columns=COLUMNS, version="1"):
    return store.add_batch(
        frame, input_columns=columns, batch_id=batch_id, source=f"{batch_id}.parquet", model_version=version, is_ood=flags
    )


def test_round_trip_keeps_only_rows_with_feedback_and_their_fields(ebmops_home):
    store = FeedbackStore.for_model("ebm-guard")
    assert store.root == ebmops_home / "feedback" / "ebm-guard"
    frame = vectors([[1, 2], [3, 4], [5, 6], [7, -0.0]], [1, None, 0, 0])
    result = add(store, frame, "b0", [False, True, True, False])
    assert (result.n_feedback, result.n_added, result.n_already_stored) == (3, 3, 0)
    rows = FeedbackStore.for_model("ebm-guard").rows()  # a fresh object reads the files
    assert rows[COLUMNS].to_numpy().tolist() == [[1, 2], [5, 6], [7, 0.0]]
    assert rows["feedback"].tolist() == [1, 0, 0]
    assert rows["is_ood_at_serving"].tolist() == [False, True, False]
    assert rows["batch_id"].tolist() == ["b0"] * 3
    assert rows["source"].tolist() == ["b0.parquet"] * 3 and rows["model_version"].tolist() == ["1"] * 3
    assert rows["timestamp"].tolist() == [
        "2024-05-01T00:00:00+00:00", "2024-05-01T00:02:00+00:00", "2024-05-01T00:03:00+00:00"
    ]  # fmt: skip
    # -0.0 and 0.0 are one input; CSV-read ints are the same floats
    assert input_hashes(pd.DataFrame({"x0": [7], "x1": [0]}), COLUMNS) == rows["input_hash"].tolist()[2:]
    index = json.loads((store.root / "index.json").read_text())
    assert index["input_columns"] == COLUMNS and [p["n_rows"] for p in index["parts"]] == [3]
    assert not list(store.root.glob("parts/.*.tmp"))


def test_text_round_trip_and_no_feedback_column_stores_nothing(ebmops_home):
    store = FeedbackStore.for_model("chat-guard")
    result = add(store, texts(["book a flight", "what is love", "hi"], [1, 0, None]), "t0", [True, True, False], ["text"])
    assert result.n_added == 2
    assert store.rows()["text"].tolist() == ["book a flight", "what is love"]
    plain = pd.DataFrame({"text": ["no feedback here"]})
    assert add(store, plain, "t1", [True], ["text"]).n_added == 0
    assert len(store.rows()) == 2


def test_re_adding_a_batch_stores_nothing_twice(ebmops_home):
    store = FeedbackStore.for_model("ebm-guard")
    frame = vectors([[1, 1], [2, 2]], [1, 0])
    add(store, frame, "b0", [False, True])
    again = add(store, frame, "b0", [False, True])
    assert (again.n_added, again.n_already_stored, again.part) == (0, 2, None)
    grown = vectors([[1, 1], [2, 2], [3, 3]], [1, 0, 1])  # the same batch id with one new row
    assert add(store, grown, "b0", [False, True, False]).n_added == 1
    assert len(store.rows()) == 3
    assert len(json.loads((store.root / "index.json").read_text())["parts"]) == 2


def test_an_orphan_part_from_a_crash_is_ignored_and_replaced(ebmops_home):
    store = FeedbackStore.for_model("ebm-guard")
    add(store, vectors([[1, 1]], [1]), "b0", [False])
    index_before = (store.root / "index.json").read_bytes()
    add(store, vectors([[2, 2]], [0]), "b1", [True])
    (store.root / "index.json").write_bytes(index_before)  # as if killed between part and index writes
    assert len(store.rows()) == 1  # the orphan part is not read
    assert add(store, vectors([[2, 2]], [0]), "b1", [True]).n_added == 1  # the rerun adds it, once
    assert store.rows()["batch_id"].tolist() == ["b0", "b1"]
    assert len(list((store.root / "parts").glob("*.parquet"))) == 2  # same sequence number, overwritten


def test_newest_label_wins_and_snapshot_splits_known_rows(ebmops_home):
    store = FeedbackStore.for_model("ebm-guard")
    # b0: a=problem (accepted), b=fine flagged, c=fine accepted, d=problem (flagged)
    add(store, vectors([[0, 1], [0, 2], [0, 3], [0, 4]], [1, 0, 0, 1]), "b0", [False, True, False, True])
    # b1: b relabelled a problem, e=fine flagged; within the batch e twice: the later row counts
    add(store, vectors([[0, 2], [0, 5], [0, 5]], [1, 1, 0]), "b1", [True, True, True])
    # b2 (newest): f=problem, a again (fine now)
    add(store, vectors([[0, 6], [0, 1]], [1, 0]), "b2", [False, False])

    snap = store.snapshot(holdout_batches=1)
    assert snap.batch_ids == ("b0", "b1", "b2") and snap.holdout_batch_ids == ("b2",)
    assert sorted(snap.problems["x1"].tolist()) == [2.0, 4.0]  # b (relabelled in b1), d
    assert snap.fine_flagged["x1"].tolist() == [5.0]  # e, its later row in b1
    assert sorted(snap.holdout["x1"].tolist()) == [1.0, 6.0]  # a's newest label is in b2: holdout only
    assert snap.holdout.set_index("x1")["feedback"].to_dict() == {6.0: 1, 1.0: 0}
    assert snap.counts == {
        "n_stored_rows": 8, "n_inputs": 6, "n_superseded": 2, "n_batches": 3, "n_problems": 2,
        "n_fine_flagged": 1, "n_fine_accepted": 1, "n_holdout": 2, "n_holdout_problems": 1,
    }  # fmt: skip
    # no input is both training and holdout
    assert not set(snap.holdout["input_hash"]) & (set(snap.problems["input_hash"]) | set(snap.fine_flagged["input_hash"]))

    none_held = store.snapshot(holdout_batches=0)
    assert none_held.holdout.empty and sorted(none_held.problems["x1"].tolist()) == [2.0, 4.0, 6.0]
    assert none_held.id != snap.id
    two = store.snapshot(holdout_batches=2)
    assert two.holdout_batch_ids == ("b1", "b2") and two.problems["x1"].tolist() == [4.0]


def test_snapshot_id_is_stable_and_changes_only_with_content(ebmops_home):
    store = FeedbackStore.for_model("ebm-guard")
    empty = store.snapshot()
    assert empty.counts["n_inputs"] == 0 and empty.problems.empty and empty.holdout.empty
    add(store, vectors([[1, 1], [2, 2]], [1, 0]), "b0", [False, True])
    add(store, vectors([[3, 3]], [1]), "b1", [False])
    first = store.snapshot().id
    assert len(first) == 64 and first == FeedbackStore.for_model("ebm-guard").snapshot().id
    add(store, vectors([[1, 1], [2, 2]], [1, 0]), "b0", [False, True])  # a re-add changes nothing
    assert store.snapshot().id == first
    add(store, vectors([[4, 4]], [0]), "b2", [True])
    assert store.snapshot().id != first
    # the same content in another home gives the same id
    other = FeedbackStore(ebmops_home / "elsewhere", "ebm-guard")
    add(other, vectors([[1, 1], [2, 2]], [1, 0], timestamps=False), "b0", [False, True], version="7")
    add(other, vectors([[3, 3]], [1]), "b1", [False])
    assert other.snapshot().id == first


def test_holdout_frame_and_written_snapshot(ebmops_home, tmp_path):
    assert holdout_frame("ebm-guard") is None
    store = FeedbackStore.for_model("ebm-guard")
    add(store, vectors([[1, 1], [2, 2]], [1, 0]), "b0", [False, True])
    add(store, vectors([[3, 3], [4, 4]], [1, 0]), "b1", [False, False])
    frame = holdout_frame("ebm-guard")
    assert list(frame.columns) == ["x0", "x1", "feedback", "is_ood_at_serving"]
    assert frame.to_numpy().tolist() == [[3, 3, 1, False], [4, 4, 0, False]]
    path = take_snapshot("ebm-guard", 1, tmp_path / "run")
    record = json.loads(path.read_text())
    assert record["id"] == store.snapshot().id
    assert record["holdout_batch_ids"] == ["b1"] and record["training_batch_ids"] == ["b0"]
    assert record["counts"]["n_problems"] == 1 and record["counts"]["n_fine_flagged"] == 1
    assert pd.read_parquet(tmp_path / "run" / record["files"]["problems"])[COLUMNS].to_numpy().tolist() == [[1, 1]]
    assert pd.read_parquet(tmp_path / "run" / record["files"]["fine_flagged"])[COLUMNS].to_numpy().tolist() == [[2, 2]]
    assert not (tmp_path / "run" / "holdout.parquet").exists()


def test_bad_batches_are_refused_with_the_reason(ebmops_home):
    store = FeedbackStore.for_model("ebm-guard")
    with pytest.raises(FeedbackStoreError, match=r"feedback must be 0, 1 or missing; rows \[1\]"):
        add(store, pd.DataFrame({"x0": [1.0, 2.0], "x1": [1.0, 2.0], "feedback": [1, 2]}), "b0", [False, False])
    with pytest.raises(FeedbackStoreError, match=r"column\(s\) \['x1'\] missing"):
        add(store, pd.DataFrame({"x0": [1.0], "feedback": [1]}), "b0", [False])
    with pytest.raises(FeedbackStoreError, match="is_ood has"):
        add(store, vectors([[1, 1]], [1]), "b0", [False, True])
    text_values = pd.DataFrame({"x0": [1.0, "a", 3.0], "x1": [1.0, 2.0, 3.0], "feedback": [1, 1, None]})
    with pytest.raises(FeedbackStoreError, match=r"column x0 must hold finite numbers; rows \[1\] hold \['a'\]"):
        add(store, text_values, "b0", [False] * 3)
    with pytest.raises(FeedbackStoreError, match=r"column text is empty or missing in rows \[2\]"):
        add(FeedbackStore.for_model("text-guard"), texts(["hi", "there", " "], [1, 0, 1]), "t0", [False] * 3, ["text"])
    assert store.read_index()["parts"] == []  # nothing stored by a refused batch
    add(store, vectors([[1, 1]], [1]), "b0", [False])
    with pytest.raises(FeedbackStoreError, match=r"holds inputs with columns \['x0', 'x1'\], this batch has \['text'\]"):
        add(store, texts(["hello"], [1]), "t0", [False], ["text"])
    with pytest.raises(ValueError, match="model_name"):
        FeedbackStore.for_model("../escape")
    with pytest.raises(ValueError, match="holdout_batches"):
        store.snapshot(-1)


# --- the monitor feeds the store ----------------------------------------------------------------


@pytest.fixture(scope="module")
def monitored_guard(tmp_path_factory):
    """A small digits guard registered as champion in a module-wide home, and its test rows."""
    from tests.flows.guard_factory import prepare_data, register_version

    home = tmp_path_factory.mktemp("feedback-monitor-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(home / "ebmops-home"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        data, data_check = prepare_data(home / "work", check=False)
        registered = register_version(data, data_check, home / "work", n_steps=60)
        rows = pd.read_parquet(data.path("in_test"))[list(data.feature_columns)]
        yield home / "ebmops-home", registered, rows.sample(frac=1.0, random_state=0).reset_index(drop=True)


class Crash(Exception):
    """Stands for a kill at a fault point: nothing after it runs."""


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_monitor_stores_feedback_once_even_when_a_batch_is_scored_again_after_a_crash(monitored_guard, tmp_path, monkeypatch):
    import flows.monitoring.monitor as monitor_module
    from flows.monitoring.monitor import MonitorConfig, monitor

    home, registered, rows = monitored_guard
    monkeypatch.setenv("EBMOPS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setattr(monitor_module, "emit_alarm", lambda guard, record, config: "e")
    traffic = tmp_path / "traffic"
    traffic.mkdir()
    features = list(rows.columns)
    first = rows.iloc[0:20].copy()
    first["feedback"] = pd.array([1, 0, None, None] * 5, dtype="Int8")  # 5 problems, 5 fine
    first.to_parquet(traffic / "a.parquet", index=False)
    second = rows.iloc[20:30].copy()
    second["feedback"] = pd.array([0] * 10, dtype="Int8")
    second.to_parquet(traffic / "b.parquet", index=False)
    config = MonitorConfig(expected_run_length=50, window=2, experiment_name="feedback-monitor-test")

    real_fault_point = monitor_module.fault_point
    calls = []

    def crash_on_second_batch(name):
        if name == "monitor.after_feedback_add":
            calls.append(name)
            if len(calls) == 2:  # b.parquet: its feedback stored, the batch not yet counted
                raise Crash(name)
        real_fault_point(name)

    monkeypatch.setattr(monitor_module, "fault_point", crash_on_second_batch)
    with pytest.raises(Crash):
        monitor(traffic, config)
    store = FeedbackStore.for_model(registered.model_name)
    assert len(store.rows()) == 20  # both batches' feedback rows are in the store
    monkeypatch.setattr(monitor_module, "fault_point", real_fault_point)

    summary = monitor(traffic, config)  # b.parquet is scored again
    assert [b["source"] for b in summary["new_batches"]] == ["b.parquet"]
    assert summary["n_inputs"] == 30
    stored = store.rows()
    assert len(stored) == 20 and stored["input_hash"].is_unique  # nothing stored twice
    assert stored["feedback"].tolist() == [1, 0] * 5 + [0] * 10
    assert stored[features].to_numpy().tolist() == pd.concat([first.iloc[0::4], first.iloc[1::4]]).sort_index()[features].to_numpy().tolist() + second[features].to_numpy().tolist()
    assert set(stored["model_version"]) == {registered.version}
    assert stored["batch_id"].str.split("@").str[0].tolist() == ["a.parquet"] * 10 + ["b.parquet"] * 10
    # the flags stored are the guard's flags at serving time
    from flows.guard.guard import Guard

    guard = Guard.load(f"models:/{registered.model_name}/{registered.version}")
    expected = guard.detector.assess(stored[features].to_numpy(dtype=np.float64)).is_ood
    assert stored["is_ood_at_serving"].tolist() == list(map(bool, expected))
    snap = store.snapshot(holdout_batches=1)
    assert snap.holdout_batch_ids == (stored["batch_id"].iloc[-1],) and snap.counts["n_holdout"] == 10
    assert snap.counts["n_problems"] == 5
