"""Data that cannot describe a distribution is refused by the checks, before anything is embedded or
trained: one query copied many times, one label only, one vector copied many times."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flows.data.data_checks import VectorDatasetSpec, check_vector_dataset
from flows.data.text_checks import EXP_DISTINCT_QUERIES, EXP_TWO_LABELS, check_training_variety


def _failed(result) -> set[str]:
    return {o.expectation for o in result.failures}


def test_one_query_copied_many_times_fails_and_enough_distinct_queries_pass():
    copies = pd.Series(["What is my balance"] * 60 + ["what  is my BALANCE"] * 60)  # one query after query_key
    result = check_training_variety(copies, min_distinct=20)
    assert _failed(result) == {EXP_DISTINCT_QUERIES}
    assert "1 distinct queries in 120 rows, expected at least 20" in result.summary()
    assert check_training_variety(pd.Series([f"query {i}" for i in range(20)]), min_distinct=20).success


def test_one_label_fails_two_labels_pass_and_null_labels_are_left_to_the_label_checks():
    texts = pd.Series([f"query {i}" for i in range(30)])
    assert _failed(check_training_variety(texts, ["a"] * 29 + [None], min_distinct=20)) == {EXP_TWO_LABELS}
    assert check_training_variety(texts, ["a"] * 15 + ["b"] * 15, min_distinct=20).success


def test_a_split_of_one_vector_copied_fails_its_distinct_rows_check():
    columns = ("f0", "f1")
    spec = VectorDatasetSpec(feature_columns=columns, min_rows=50)
    constant = pd.DataFrame(np.ones((60, 2)), columns=list(columns))
    result = check_vector_dataset(constant, spec, "train")
    assert _failed(result) == {"expect_distinct_rows_to_be_at_least"}
    varied = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 2)), columns=list(columns))
    assert check_vector_dataset(varied, spec, "train").success
