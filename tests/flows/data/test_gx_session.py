"""The checks share one Great Expectations context per process (issue 14): reusing it must give the
same outcomes as the first use, leave nothing behind in its stores, and keep failures failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("great_expectations")

from flows.data import data_checks  # noqa: E402
from flows.data.data_checks import VectorDatasetSpec, check_vector_dataset  # noqa: E402

FEATURES = ("f0", "f1", "f2")
SPEC = VectorDatasetSpec(feature_columns=FEATURES, min_rows=5, value_range=(0.0, 1.0))


def frame(bad_row: int | None = None) -> pd.DataFrame:
    values = np.random.default_rng(0).uniform(0.0, 1.0, size=(12, len(FEATURES)))
    if bad_row is not None:
        values[bad_row, 1] = 7.0  # out of [0, 1]
    return pd.DataFrame(values, columns=list(FEATURES))


def outcomes(result) -> list[tuple]:
    return [(o.expectation, o.column, o.success, o.details) for o in result.outcomes]


def test_repeated_checks_in_one_context_give_the_same_outcomes_and_leave_no_suites():
    first = check_vector_dataset(frame(), SPEC, dataset_name="clean")
    bad = check_vector_dataset(frame(bad_row=4), SPEC, dataset_name="bad")
    again = check_vector_dataset(frame(), SPEC, dataset_name="clean")
    bad_again = check_vector_dataset(frame(bad_row=4), SPEC, dataset_name="bad")

    assert first.success and again.success
    assert outcomes(first) == outcomes(again)
    assert not bad.success and not bad_again.success
    assert outcomes(bad) == outcomes(bad_again)
    failed = [o for o in bad.outcomes if not o.success]
    assert [o.column for o in failed] == ["f1"]  # the one out-of-range value, in its column
    assert failed[0].details["unexpected_rows"] == [4]

    session = data_checks._gx_session(data_checks._import_gx())
    assert len(data_checks._GX_SESSIONS) == 1  # one context for the process
    assert session.context.suites.all() == []  # each run's suites and definitions were deleted
    assert session.context.validation_definitions.all() == []
