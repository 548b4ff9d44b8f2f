"""The monitor's plain functions, without Prefect or a model: row hashes and new rows of a changed file,
which files are new, quarantine moves, the state's format upgrade and unreadable states, one-line
errors. (The flow itself: test_monitor.py; kill -9 and the CLI: tests/reliability/monitor/.)"""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from flows.monitoring.monitor import (
    MOVE_INTERRUPTED,
    QUARANTINE_DIR,
    MonitorConfig,
    find_new_files,
    finish_quarantine_moves,
    load_state,
    new_row_positions,
    new_state,
    one_line,
    quarantine_file,
    row_hashes,
    seen_digests,
)
from evaluation.files import file_sha256


def frame(values, ts=True):
    out = pd.DataFrame({"x0": [v[0] for v in values], "x1": [v[1] for v in values]})
    if ts:
        out.insert(0, "timestamp", pd.date_range("2024-05-01", periods=len(out), freq="min", tz="UTC"))
    return out


def test_row_hashes_depend_on_values_only_and_match_csv_and_parquet_readings():
    a = row_hashes(frame([(1.0, 2.0), (3.0, 4.0)], ts=False))
    b = row_hashes(pd.DataFrame({"x0": [1, 3], "x1": [2, 4]}))  # ints as a CSV reader may give them
    assert a == b and len(set(a)) == 2 and all(len(h) == 32 for h in a)
    assert row_hashes(frame([(1.0, 2.0)], ts=False)) == a[:1]
    assert row_hashes(frame([(1.0, 2.0000001)], ts=False)) != a[:1]
    assert row_hashes(frame([(np.nan, 2.0)], ts=False)) == row_hashes(frame([(np.nan, 2.0)], ts=False))
    renamed = frame([(1.0, 2.0)], ts=False).rename(columns={"x1": "y"})
    assert row_hashes(renamed) != a[:1]  # the column names are part of a row


def test_new_row_positions_is_a_multiset_difference():
    old = ["a", "b", "b", "c"]
    assert new_row_positions(["a", "b", "b", "c"], Counter(old)) == []
    assert new_row_positions(["c", "b", "a", "b"], Counter(old)) == []  # reordered: nothing new
    assert new_row_positions(["a", "b", "b", "b", "c", "d"], Counter(old)) == [3, 5]  # a third "b", a "d"
    assert new_row_positions(["a", "x"], Counter(old)) == [1]  # rows removed are not uncounted
    assert new_row_positions(["x", "x"], Counter()) == [0, 1]


def test_find_new_files_skips_seen_content_hidden_and_other_files(tmp_path):
    folder = tmp_path / "traffic"
    (folder / QUARANTINE_DIR).mkdir(parents=True)
    for name, text in [("a.csv", "x0\n1\n"), ("b.csv", "x0\n2\n"), ("c.csv", "x0\n3\n"), ("copy_of_a.csv", "x0\n1\n")]:
        (folder / name).write_text(text)
    (folder / ".hidden.csv").write_text("x0\n4\n")
    (folder / "notes.txt").write_text("x")
    (folder / QUARANTINE_DIR / "q.csv").write_text("x0\n5\n")
    state = new_state("m", "1", MonitorConfig())
    state["processed"].append({"name": "a.csv", "sha256": file_sha256(folder / "a.csv")})
    state["quarantined"].append({"name": "b.csv", "sha256": file_sha256(folder / "b.csv")})
    assert seen_digests(state) == {file_sha256(folder / "a.csv"), file_sha256(folder / "b.csv")}
    assert [p.name for p, _ in find_new_files(folder, state)] == ["c.csv"]
    (folder / "a.csv").write_text("x0\n1\n6\n")  # changed after it was processed: new again
    assert [p.name for p, _ in find_new_files(folder, state)] == ["a.csv", "c.csv"]
    with pytest.raises(FileNotFoundError, match="traffic folder not found"):
        find_new_files(tmp_path / "missing", state)


def test_quarantine_file_moves_with_a_reason_and_never_overwrites(tmp_path):
    folder = tmp_path / "traffic"
    folder.mkdir()
    (folder / "bad.csv").write_text("one")
    moved, error = quarantine_file(folder / "bad.csv", "a" * 64, "the file is empty")
    assert (moved, error) == ("quarantine/bad.csv", None)
    assert not (folder / "bad.csv").exists() and (folder / moved).read_text() == "one"
    assert (folder / "quarantine" / "bad.csv.reason.txt").read_text() == "bad.csv: the file is empty\n"
    (folder / "bad.csv").write_text("two")
    moved, _ = quarantine_file(folder / "bad.csv", "b" * 64, "again")
    assert moved == f"quarantine/bad.{'b' * 12}.csv" and (folder / moved).read_text() == "two"
    assert (folder / "quarantine" / "bad.csv").read_text() == "one"


def test_quarantine_file_reports_a_folder_it_cannot_write(tmp_path):
    folder = tmp_path / "traffic"
    folder.mkdir()
    (folder / QUARANTINE_DIR).write_text("a file where the folder should be")
    (folder / "bad.csv").write_text("x")
    moved, error = quarantine_file(folder / "bad.csv", "c" * 64, "why")
    assert moved is None and error and (folder / "bad.csv").exists()


def test_finish_quarantine_moves_after_a_crash_between_record_and_move(tmp_path):
    folder = tmp_path / "traffic"
    folder.mkdir()
    (folder / "bad.csv").write_text("bad bytes")
    (folder / "gone.csv").write_text("other bytes")
    digest, gone_digest = file_sha256(folder / "bad.csv"), file_sha256(folder / "gone.csv")
    quarantine_file(folder / "gone.csv", gone_digest, "r")  # moved, but the state was not updated
    state = new_state("m", "1", MonitorConfig())
    for name, sha in [("bad.csv", digest), ("gone.csv", gone_digest)]:
        state["quarantined"].append({"name": name, "sha256": sha, "reason": "r", "moved_to": None, "move_error": MOVE_INTERRUPTED})
    assert finish_quarantine_moves(state, folder) is True
    assert [(q["moved_to"], q["move_error"]) for q in state["quarantined"]] == [
        ("quarantine/bad.csv", None), ("quarantine/gone.csv", None),
    ]  # fmt: skip
    assert not (folder / "bad.csv").exists()
    assert finish_quarantine_moves(state, folder) is False


def test_load_state_upgrades_format_1_and_names_an_unreadable_state(tmp_path):
    config = MonitorConfig(expected_run_length=20)
    old = new_state("m", "1", config)
    for key in ("quarantined", "skipped", "pending", "state_id"):
        del old[key]
    old["format"] = 1
    path = tmp_path / "m-v1.json"
    path.write_text(json.dumps(old))
    state = load_state(path, "m", "1", config)
    assert state["format"] == 2 and state["quarantined"] == state["skipped"] == state["pending"] == []
    assert state["state_id"] is None  # an old state keeps finding its run by model and version
    path.write_text('{"format": 2, "proc')
    with pytest.raises(ValueError, match=r"m-v1.json: monitoring state unreadable"):
        load_state(path, "m", "1", config)
    path.write_text('{"format": 9}')
    with pytest.raises(ValueError, match="monitoring state format 9"):
        load_state(path, "m", "1", config)


def test_one_line_folds_newlines_and_cuts():
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line(KeyError()) == "KeyError"
    assert len(one_line("x" * 1000, limit=50)) == 50
