"""Reliability of `ebmops monitor --once DIR` (issue: monitoring faults), run as the user runs it: the
console script in a subprocess, a fresh $EBMOPS_HOME per test (a copy of one registered digits guard),
the session's Prefect test server (PREFECT_API_URL); tests/reliability/monitor/. The kill -9
tests are in test_monitor_kills.py.

- bad batch files of many kinds are quarantined (moved to DIR/quarantine/, one line naming the file
  and the reason, recorded so they are not retried) and later good files of the same pass are scored;
- a file changed after it was processed counts only its new rows; one with no new rows is skipped;
- exit codes: 0 no alarm, 1 alarm, 2 error (missing version, not a folder, unreadable state, a file
  quarantined), never a traceback's 1 for a crash.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.reliability.invariants import assert_registry_invariants
from tests.reliability.monitor.runs import MODEL, explain, read_state, run_monitor, step_counts, write_batch

pytestmark = pytest.mark.slow


# --- quarantine ----------------------------------------------------------------------------------


def _bad_files(folder: Path, rows: pd.DataFrame) -> dict[str, str]:
    """Write one bad batch file of each kind; returns name -> a word its reason must contain."""
    good = rows.iloc[200:210].reset_index(drop=True)
    expected = {}

    def parquet(name, frame, word):
        write_batch(folder, name, frame)
        expected[name] = word

    def raw(name, data: bytes, word):
        (folder / name).write_bytes(data)
        expected[name] = word

    raw("b01_garbage.parquet", b"this is not a parquet file at all", "parquet")
    valid = write_batch(folder, "tmp.parquet", good).read_bytes()
    (folder / "tmp.parquet").unlink()
    raw("b02_truncated.parquet", valid[: len(valid) // 2], "read")
    raw("b03_empty.csv", b"", "empty")
    raw("b04_header_only.csv", (",".join(["timestamp", *rows.columns]) + "\n").encode(), "no rows")
    parquet("b05_zero_rows.parquet", good.iloc[0:0], "no rows")
    parquet("b06_missing_column.parquet", good.drop(columns=[rows.columns[3]]), "missing")
    text = write_batch(folder, "b07_non_numeric.csv", good).read_text().splitlines()
    text[2] = text[2].rsplit(",", 1)[0] + ",abc"
    raw("b07_non_numeric.csv", ("\n".join(text) + "\n").encode(), "non-numeric")
    nan = good.copy()
    nan.iloc[4, 2] = np.nan
    parquet("b08_nan.parquet", nan, "NaN")
    inf = good.copy()
    inf.iloc[6, 5] = np.inf
    parquet("b09_inf.parquet", inf, "infinite")
    huge = good.copy()
    huge.iloc[:, :] = 1e308
    parquet("b10_huge_1e308.parquet", huge, "energy")
    raw("b11_latin1.csv", ",".join(["timestamp", *rows.columns]).encode() + b"\n\xe9\xff\xfe,1\n", "UTF-8")
    feedback = good.copy()
    feedback["feedback"] = 7
    parquet("b12_feedback_7.parquet", feedback, "feedback")
    stamps = write_batch(folder, "b13_bad_timestamp.csv", good).read_text().splitlines()
    stamps[1] = "not a time" + stamps[1][stamps[1].index(","):]
    raw("b13_bad_timestamp.csv", ("\n".join(stamps) + "\n").encode(), "timestamp")
    ragged = write_batch(folder, "b14_ragged.csv", good).read_text().splitlines()
    ragged[3] = ragged[3] + ",1,2,3"
    raw("b14_ragged.csv", ("\n".join(ragged) + "\n").encode(), "CSV")
    texty = good.copy()
    texty["text"] = "hello"
    parquet("b15_text_for_vector_guard.parquet", texty, "text")
    boolean = good.copy()
    boolean[rows.columns[0]] = True
    parquet("b16_bool_column.parquet", boolean, "bool")
    return expected


def test_bad_files_are_quarantined_and_later_files_still_processed(home, rows, traffic, prefect_api_url):
    expected = _bad_files(traffic, rows)
    assert len(expected) >= 10
    write_batch(traffic, "a00_good.parquet", rows.iloc[0:30])
    write_batch(traffic, "b99_good.csv", rows.iloc[30:60])
    write_batch(traffic, "c00_good.parquet", rows.iloc[60:90])

    first = run_monitor(home, prefect_api_url, str(traffic))
    assert first.returncode == 2, explain(first)  # a file quarantined, no alarm
    state = read_state(home)
    assert [p["name"] for p in state["processed"]] == ["a00_good.parquet", "b99_good.csv", "c00_good.parquet"]
    assert sum(p["n"] for p in state["processed"]) == 90
    reasons = {q["name"]: q["reason"] for q in state["quarantined"]}
    assert sorted(reasons) == sorted(expected), explain(first)
    lines = [line for line in first.stdout.splitlines() if line.startswith("quarantined ")]
    assert len(lines) == len(expected), explain(first)
    for name, word in expected.items():
        assert word.lower() in reasons[name].lower(), f"{name}: {reasons[name]}"
        (line,) = [line for line in lines if line.startswith(f"quarantined {name} ")]
        assert f"moved to quarantine/{name}" in line and reasons[name] in line
        assert (traffic / "quarantine" / name).exists() and not (traffic / name).exists()
        assert (traffic / "quarantine" / f"{name}.reason.txt").read_text().startswith(f"{name}: ")
    assert f"{len(expected)} file(s) quarantined in this pass" in first.stdout
    assert step_counts(home) == {0: 1, 1: 1, 2: 1}

    # the same bad bytes put back are not retried; a fixed file under a quarantined name is scored
    shutil.copy(traffic / "quarantine" / "b01_garbage.parquet", traffic / "b01_garbage.parquet")
    write_batch(traffic, "b08_nan.parquet", rows.iloc[90:100])
    second = run_monitor(home, prefect_api_url, str(traffic))
    assert second.returncode == 0, explain(second)
    assert "quarantined " not in second.stdout
    state = read_state(home)
    assert [p["name"] for p in state["processed"]][-1] == "b08_nan.parquet"
    assert sum(p["n"] for p in state["processed"]) == 100
    assert len(state["quarantined"]) == len(expected)
    assert_registry_invariants(MODEL)


# --- files changed after processing ------------------------------------------------------------


def test_changed_file_counts_only_its_new_rows(home, rows, traffic, prefect_api_url):
    write_batch(traffic, "a.parquet", rows.iloc[0:60])
    write_batch(traffic, "b.csv", rows.iloc[60:120])
    write_batch(traffic, "c.parquet", rows.iloc[120:180])
    first = run_monitor(home, prefect_api_url, str(traffic))
    assert first.returncode == 0, explain(first)
    assert sum(p["n"] for p in read_state(home)["processed"]) == 180

    # a.parquet gets 30 rows appended, b.csv is rewritten with the same rows in another order
    # (different bytes, no new rows), c.parquet has 5 of its rows edited
    appended = pd.concat([rows.iloc[0:60], rows.iloc[180:210]])
    write_batch(traffic, "a.parquet", appended)
    shuffled = (traffic / "b.csv").read_text().splitlines()
    (traffic / "b.csv").write_text("\n".join([shuffled[0], *reversed(shuffled[1:])]) + "\n")
    edited = rows.iloc[120:180].copy()
    edited.iloc[:5, 0] = edited.iloc[:5, 0] + 0.5
    write_batch(traffic, "c.parquet", edited)

    second = run_monitor(home, prefect_api_url, str(traffic))
    assert second.returncode == 0, explain(second)
    state = read_state(home)
    assert [(p["name"], p["n"]) for p in state["processed"]] == [
        ("a.parquet", 60), ("b.csv", 60), ("c.parquet", 60), ("a.parquet", 30), ("c.parquet", 5),
    ]  # fmt: skip
    assert sum(p["n"] for p in state["processed"]) == 215  # 180 first seen + 30 appended + 5 edited
    assert "a.parquet changed since it was processed: 60 of its 90 rows already counted, 30 new row(s)" in second.stdout
    assert "b.csv changed since it was processed but holds no new rows" in second.stdout
    assert [s["name"] for s in state["skipped"]] == ["b.csv"]
    assert step_counts(home) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}

    third = run_monitor(home, prefect_api_url, str(traffic))
    assert third.returncode == 0, explain(third)
    assert sum(p["n"] for p in read_state(home)["processed"]) == 215


# --- exit codes ----------------------------------------------------------------------------------


def test_exit_codes_for_errors_are_2_with_one_line(home, rows, traffic, prefect_api_url):
    write_batch(traffic, "a.parquet", rows.iloc[0:40])

    missing = run_monitor(home, prefect_api_url, str(traffic), "--model-uri", "models:/ebm-guard/99")
    assert missing.returncode == 2, explain(missing)
    (line,) = missing.stderr.strip().splitlines()[-1:]
    assert line.startswith("monitoring failed: model 'ebm-guard' has no version '99'"), explain(missing)
    assert "Traceback" not in missing.stderr

    no_alias = run_monitor(home, prefect_api_url, str(traffic), "--model-uri", "models:/other-model@champion")
    assert no_alias.returncode == 2 and "has no alias 'champion'" in no_alias.stderr, explain(no_alias)

    not_folder = run_monitor(home, prefect_api_url, str(traffic / "missing"))
    assert not_folder.returncode == 2 and "not a folder" in not_folder.stderr, explain(not_folder)

    state_file = home / "monitoring" / f"{MODEL}-v1.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text('{"format": 2, "processed": [')  # a torn write by something else
    corrupt = run_monitor(home, prefect_api_url, str(traffic))
    assert corrupt.returncode == 2, explain(corrupt)
    assert f"monitoring failed: {state_file}: monitoring state unreadable" in corrupt.stderr
    assert state_file.read_text() == '{"format": 2, "processed": ['  # left for a person to look at
    assert (traffic / "a.parquet").exists()
