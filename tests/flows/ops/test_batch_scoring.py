"""Batch scoring (flows/ops/batch_scoring.py, `ebmops score`): a Parquet file of several row groups is
scored batch by batch into the same energies, p-values and flags as the guard's detector gives for the
whole frame at once; bad input is refused in one line naming the file and column, and leaves no output;
the Dask split (two local worker processes) writes the same file as the in-process path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.guard.guard import Guard
from flows.guard.names import version_uri
from flows.ops import batch_scoring
from flows.ops.batch_scoring import BatchInputError, check_input, plan_parts, score_parquet
from tests.flows.guard_factory import prepare_data, register_version

ROW_GROUP_ROWS = 97  # not a divisor of the rows nor of the batch size: batches end mid-group


@pytest.fixture(scope="module")
def guard_home(tmp_path_factory):
    """One registered digits guard (64 pixel columns) and a traffic file: the in_test rows and the
    digits 6-9 rows with an `id` column, written in row groups of 97 rows."""
    home = tmp_path_factory.mktemp("score-home")
    work = tmp_path_factory.mktemp("score-work")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.delenv("EBMOPS_DASK_ADDRESS", raising=False)
        data, data_check = prepare_data(work, check=False)
        registered = register_version(data, data_check, work, n_steps=20)
        features = list(data.feature_columns)
        frame = pd.concat(
            [pd.read_parquet(data.path(s))[features] for s in ("in_test", "ood_digits")], ignore_index=True
        )
        frame.insert(0, "id", [f"row-{i}" for i in range(len(frame))])
        traffic = work / "traffic.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), traffic, row_group_size=ROW_GROUP_ROWS)
        uri = version_uri(registered.model_name, registered.version)
        yield {"home": home, "uri": uri, "features": features, "frame": frame, "traffic": traffic, "work": work}


def _write(path: Path, frame: pd.DataFrame, row_group_size: int = ROW_GROUP_ROWS) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- no guard needed ---------------------------------------------------------------------------------
def test_plan_parts_cuts_contiguous_runs_in_order():
    assert plan_parts(10, 3) == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert plan_parts(2, 8) == [[0], [1]]
    assert plan_parts(5, 1) == [[0, 1, 2, 3, 4]]
    assert sum(plan_parts(37, 8), []) == list(range(37))


def test_check_input_names_the_file_and_the_column(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "id": [1, 2]})
    path = _write(tmp_path / "traffic.parquet", frame)
    with pytest.raises(BatchInputError, match=r"traffic\.parquet: missing feature columns 'c'"):
        check_input(path, ["a", "c"])
    with pytest.raises(BatchInputError, match=r"traffic\.parquet: column 'b' is (string|large_string), not numeric"):
        check_input(path, ["a", "b"])
    with pytest.raises(BatchInputError, match=r"traffic\.parquet: no id column 'key'"):
        check_input(path, ["a"], id_column="key")
    with pytest.raises(BatchInputError, match=r"nothing\.parquet: no such file"):
        check_input(tmp_path / "nothing.parquet", ["a"])
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(BatchInputError, match=r"text\.parquet: not a readable Parquet file"):
        check_input(tmp_path / "text.parquet", ["a"])
    assert check_input(path, ["a"], id_column="id").metadata.num_rows == 2


def test_batch_matrix_names_the_column_and_the_file_row_of_a_nan(tmp_path):
    frame = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0)})
    frame.loc[7, "b"] = np.nan
    parquet = pq.ParquetFile(_write(tmp_path / "t.parquet", frame, row_group_size=5))
    batch = next(parquet.iter_batches(row_groups=[1]))
    with pytest.raises(BatchInputError, match=r"t\.parquet: column 'b' has a NaN, null or infinite value \(row 7\)"):
        batch_scoring.batch_matrix(batch, ["a", "b"], tmp_path / "t.parquet", first_row=5)


# ---- with a registered guard -------------------------------------------------------------------------
@pytest.mark.slow
def test_scores_equal_the_detector_on_the_whole_frame(guard_home, tmp_path, monkeypatch):
    monkeypatch.setenv("EBMOPS_HOME", str(guard_home["home"]))
    frame, features = guard_home["frame"], guard_home["features"]
    out = tmp_path / "scores.parquet"
    summary = score_parquet(guard_home["uri"], guard_home["traffic"], out, batch_rows=64, id_column="id")

    guard = Guard.load(guard_home["uri"])
    x = frame[features].to_numpy(np.float64)
    expected = guard.detector.assess(x)
    scored = pq.read_table(out)
    assert scored.column_names == ["id", "energy", "p_value", "is_ood"]
    assert scored.column("id").to_pylist() == frame["id"].tolist()
    # allclose at 1e-6, not bitwise: the MLP runs in float32 and a row's last bits depend on where it
    # falls in its matrix product (here a batch of 33 rows vs a chunk of 930: the GEMM kernel handles
    # the remainder rows differently), about 1 float32 ulp (seen: at most 1.2e-7 absolute, 2.7e-7
    # relative on 6 of 930 rows). p-values and flags compare the energies with the calibration ones
    # and are equal here. The Dask test compares equal batch layouts and is bitwise.
    energy = scored.column("energy").to_numpy()
    np.testing.assert_allclose(energy, guard.detector.score(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(energy, expected.energy, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(scored.column("p_value").to_numpy(), expected.p_value)
    np.testing.assert_array_equal(scored.column("is_ood").to_numpy(), expected.is_ood)
    assert summary.rows == len(frame) and summary.flagged == int(expected.is_ood.sum()) > 0
    n_groups = pq.ParquetFile(guard_home["traffic"]).metadata.num_row_groups
    assert summary.row_groups == n_groups > 3
    # batches of 64 inside row groups of 97: 64 + 33 per full group
    assert pq.ParquetFile(out).metadata.row_group(0).num_rows == 64
    assert pq.ParquetFile(out).metadata.row_group(1).num_rows == ROW_GROUP_ROWS - 64
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_a_nan_in_the_last_row_group_leaves_no_output_and_keeps_an_older_file(guard_home, tmp_path, monkeypatch):
    monkeypatch.setenv("EBMOPS_HOME", str(guard_home["home"]))
    frame = guard_home["frame"].copy()
    bad_row = len(frame) - 3
    column = guard_home["features"][5]
    frame.loc[bad_row, column] = np.nan
    traffic = _write(tmp_path / "bad.parquet", frame)
    out = tmp_path / "scores.parquet"
    with pytest.raises(BatchInputError, match=rf"bad\.parquet: column '{column}' has a NaN, null or infinite value \(row {bad_row}\)"):
        score_parquet(guard_home["uri"], traffic, out)
    assert not out.exists() and _leftovers(tmp_path) == []

    out.write_bytes(b"older scores")
    with pytest.raises(BatchInputError):
        score_parquet(guard_home["uri"], traffic, out)
    assert out.read_bytes() == b"older scores" and _leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f, c: f.drop(columns=[c[3], c[9]]), r"bad\.parquet: missing feature columns '{c3}', '{c9}' \(2 of the guard's 64\)"),
        (lambda f, c: f.assign(**{c[2]: "x"}), r"bad\.parquet: column '{c2}' is (large_)?string, not numeric"),
        (lambda f, c: f.assign(**{c[4]: np.where(np.arange(len(f)) == 200, np.inf, f[c[4]])}), r"bad\.parquet: column '{c4}' has a NaN, null or infinite value \(row 200\)"),
    ],
    ids=["missing-columns", "non-numeric", "infinite"],
)
def test_the_command_refuses_bad_input_in_one_line_with_exit_2(guard_home, tmp_path, change, message):
    features = guard_home["features"]
    traffic = _write(tmp_path / "bad.parquet", change(guard_home["frame"], features))
    out = tmp_path / "scores.parquet"
    env = {**_env(guard_home["home"]), "EBMOPS_DEBUG": ""}
    run = subprocess.run(
        [sys.executable, "-m", "flows.cli.app", "score", "--model", guard_home["uri"],
         "--input", str(traffic), "--output", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    expected = message.format(c2=features[2], c3=features[3], c4=features[4], c9=features[9])
    assert any(__import__("re").search(expected, line) for line in lines), run.stderr[-2000:]
    refusal = [line for line in lines if "Not scored" in line]
    assert len(refusal) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert not out.exists() and _leftovers(tmp_path) == []


def _env(home: Path) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "EBMOPS_DASK_ADDRESS")}
    env["EBMOPS_HOME"] = str(home)
    return env


@pytest.mark.slow
@pytest.mark.server
def test_the_dask_split_writes_the_same_file_as_in_process(guard_home, tmp_path):
    """`ebmops score` in-process and with EBMOPS_DASK_ADDRESS=local (two worker processes, each
    loading the guard once): the same table, row group for row group."""
    outputs = {}
    for mode, extra in (("in_process", {}), ("dask", {"EBMOPS_DASK_ADDRESS": "local", "EBMOPS_DASK_WORKERS": "2"})):
        out = tmp_path / mode / "scores.parquet"
        run = subprocess.run(
            [sys.executable, "-m", "flows.cli.app", "score", "--model", guard_home["uri"],
             "--input", str(guard_home["traffic"]), "--output", str(out), "--batch-rows", "64", "--id-column", "id"],
            capture_output=True, text=True, env={**_env(guard_home["home"]), **extra}, timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"scored {len(guard_home['frame'])} rows" in run.stdout
        outputs[mode] = out
        assert _leftovers(out.parent) == []
    assert "part(s)" in run.stdout and " 1 part(s)" not in run.stdout  # the Dask run was split
    in_process, dask = (pq.ParquetFile(outputs[m]) for m in ("in_process", "dask"))
    assert dask.read().equals(in_process.read())
    assert [dask.metadata.row_group(i).num_rows for i in range(dask.metadata.num_row_groups)] == [
        in_process.metadata.row_group(i).num_rows for i in range(in_process.metadata.num_row_groups)
    ]
