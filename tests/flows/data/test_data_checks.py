"""Data checks against real Great Expectations (no mocks). Frames are 20 rows x 4 features + label."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("great_expectations")

from flows.data.data_checks import (  # noqa: E402
    DataCheckResult,
    DataValidationError,
    ExpectationOutcome,
    VectorDatasetSpec,
    check_vector_dataset,
    raise_for_failures,
)

FEATURES = ("pixel_0", "pixel_1", "pixel_2", "pixel_3")
SPEC = VectorDatasetSpec(
    feature_columns=FEATURES,
    min_rows=10,
    value_range=(0.0, 16.0),
    label_column="label",
    allowed_labels=(0, 1, 2),
)


def make_frame(n: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.uniform(0.0, 16.0, size=(n, len(FEATURES))), columns=list(FEATURES))
    df["label"] = rng.integers(0, 3, size=n)
    return df


@pytest.fixture(scope="module")
def clean_result() -> DataCheckResult:
    # The first check pays for the GX import (~5 s); the rest of the module reuses it.
    return check_vector_dataset(make_frame(), SPEC, "clean")


def failed(result: DataCheckResult, expectation: str, column: str | None) -> ExpectationOutcome:
    matches = [o for o in result.failures if o.expectation == expectation and o.column == column]
    assert len(matches) == 1, f"expected one failure {expectation} on {column!r}, got:\n{result.summary()}"
    return matches[0]


def test_clean_frame_passes(clean_result):
    r = clean_result
    assert r.success, r.summary()
    assert r.failures == ()
    assert r.n_rows == 20
    assert r.dataset_name == "clean"
    assert r.gx_version.startswith("1.")
    kinds = {(o.expectation, o.column) for o in r.outcomes}
    for col in FEATURES:
        assert ("expect_column_values_to_not_be_null", col) in kinds
        assert ("expect_column_values_to_be_between", col) in kinds
    assert ("expect_table_columns_to_match_set", None) in kinds
    assert ("expect_table_row_count_to_be_between", None) in kinds
    assert ("expect_column_values_to_be_in_set", "label") in kinds
    raise_for_failures(r)  # does not raise
    assert "passed" in r.summary()


def test_nan_fails_naming_column_and_expectation(clean_result):
    df = make_frame()
    df.loc[5, "pixel_3"] = np.nan
    df.loc[17, "pixel_3"] = np.nan
    r = check_vector_dataset(df, SPEC, "digits-train")
    assert not r.success
    o = failed(r, "expect_column_values_to_not_be_null", "pixel_3")
    assert o.details["unexpected_count"] == 2
    assert o.details["unexpected_rows"] == [5, 17]
    assert len(r.failures) == 1  # NaN is a null, not also a range failure
    assert r.summary() == (
        "expect_column_values_to_not_be_null on column 'pixel_3': 2 unexpected values (rows [5, 17])"
    )
    with pytest.raises(DataValidationError) as exc_info:
        raise_for_failures(r)
    msg = str(exc_info.value)
    assert msg.startswith("data check failed for digits-train:\n")
    assert "expect_column_values_to_not_be_null" in msg and "'pixel_3'" in msg
    assert exc_info.value.result is r
    assert isinstance(exc_info.value, ValueError)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_inf_fails(clean_result, bad):
    df = make_frame()
    df.loc[4, "pixel_1"] = bad
    r = check_vector_dataset(df, SPEC, "inf")
    o = failed(r, "expect_column_values_to_be_between", "pixel_1")
    assert o.details["unexpected_rows"] == [4]
    assert o.details["partial_unexpected_list"] == ["inf" if bad > 0 else "-inf"]
    assert len(r.failures) == 1
    json.loads(r.to_json())  # strict JSON even with inf in the data


def test_inf_fails_without_value_range(clean_result):
    spec = VectorDatasetSpec(feature_columns=FEATURES)
    df = make_frame()[list(FEATURES)]
    df.loc[2, "pixel_0"] = np.inf
    df.loc[3, "pixel_0"] = 1e300  # huge but finite: fine without a range
    r = check_vector_dataset(df, spec, "no-range")
    o = failed(r, "expect_column_values_to_be_between", "pixel_0")
    assert o.details["unexpected_rows"] == [2]
    assert "finite" in r.summary()


def test_out_of_range_fails(clean_result):
    df = make_frame()
    df.loc[7, "pixel_2"] = 16.5
    df.loc[8, "pixel_0"] = 16.0  # bounds are inclusive
    r = check_vector_dataset(df, SPEC, "range")
    o = failed(r, "expect_column_values_to_be_between", "pixel_2")
    assert o.details["partial_unexpected_list"] == [16.5]
    assert o.details["unexpected_rows"] == [7]
    assert len(r.failures) == 1
    assert "16.5" in r.summary() and "'pixel_2'" in r.summary()


def test_missing_column_fails_naming_it(clean_result):
    df = make_frame().drop(columns=["pixel_2"])
    r = check_vector_dataset(df, SPEC, "missing")
    assert not r.success
    failed(r, "expect_column_to_exist", "pixel_2")
    match = failed(r, "expect_table_columns_to_match_set", None)
    assert match.details["missing_columns"] == ["pixel_2"]
    assert "missing columns ['pixel_2']" in r.summary()
    # the other columns are still checked
    assert any(o.column == "pixel_0" and o.success for o in r.outcomes)


def test_extra_column_fails_naming_it(clean_result):
    df = make_frame()
    df["debug_notes"] = 1.0
    r = check_vector_dataset(df, SPEC, "extra")
    match = failed(r, "expect_table_columns_to_match_set", None)
    assert match.details["unexpected_columns"] == ["debug_notes"]
    assert len(r.failures) == 1
    assert "debug_notes" in r.summary()


def test_too_few_rows_fails(clean_result):
    r = check_vector_dataset(make_frame(n=3), SPEC, "few")
    o = failed(r, "expect_table_row_count_to_be_between", None)
    assert o.details["observed_value"] == 3
    assert len(r.failures) == 1
    assert "observed 3 rows, expected at least 10" in r.summary()


def test_empty_frame_fails_without_crashing(clean_result):
    r = check_vector_dataset(make_frame(n=0), SPEC, "empty")
    assert not r.success
    failed(r, "expect_table_row_count_to_be_between", None)


def test_unseen_label_fails_naming_label_column(clean_result):
    df = make_frame()
    df.loc[11, "label"] = 7
    r = check_vector_dataset(df, SPEC, "labels")
    o = failed(r, "expect_column_values_to_be_in_set", "label")
    assert o.details["partial_unexpected_list"] == [7]
    assert o.details["unexpected_rows"] == [11]
    assert len(r.failures) == 1
    assert "'label'" in r.summary()


def test_string_in_numeric_column_fails_naming_column(clean_result):
    df = make_frame()
    df["pixel_1"] = df["pixel_1"].astype(object)
    df.loc[3, "pixel_1"] = "abc"
    r = check_vector_dataset(df, SPEC, "strings")
    o = failed(r, "expect_column_values_to_be_in_type_list", "pixel_1")
    assert o.details["partial_unexpected_list"] == ["abc"]
    assert o.details["unexpected_rows"] == [3]
    assert len(r.failures) == 1
    assert "'pixel_1'" in r.summary()


def test_all_string_column_fails_naming_column(clean_result):
    df = make_frame()
    df["pixel_0"] = "x"
    r = check_vector_dataset(df, SPEC, "string-dtype")
    failed(r, "expect_column_values_to_be_in_type_list", "pixel_0")
    assert len(r.failures) == 1


def test_object_column_of_numbers_is_still_range_checked(clean_result):
    df = make_frame()
    df["pixel_1"] = df["pixel_1"].astype(object)
    df.loc[2, "pixel_1"] = 99.0
    r = check_vector_dataset(df, SPEC, "object-numbers")
    o = failed(r, "expect_column_values_to_be_between", "pixel_1")
    assert o.details["unexpected_rows"] == [2]
    assert len(r.failures) == 1


def test_several_problems_each_reported(clean_result):
    df = make_frame()
    df.loc[1, "pixel_0"] = np.nan
    df.loc[2, "pixel_3"] = -1.0
    df.loc[3, "label"] = 9
    r = check_vector_dataset(df, SPEC, "many")
    assert len(r.failures) == 3
    assert len(r.summary().splitlines()) == 3


def test_repeated_calls_do_not_collide(clean_result):
    a = check_vector_dataset(make_frame(seed=1), SPEC, "same-name")
    b = check_vector_dataset(make_frame(seed=2), SPEC, "same-name")
    assert a.success and b.success


def test_result_json_round_trip(tmp_path, clean_result):
    df = make_frame()
    df.loc[5, "pixel_3"] = np.nan
    df.loc[6, "pixel_2"] = np.inf
    df["extra"] = 0.0
    r = check_vector_dataset(df, SPEC, "round-trip")
    assert DataCheckResult.from_dict(r.to_dict()) == r
    assert DataCheckResult.from_dict(json.loads(r.to_json())) == r
    path = r.write_json(tmp_path / "reports" / "data_check.json")
    assert DataCheckResult.from_dict(json.loads(path.read_text())) == r
    assert DataCheckResult.from_dict(clean_result.to_dict()) == clean_result
    err = pickle.loads(pickle.dumps(DataValidationError(r)))
    assert err.result == r and str(err) == str(DataValidationError(r))


def test_spec_round_trip_and_validation():
    assert VectorDatasetSpec.from_dict(SPEC.to_dict()) == SPEC
    assert VectorDatasetSpec.from_dict(json.loads(json.dumps(SPEC.to_dict()))) == SPEC
    assert VectorDatasetSpec(["a", "b"]).feature_columns == ("a", "b")
    with pytest.raises(ValueError):
        VectorDatasetSpec(())
    with pytest.raises(ValueError):
        VectorDatasetSpec(("a",), value_range=(1.0, 0.0))
    with pytest.raises(ValueError):
        VectorDatasetSpec(("a",), value_range=(0.0, float("inf")))
    with pytest.raises(ValueError):
        VectorDatasetSpec(("a",), allowed_labels=(0, 1))
    with pytest.raises(ValueError):
        VectorDatasetSpec(("a",), label_column="a")


def test_bad_arguments_raise_type_error():
    with pytest.raises(TypeError):
        check_vector_dataset(np.zeros((3, 4)), SPEC, "array")  # type: ignore[arg-type]
