"""Loaders for CLINC150's JSON and for CSV/Parquet tables, on small fixture files (good and bad)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.data.text_data import (
    CLINC150_KEYS,
    DataSourceError,
    default_clinc150_path,
    load_clinc150,
    load_table,
    vector_columns_of,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "text"
CLINC150_PATH = Path(os.environ.get("EBMOPS_CLINC150_PATH", "/work/shared/datasets/clinc150/data_full.json"))


# --------------------------------------------------------------------------------------------------
# CLINC150
# --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not CLINC150_PATH.is_file(), reason=f"CLINC150 not found at {CLINC150_PATH}")
def test_clinc150_real_file_has_the_published_sizes():
    frames = load_clinc150(CLINC150_PATH)
    assert set(frames) == set(CLINC150_KEYS)
    sizes = {k: len(v) for k, v in frames.items()}
    assert sizes == {"train": 15000, "val": 3000, "test": 4500, "oos_train": 100, "oos_val": 100, "oos_test": 1000}
    for key, frame in frames.items():
        assert list(frame.columns) == ["text", "label"], key
        assert frame["text"].map(type).eq(str).all()
    in_scope = set(frames["train"]["label"])
    assert len(in_scope) == 150 and "oos" not in in_scope
    assert set(frames["val"]["label"]) == set(frames["test"]["label"]) == in_scope
    assert frames["train"]["label"].value_counts().eq(100).all()
    for key in ("oos_train", "oos_val", "oos_test"):
        assert set(frames[key]["label"]) == {"oos"}


def test_default_clinc150_path_reads_the_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("EBMOPS_CLINC150_PATH", str(tmp_path / "x.json"))
    assert default_clinc150_path() == tmp_path / "x.json"
    monkeypatch.delenv("EBMOPS_CLINC150_PATH")
    assert default_clinc150_path().parts[-4:] == ("shared", "datasets", "clinc150", "data_full.json")


def _clinc_json(**overrides) -> dict:
    data = {key: [["some query", "oos" if key.startswith("oos") else "weather"]] for key in CLINC150_KEYS}
    data.update(overrides)
    return data


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_clinc150_small_file_round_trip(tmp_path):
    data = _clinc_json(train=[["what's the weather", "weather"], ["book a table", "restaurant_reservation"]])
    data["extra_key"] = "ignored"
    frames = load_clinc150(_write_json(tmp_path / "d.json", data))
    assert frames["train"].to_dict("list") == {
        "text": ["what's the weather", "book a table"],
        "label": ["weather", "restaurant_reservation"],
    }
    assert frames["oos_test"]["label"].tolist() == ["oos"]


def test_clinc150_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="CLINC150 file not found: .*nope.json"):
        load_clinc150(tmp_path / "nope.json")


def test_clinc150_not_json(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"train": [["a", "b"]', encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"d\.json: not valid JSON .*line 1"):
        load_clinc150(path)


def test_clinc150_undecodable_bytes(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'{"train": [["caf\xe9", "x"]]}')
    with pytest.raises(DataSourceError, match=r"not valid UTF-8: byte\(s\) b'\\xe9' at byte offset 16 \(line 1, byte 17"):
        load_clinc150(path)


def test_clinc150_not_an_object(tmp_path):
    with pytest.raises(DataSourceError, match="expected a JSON object .* got a JSON list"):
        load_clinc150(_write_json(tmp_path / "d.json", [["a", "b"]]))


def test_clinc150_missing_keys_are_named(tmp_path):
    data = _clinc_json()
    del data["oos_val"], data["test"]
    with pytest.raises(DataSourceError, match=r"missing keys \['test', 'oos_val'\]"):
        load_clinc150(_write_json(tmp_path / "d.json", data))


@pytest.mark.parametrize(
    "rows, message",
    [
        ([["ok", "weather"], ["only text"]], r"val\[1\] must be a \[text, intent\] pair, got \['only text'\]"),
        ([["ok", "weather"], "a string"], r"val\[1\] must be a \[text, intent\] pair"),
        ([["ok", "weather"], ["a", "b"], [3, "weather"]], r"val\[2\]: text must be a string, got int 3"),
        ([["ok", None]], r"val\[0\]: intent must be a string, got NoneType None"),
    ],
)
def test_clinc150_malformed_rows_name_key_and_index(tmp_path, rows, message):
    with pytest.raises(DataSourceError, match=message):
        load_clinc150(_write_json(tmp_path / "d.json", _clinc_json(val=rows)))


def test_clinc150_split_not_a_list(tmp_path):
    with pytest.raises(DataSourceError, match="'oos_test' must be a list"):
        load_clinc150(_write_json(tmp_path / "d.json", _clinc_json(oos_test={"a": 1})))


# --------------------------------------------------------------------------------------------------
# CSV / Parquet: good files
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["good.csv", "good.parquet"])
def test_good_table_is_normalised(name):
    df = load_table(FIXTURES / name, text_column="query", label_column="intent", split_column="part")
    assert list(df.columns) == ["text", "label", "split"]
    assert len(df) == 12
    assert df["text"].iloc[0] == "what's the weather like today"
    # "none" is a query, not a missing value
    assert df["text"].iloc[8] == "none"
    assert df["text"].map(type).eq(str).all()
    assert df["split"].tolist().count("test") == 3
    assert df.attrs == {"source": str(FIXTURES / name), "vector_columns": []}
    assert vector_columns_of(df) == []


def test_csv_and_parquet_agree():
    a = load_table(FIXTURES / "good.csv", text_column="query", label_column="intent")
    b = load_table(FIXTURES / "good.parquet", text_column="query", label_column="intent")
    assert a["text"].tolist() == b["text"].tolist()
    assert a["label"].tolist() == b["label"].tolist()


def test_empty_text_is_loaded_for_the_checks_to_report():
    df = load_table(FIXTURES / "empty_text.csv", text_column="query")
    assert df["text"].tolist()[1] == "" and df["text"].tolist()[3] == "   "


def test_utf8_bom_is_dropped(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftext,label\ncafé au lait,drink\n".encode("utf-8"))
    df = load_table(path, text_column="text", label_column="label")
    assert df["text"].tolist() == ["café au lait"]


@pytest.mark.parametrize(
    "vector_columns", ["emb_*", ["emb_0", "emb_1", "emb_2", "emb_3"], "emb_[0-3]"]
)
def test_vector_columns_by_pattern_or_list(vector_columns):
    df = load_table(FIXTURES / "vectors.csv", vector_columns=vector_columns, label_column="intent")
    assert list(df.columns) == ["emb_0", "emb_1", "emb_2", "emb_3", "label"]
    assert vector_columns_of(df) == df.attrs["vector_columns"] == ["emb_0", "emb_1", "emb_2", "emb_3"]
    assert all(df[c].dtype == np.float64 for c in vector_columns_of(df))
    np.testing.assert_allclose(df.iloc[1, :4].to_numpy(dtype=float), [0.5, 0.6, 0.7, 0.8])


def test_single_vector_column_name():
    df = load_table(FIXTURES / "vectors.csv", vector_columns="emb_2")
    assert list(df.columns) == ["emb_2"]


def test_traffic_timestamps_and_feedback():
    df = load_table(FIXTURES / "traffic.csv", text_column="query", timestamp_column="ts", feedback_column="problem")
    assert list(df.columns) == ["text", "timestamp", "feedback"]
    assert str(df["timestamp"].dt.tz) == "UTC"
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-05-01T10:00:00Z")
    assert df["timestamp"].iloc[2] == pd.Timestamp("2024-05-01T10:07:30Z")  # naive -> UTC
    assert str(df["feedback"].dtype) == "Int8"
    assert df["feedback"].iloc[:2].tolist() == [0, 1]
    assert df["feedback"].isna().tolist() == [False, False, True]  # empty = nobody looked


def test_feedback_accepts_booleans(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"text": ["a", "b"], "fb": [True, False]}).to_parquet(path)
    assert load_table(path, text_column="text", feedback_column="fb")["feedback"].tolist() == [1, 0]


# --------------------------------------------------------------------------------------------------
# CSV / Parquet: bad files
# --------------------------------------------------------------------------------------------------


def test_undecodable_bytes_name_file_line_and_offset():
    with pytest.raises(DataSourceError) as info:
        load_table(FIXTURES / "undecodable.csv", text_column="query")
    msg = str(info.value)
    assert "undecodable.csv" in msg
    assert "not valid UTF-8" in msg
    assert "byte offset 73 (line 3, byte 12 of the line)" in msg
    assert "b'\\xe9'" in msg


def test_missing_text_column_is_named_with_the_available_ones():
    with pytest.raises(DataSourceError) as info:
        load_table(FIXTURES / "missing_column.csv", text_column="query", label_column="intent")
    msg = str(info.value)
    assert "missing_column.csv" in msg
    assert "column 'query' (text_column) not found" in msg
    assert "available columns: ['utterance', 'intent', 'part']" in msg


@pytest.mark.parametrize("role", ["label_column", "split_column", "timestamp_column", "feedback_column"])
def test_missing_optional_column_is_named(role):
    with pytest.raises(DataSourceError, match=rf"column 'nope' \({role}\) not found; available columns"):
        load_table(FIXTURES / "good.csv", text_column="query", **{role: "nope"})


def test_missing_vector_columns():
    with pytest.raises(DataSourceError, match=r"vector column\(s\) \['emb_9'\] not found; available columns"):
        load_table(FIXTURES / "vectors.csv", vector_columns=["emb_0", "emb_9"])
    with pytest.raises(DataSourceError, match="no column matches vector_columns pattern 'x_\\*'"):
        load_table(FIXTURES / "vectors.csv", vector_columns="x_*")


def test_non_numeric_vector_value_is_named():
    with pytest.raises(DataSourceError, match=r"vector column 'emb_1' holds non-numeric values in 1 row \(data rows \[2\], e.g. \['oops'\]\)"):
        load_table(FIXTURES / "vectors_bad_value.csv", vector_columns="emb_*")


def test_bad_feedback_is_named():
    with pytest.raises(DataSourceError, match=r"feedback column 'problem' must hold 0 or 1 .* \(data rows \[1\], e.g. \[2\.0\]"):
        load_table(FIXTURES / "traffic_bad_feedback.csv", text_column="query", feedback_column="problem")


def test_bad_timestamp_is_named():
    with pytest.raises(DataSourceError, match=r"timestamp column 'ts': .*unparseable.* \(data rows \[1\], e.g. \['yesterday-ish'\]"):
        load_table(FIXTURES / "traffic_bad_timestamp.csv", text_column="query", timestamp_column="ts")


def test_numeric_timestamps_are_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,ts\na,1714557600\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match="timestamp column 'ts' holds numbers"):
        load_table(path, text_column="text", timestamp_column="ts")


def test_exactly_one_of_text_or_vectors():
    with pytest.raises(ValueError, match="exactly one of text_column .* or vector_columns"):
        load_table(FIXTURES / "vectors.csv")
    with pytest.raises(ValueError, match="exactly one of text_column .* or vector_columns"):
        load_table(FIXTURES / "vectors.csv", text_column="intent", vector_columns="emb_*")


def test_one_column_in_two_roles():
    with pytest.raises(ValueError, match=r"\['intent'\] given for more than one role"):
        load_table(FIXTURES / "good.csv", text_column="query", label_column="intent", split_column="intent")


def test_vector_column_named_like_a_normalised_column(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("label,x\n1.0,2.0\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"vector column\(s\) \['label'\] clash"):
        load_table(path, vector_columns=["label", "x"])


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found: .*nope.csv"):
        load_table(tmp_path / "nope.csv", text_column="text")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataSourceError, match="empty.csv: the file is empty"):
        load_table(tmp_path / "empty.csv", text_column="text")
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(DataSourceError, match="unsupported file type '.xlsx'"):
        load_table(tmp_path / "data.xlsx", text_column="text")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataSourceError, match="broken.parquet: cannot read as Parquet"):
        load_table(tmp_path / "broken.parquet", text_column="text")


def test_parquet_binary_text_is_decoded_strictly(tmp_path):
    path = tmp_path / "b.parquet"
    pd.DataFrame({"text": [b"fine", "caf\u00e9".encode("utf-8")]}).to_parquet(path)
    assert load_table(path, text_column="text")["text"].tolist() == ["fine", "café"]
    pd.DataFrame({"text": [b"fine", b"caf\xe9"]}).to_parquet(path)
    with pytest.raises(DataSourceError, match=r"column 'text', data row 1: not valid UTF-8: byte\(s\) b'\\xe9' at byte offset 3"):
        load_table(path, text_column="text")


def test_non_text_values_in_text_column(tmp_path):
    path = tmp_path / "n.parquet"
    pd.DataFrame({"text": [1.5, 2.5]}).to_parquet(path)
    with pytest.raises(DataSourceError, match=r"text column 'text' holds non-text values in 2 rows"):
        load_table(path, text_column="text")
