"""Text and embedding checks against real Great Expectations (no mocks), on small fixture frames."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("great_expectations")

from flows.data.text_checks import (  # noqa: E402
    DataCheckResult,
    DataValidationError,
    ExpectationOutcome,
    TextDatasetSpec,
    check_embeddings,
    check_ood_reference_overlap,
    check_split_leakage,
    check_text_dataset,
    query_key,
    raise_for_failures,
    warnings_of,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "text"
CLINC150_PATH = Path(os.environ.get("EBMOPS_CLINC150_PATH", "/work/shared/datasets/clinc150/data_full.json"))
SPEC = TextDatasetSpec(text_column="query", label_column="intent")


def read_fixture(name: str) -> pd.DataFrame:
    # Read as the user wrote it (load_table would already refuse some of these files).
    return pd.read_csv(FIXTURES / name, keep_default_na=False, dtype=str)


def failed(result: DataCheckResult, expectation: str, column: str | None = "query") -> ExpectationOutcome:
    matches = [o for o in result.failures if o.expectation == expectation and o.column == column]
    assert len(matches) == 1, f"expected one failure {expectation} on {column!r}, got:\n{result.summary()}"
    return matches[0]


def only_failures(result: DataCheckResult) -> set[str]:
    return {o.expectation for o in result.failures}


@pytest.fixture(scope="module")
def good_result() -> DataCheckResult:
    # The first check pays for the GX import (~5 s); the rest of the module reuses it.
    return check_text_dataset(read_fixture("good.csv"), SPEC, "good")


def test_good_fixture_passes(good_result):
    r = good_result
    assert r.success, r.summary()
    assert r.n_rows == 12 and r.gx_version.startswith("1.")
    names = [o.expectation for o in r.outcomes]
    for exp in (
        "expect_text_to_not_be_null",
        "expect_text_to_be_strings",
        "expect_text_to_not_be_blank",
        "expect_text_length_to_be_between",
        "expect_text_to_be_decodable",
        "expect_text_to_have_no_control_characters",
        "expect_queries_to_be_unique",
        "expect_labels_to_not_be_null",
        "expect_each_query_to_have_one_label",
    ):
        assert exp in names
    assert all(o.details["gx_expectation"].startswith("expect_") for o in r.outcomes)
    assert r.summary() == "good: all 10 expectations passed (12 rows)"
    assert DataCheckResult.from_json(r.to_json()) == r


def test_empty_text_fails_naming_rows():
    r = check_text_dataset(read_fixture("empty_text.csv"), SPEC, "empty")
    assert only_failures(r) == {"expect_text_to_not_be_blank"}
    o = failed(r, "expect_text_to_not_be_blank")
    assert o.details["unexpected_rows"] == [1, 3]
    assert o.details["partial_unexpected_list"] == ["", "   "]
    assert "expect_text_to_not_be_blank on column 'query': 2 unexpected values (rows [1, 3])" in r.summary()
    with pytest.raises(DataValidationError, match="data check failed for empty:\nexpect_text_to_not_be_blank"):
        raise_for_failures(r)


def test_unseen_labels_fail_naming_them():
    allowed = tuple(read_fixture("good.csv")["intent"].unique())
    spec = TextDatasetSpec(text_column="query", label_column="intent", allowed_labels=allowed)
    r = check_text_dataset(read_fixture("unseen_labels.csv"), spec, "unseen")
    o = failed(r, "expect_labels_to_be_in_set", "intent")
    assert o.details["unexpected_rows"] == [1, 2]
    assert o.details["partial_unexpected_list"] == ["play_music", "alarm"]
    assert "expect_labels_to_be_in_set on column 'intent': 2 unexpected values" in r.summary()
    assert only_failures(r) == {"expect_labels_to_be_in_set"}


def test_missing_columns_fail_naming_them():
    r = check_text_dataset(read_fixture("missing_column.csv"), SPEC, "missing")
    o = failed(r, "expect_column_to_exist", "query")
    assert "expect_column_to_exist on column 'query': column is missing" in r.summary()
    assert o.details["gx_expectation"] == "expect_column_to_exist"
    spec = TextDatasetSpec(text_column="utterance", label_column="label")
    r = check_text_dataset(read_fixture("missing_column.csv"), spec, "missing label")
    assert [o.column for o in r.failures] == ["label"]


def test_duplicates_fail_by_default_with_counts():
    r = check_text_dataset(read_fixture("duplicates.csv"), SPEC, "dups")
    o = failed(r, "expect_queries_to_be_unique")
    # "What's the  weather like today" repeats row 0 (case and spaces do not count).
    assert o.details["n_duplicated_queries"] == 2
    assert o.details["n_extra_rows"] == 2
    assert o.details["unexpected_count"] == 4
    assert o.details["examples"][0] == {"query": "what's the weather like today", "rows": [0, 1]}
    assert "expect_queries_to_be_unique on column 'query': 4 unexpected values (rows [0, 1, 2, 3])" in r.summary()
    # Row 3 repeats row 2's query under another label.
    c = failed(r, "expect_each_query_to_have_one_label")
    assert c.details["n_conflicting_queries"] == 1
    assert c.details["examples"] == [
        {"query": "book a table for two at eight", "labels": {"restaurant_reservation": [2], "balance": [3]}}
    ]
    assert c.details["unexpected_rows"] == [2, 3]


def test_duplicates_can_warn_or_be_ignored():
    frame = read_fixture("duplicates.csv")
    warn = check_text_dataset(frame, TextDatasetSpec(text_column="query", duplicates="warn", label_conflicts="warn"), "w")
    assert warn.success, warn.summary()
    lines = warnings_of(warn)
    assert any("2 duplicate queries (set to warn, not fail)" in w or "expect_queries_to_be_unique" in w for w in lines)
    assert len(lines) == 1  # no label column in this spec: no conflict check
    o = next(o for o in warn.outcomes if o.expectation == "expect_queries_to_be_unique")
    assert o.success and o.details["severity"] == "warn" and o.details["n_extra_rows"] == 2
    ignore = check_text_dataset(frame, TextDatasetSpec(text_column="query", duplicates="ignore"), "i")
    assert ignore.success
    assert "expect_queries_to_be_unique" not in {o.expectation for o in ignore.outcomes}


def test_undecodable_and_control_characters():
    # object dtype: pandas' default (arrow) string dtype cannot even hold a lone surrogate
    frame = pd.DataFrame(
        {
            "text": pd.Series([
                "fine text",
                "caf\ufffd au lait",  # replacement character left by a lossy decode
                "lone \ud800 surrogate",
                "caf\u00c3\u00a9 au lait",  # UTF-8 read as Latin-1
                "it\u00e2\u20ac\u2122s broken",  # UTF-8 read as cp1252
                "it’s fine: curly quotes are real text",
                "nul\x00 inside",
                "tabs\tand\nnewlines are fine",
            ], dtype=object)
        }
    )
    r = check_text_dataset(frame, TextDatasetSpec(), "garbled")
    assert only_failures(r) == {"expect_text_to_be_decodable", "expect_text_to_have_no_control_characters"}
    assert failed(r, "expect_text_to_be_decodable", "text").details["unexpected_rows"] == [1, 2, 3, 4]
    assert failed(r, "expect_text_to_have_no_control_characters", "text").details["unexpected_rows"] == [6]
    assert "expect_text_to_be_decodable on column 'text': 4 unexpected values (rows [1, 2, 3, 4])" in r.summary()


def test_nulls_non_strings_and_lengths():
    frame = pd.DataFrame(
        {"text": ["a fine query", None, 42, "x" * 300, "hi", float("nan")]}, index=[10, 11, 12, 13, 14, 15]
    )
    r = check_text_dataset(frame, TextDatasetSpec(min_length=3, max_length=200), "mixed")
    assert failed(r, "expect_text_to_not_be_null", "text").details["unexpected_rows"] == [11, 15]
    assert failed(r, "expect_text_to_be_strings", "text").details["unexpected_rows"] == [12]
    length = failed(r, "expect_text_length_to_be_between", "text")
    assert length.details["unexpected_rows"] == [13, 14]
    assert length.details["example_lengths"] == [300, 2]
    assert length.details["partial_unexpected_list"][0].endswith("... (300 chars)")
    assert (length.details["min_value"], length.details["max_value"]) == (3, 200)


def test_null_labels_and_row_count():
    frame = pd.DataFrame({"text": ["one", "two"], "label": ["a", None]})
    r = check_text_dataset(frame, TextDatasetSpec(label_column="label", min_rows=5), "small")
    assert failed(r, "expect_labels_to_not_be_null", "label").details["unexpected_rows"] == [1]
    rc = failed(r, "expect_table_row_count_to_be_between", None)
    assert "observed 2 rows, expected at least 5" in rc.describe()


def test_pandas_string_dtype_is_accepted():
    frame = pd.DataFrame({"text": pd.array(["one", "two", None], dtype="string")})
    r = check_text_dataset(frame, TextDatasetSpec(), "string dtype")
    assert only_failures(r) == {"expect_text_to_not_be_null"}


def test_spec_validation_and_round_trip():
    spec = TextDatasetSpec(text_column="q", label_column="y", allowed_labels=["a", "b", "a"], duplicates="warn")
    assert spec.allowed_labels == ("a", "b")
    assert TextDatasetSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="duplicates must be one of"):
        TextDatasetSpec(duplicates="maybe")
    with pytest.raises(ValueError, match="allowed_labels needs a label_column"):
        TextDatasetSpec(allowed_labels=("a",))
    with pytest.raises(ValueError, match="min_length 5 > max_length 2"):
        TextDatasetSpec(min_length=5, max_length=2)
    with pytest.raises(TypeError, match="spec must be a TextDatasetSpec"):
        check_text_dataset(pd.DataFrame({"text": ["a"]}), None, "x")


# --------------------------------------------------------------------------------------------------
# Across datasets
# --------------------------------------------------------------------------------------------------


def test_split_leakage():
    train = ["what's the weather", "book a table", "play jazz"]
    test = pd.Series(["What's the  weather", "new query", "play jazz", "another"], index=[100, 101, 102, 103])
    strict = check_split_leakage(train, test, "train->test", max_fraction=0.0)
    o = failed(strict, "expect_test_queries_to_not_be_in_train", "text")
    assert o.details["unexpected_rows"] == [100, 102]
    assert o.details["examples"][0] == {"query": "What's the  weather", "row": 100, "train_rows": [0]}
    assert "expect_test_queries_to_not_be_in_train on column 'text': 2 unexpected values (rows [100, 102])" in strict.summary()
    tolerant = check_split_leakage(train, test, "train->test", max_fraction=0.5)
    assert tolerant.success
    assert warnings_of(tolerant) and "2 test queries that also occur in train (50.00%" in tolerant.outcomes[0].details["warning"]
    clean = check_split_leakage(train, ["something else"], "clean")
    assert clean.success and warnings_of(clean) == []
    with pytest.raises(ValueError, match="max_fraction"):
        check_split_leakage(train, test, "x", max_fraction=2)


def test_ood_reference_overlap():
    in_dist = ["book a table", "play jazz"]
    ood = ["what is the meaning of life", "Play  Jazz", "tell me a joke"]
    r = check_ood_reference_overlap(in_dist, ood)
    o = failed(r, "expect_ood_references_to_not_be_in_distribution", "text")
    assert o.details["unexpected_rows"] == [1]
    assert o.details["examples"] == [{"query": "Play  Jazz", "row": 1, "in_distribution_rows": [1]}]
    assert r.dataset_name == "ood_reference_overlap"
    assert check_ood_reference_overlap(in_dist, ["tell me a joke"]).success


def test_query_key():
    assert query_key("  What's  the\tWEATHER ") == "what's the weather"


# --------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_embeddings_pass():
    r = check_embeddings(unit_rows(20, 16), 16, (0.99, 1.01), expected_rows=20)
    assert r.success, r.summary()
    assert [o.expectation for o in r.outcomes] == [
        "expect_embedding_dimension_to_equal",
        "expect_embedding_row_count_to_equal",
        "expect_embeddings_to_be_finite",
        "expect_embedding_norms_to_be_between",
    ]


def test_embeddings_fail_naming_the_problem():
    x = unit_rows(20, 16)
    x[3, 5] = np.nan
    x[7, 0] = np.inf
    x[11] *= 2.0
    r = check_embeddings(x, 384, (0.99, 1.01), name="emb", expected_rows=21)
    assert failed(r, "expect_embedding_dimension_to_equal", "embedding").details["observed_value"] == (
        "16 columns (shape (20, 16)), expected 384"
    )
    assert "20 rows, expected 21" in failed(r, "expect_embedding_row_count_to_equal", "embedding").describe()
    fin = failed(r, "expect_embeddings_to_be_finite", "embedding")
    assert fin.details["unexpected_rows"] == [3, 7] and fin.details["n_nonfinite_values"] == 2
    assert fin.details["partial_unexpected_list"] == ["nan", "inf"]
    norm = failed(r, "expect_embedding_norms_to_be_between", "embedding")
    assert norm.details["unexpected_rows"] == [11]  # non-finite rows are reported once, above
    assert norm.details["partial_unexpected_list"][0] == pytest.approx(2.0, abs=1e-5)
    assert "expect_embedding_norms_to_be_between on column 'embedding': 1 unexpected value (rows [11])" in r.summary()


def test_embeddings_of_the_wrong_shape_or_type():
    r = check_embeddings(np.zeros(5), 4)
    assert "an array of shape (5,), expected (n_rows, 4)" in r.summary()
    r = check_embeddings(np.array([["a", "b"]]), 2)
    assert only_failures(r) == {"expect_embeddings_to_be_numeric"}
    with pytest.raises(ValueError, match="norm_range"):
        check_embeddings(unit_rows(2, 2), 2, (1.0, 0.5))


# --------------------------------------------------------------------------------------------------
# CLINC150 (the real file; skipped when absent)
# --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not CLINC150_PATH.is_file(), reason=f"CLINC150 not found at {CLINC150_PATH}")
def test_clinc150_passes_the_default_checks():
    from flows.data.text_data import CLINC150_KEYS, load_clinc150

    frames = load_clinc150(CLINC150_PATH)
    in_scope = tuple(sorted(set(frames["train"]["label"])))
    for key in CLINC150_KEYS:
        allowed = ("oos",) if key.startswith("oos") else in_scope
        r = check_text_dataset(frames[key], TextDatasetSpec(label_column="label", allowed_labels=allowed), key)
        assert r.success and warnings_of(r) == [], r.summary()
    # A few short chit-chat queries recur between train and val/test: a warning, below 1%.
    leak = check_split_leakage(frames["train"]["text"], frames["test"]["text"], "train->test")
    assert leak.success
    assert leak.outcomes[0].details["unexpected_count"] == 2 and len(warnings_of(leak)) == 1
    in_texts = pd.concat([frames[k]["text"] for k in ("train", "val", "test")], ignore_index=True)
    ood_texts = pd.concat([frames[k]["text"] for k in ("oos_train", "oos_val", "oos_test")], ignore_index=True)
    r = check_ood_reference_overlap(in_texts, ood_texts)
    assert r.success and r.outcomes[0].details["unexpected_count"] == 0
