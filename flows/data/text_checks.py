"""Data checks for text datasets and sentence embeddings, run with Great Expectations (GX 1.x).

The results are the same types as :mod:`flows.data.data_checks` (:class:`DataCheckResult` of
:class:`ExpectationOutcome`; :func:`raise_for_failures` stops a run). GX is imported on the first
check, never at module import.

Each outcome's ``expectation`` names the problem in ebmops' words (``expect_text_to_not_be_blank``,
``expect_queries_to_be_unique``, ...); ``details["gx_expectation"]`` names the GX expectation that
judged it. ``column`` is the user's column; ``details["unexpected_rows"]`` holds index labels of
the frame checked (positions for plain sequences), ``partial_unexpected_list`` example values.

Text checks (:func:`check_text_dataset`, what is expected is a :class:`TextDatasetSpec`):

* the text column (and the label column, if any) exists; at least ``min_rows`` rows;
* text is not null, is a ``str``, is not empty or whitespace-only;
* text length (characters) lies in ``[min_length, max_length]`` (blank rows are only reported as
  blank). The default upper bound, 1000 characters, is about where all-MiniLM-L6-v2 starts to
  truncate (256 word pieces): longer queries would be embedded from their first part only;
* text is decodable: no U+FFFD replacement character, no lone surrogate (both left by a lossy
  decode) and no typical mojibake (UTF-8 read as Latin-1/cp1252: ``Ã©``, ``â€™``, ``Â``);
* no control characters (other than tab, newline, carriage return);
* queries are unique, compared after NFC, case folding and whitespace collapsing (the embedder
  is uncased and whitespace-blind, so these are the same input to the model);
  ``duplicates="fail"`` (default), ``"warn"`` or ``"ignore"``;
* when labels are present: no null label, labels in ``allowed_labels`` (when given), and the same
  query never carries two labels (``label_conflicts``, fail by default).

Across datasets: :func:`check_split_leakage` (a test query that is also a train query) and
:func:`check_ood_reference_overlap` (an out-of-distribution reference query that is also an
in-distribution query); both take a tolerated fraction. Embeddings: :func:`check_embeddings`
(2-D numeric array, dimension, row count, finite values, row norms in a range).

"warn" outcomes succeed (they do not fail the result) but keep their counts and rows and carry
``details["warning"]``; :func:`warnings_of` lists them.

On CLINC150 (data_full.json) the defaults pass: no split has a blank, garbled, over-long or
duplicated query, nor a label conflict, and no out-of-scope query is also in scope. Two test
queries and three val queries also occur in train (0.04% / 0.1%: short chit-chat such as
"where did you grow up"); leakage below ``max_fraction=0.01`` is a warning, above it a failure.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from flows.data.data_checks import (
    DataCheckResult,
    DataValidationError,
    ExpectationOutcome,
    _import_gx,
    _json_safe,
    _outcome_from_gx,
    _run_suites,
    raise_for_failures,
)

__all__ = [
    "DataCheckResult",
    "DataValidationError",
    "ExpectationOutcome",
    "TextDatasetSpec",
    "check_embeddings",
    "check_ood_reference_overlap",
    "check_split_leakage",
    "check_text_dataset",
    "check_training_variety",
    "query_key",
    "raise_for_failures",
    "warnings_of",
]

SEVERITIES = ("fail", "warn", "ignore")
_MAX_EXAMPLES = 5
_MAX_ROWS = 10
_MAX_EXAMPLE_CHARS = 80

# Regexes are given to GX as escape sequences (no literal odd characters in its config).
UNDECODABLE_REGEX = r"\ufffd|\u00c3[\u0080-\u00bf]|\u00c2[\u0080-\u00bf]|\u00e2\u20ac"
CONTROL_CHAR_REGEX = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
NOT_BLANK_REGEX = r"\S"
_SURROGATE = re.compile("[\ud800-\udfff]")

# ebmops names of the checks.
EXP_COLUMN_EXISTS = "expect_column_to_exist"
EXP_ROW_COUNT = "expect_table_row_count_to_be_between"
EXP_TEXT_NOT_NULL = "expect_text_to_not_be_null"
EXP_TEXT_IS_STR = "expect_text_to_be_strings"
EXP_TEXT_NOT_BLANK = "expect_text_to_not_be_blank"
EXP_TEXT_LENGTH = "expect_text_length_to_be_between"
EXP_TEXT_DECODABLE = "expect_text_to_be_decodable"
EXP_TEXT_NO_CONTROL = "expect_text_to_have_no_control_characters"
EXP_QUERIES_UNIQUE = "expect_queries_to_be_unique"
EXP_LABEL_NOT_NULL = "expect_labels_to_not_be_null"
EXP_LABEL_IN_SET = "expect_labels_to_be_in_set"
EXP_ONE_LABEL_PER_QUERY = "expect_each_query_to_have_one_label"
EXP_NO_LEAKAGE = "expect_test_queries_to_not_be_in_train"
EXP_OOD_NOT_IN_DIST = "expect_ood_references_to_not_be_in_distribution"
EXP_DISTINCT_QUERIES = "expect_distinct_training_queries_to_be_at_least"
EXP_TWO_LABELS = "expect_at_least_two_training_labels"
EXP_EMB_NUMERIC = "expect_embeddings_to_be_numeric"
EXP_EMB_DIM = "expect_embedding_dimension_to_equal"
EXP_EMB_ROWS = "expect_embedding_row_count_to_equal"
EXP_EMB_FINITE = "expect_embeddings_to_be_finite"
EXP_EMB_NORM = "expect_embedding_norms_to_be_between"


# --------------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDatasetSpec:
    """What a text dataset must look like.

    text_column: the column of queries.
    label_column: a column of labels (intents), expected when given.
    allowed_labels: the labels accepted (needs ``label_column``), e.g. the training labels when
        checking a validation or test set.
    min_rows: the fewest rows accepted.
    min_length, max_length: inclusive bounds on the length of a query in characters.
    duplicates: what a repeated query is: ``"fail"`` (default), ``"warn"`` or ``"ignore"``.
    label_conflicts: what the same query under two labels is: ``"fail"``, ``"warn"``, ``"ignore"``.
    """

    text_column: str = "text"
    label_column: str | None = None
    allowed_labels: tuple | None = None
    min_rows: int = 1
    min_length: int = 1
    max_length: int = 1000
    duplicates: str = "fail"
    label_conflicts: str = "fail"

    def __post_init__(self) -> None:
        if not isinstance(self.text_column, str) or not self.text_column:
            raise TypeError(f"text_column must be a non-empty string, got {self.text_column!r}")
        if self.label_column is not None:
            if not isinstance(self.label_column, str):
                raise TypeError(f"label_column must be a string, got {self.label_column!r}")
            if self.label_column == self.text_column:
                raise ValueError(f"label_column {self.label_column!r} is the text column")
        if self.allowed_labels is not None:
            if self.label_column is None:
                raise ValueError("allowed_labels needs a label_column")
            if isinstance(self.allowed_labels, str):
                raise TypeError("allowed_labels must be a sequence of labels, not one string")
            labels = tuple(dict.fromkeys(_py_scalar(v) for v in self.allowed_labels))
            if not labels:
                raise ValueError("allowed_labels is empty")
            object.__setattr__(self, "allowed_labels", labels)
        for name in ("min_rows", "min_length", "max_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        for name in ("duplicates", "label_conflicts"):
            if getattr(self, name) not in SEVERITIES:
                raise ValueError(f"{name} must be one of {SEVERITIES}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["allowed_labels"] = None if self.allowed_labels is None else list(self.allowed_labels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextDatasetSpec:
        d = dict(d)
        if d.get("allowed_labels") is not None:
            d["allowed_labels"] = tuple(d["allowed_labels"])
        return cls(**d)


def query_key(text: str) -> str:
    """How queries are compared: NFC, case-folded, whitespace runs collapsed, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def warnings_of(result: DataCheckResult) -> list[str]:
    """One line per outcome that passed with a warning (e.g. ``duplicates="warn"``, or leakage
    below its tolerance)."""
    return [f"warning: {o.describe()}" for o in result.outcomes if o.details.get("warning")]


# --------------------------------------------------------------------------------------------------
# One text dataset
# --------------------------------------------------------------------------------------------------


def check_text_dataset(df: pd.DataFrame, spec: TextDatasetSpec, dataset_name: str) -> DataCheckResult:
    """Validate the text (and label) columns of ``df`` against ``spec`` with Great Expectations.

    Never raises for bad data: each problem is a failed :class:`ExpectationOutcome` naming the
    problem, the column and example rows/values. Other columns of ``df`` are ignored.
    Raises ``TypeError`` when ``df`` is not a DataFrame or ``spec`` not a :class:`TextDatasetSpec`.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if not isinstance(spec, TextDatasetSpec):
        raise TypeError(f"spec must be a TextDatasetSpec, got {type(spec).__name__}")
    dataset_name = str(dataset_name)
    gx = _import_gx()
    E = gx.expectations
    tcol, lcol = spec.text_column, spec.label_column
    columns = [str(c) for c in df.columns]
    has_text = tcol in columns
    has_label = lcol is not None and lcol in columns
    index = df.index

    # Suite 1, the table: columns, row count, nulls, types, labels.
    table = pd.DataFrame(index=index)
    table_exps: list[tuple[Any, str, str | None]] = [  # (GX expectation, ebmops name, user column)
        (E.ExpectTableRowCountToBeBetween(min_value=spec.min_rows, max_value=None), EXP_ROW_COUNT, None)
    ]
    for col, present in ((tcol, has_text), (lcol, has_label)):
        if col is not None and not present:
            table_exps.append((E.ExpectColumnToExist(column=col), EXP_COLUMN_EXISTS, col))
    raw_text: list[Any] = []
    if has_text:
        raw_text = [_none_if_missing(v) for v in _column(df, tcol)]
        # GX hashes the frame as UTF-8: a lone surrogate would crash it, so it goes in as U+FFFD
        # (which the decodability check reports).
        table["text"] = pd.Series(
            [_SURROGATE.sub("\ufffd", v) if isinstance(v, str) else v for v in raw_text],
            index=index,
            dtype=object,
        )
        table_exps.append((E.ExpectColumnValuesToNotBeNull(column="text"), EXP_TEXT_NOT_NULL, tcol))
        table_exps.append(
            (E.ExpectColumnValuesToBeInTypeList(column="text", type_list=["str"]), EXP_TEXT_IS_STR, tcol)
        )
    labels: list[Any] = []
    if has_label:
        labels = [_none_if_missing(v) for v in _column(df, lcol)]
        table["label"] = pd.Series(labels, index=index, dtype=object)
        table_exps.append((E.ExpectColumnValuesToNotBeNull(column="label"), EXP_LABEL_NOT_NULL, lcol))
        if spec.allowed_labels is not None:
            table_exps.append(
                (
                    E.ExpectColumnValuesToBeInSet(column="label", value_set=list(spec.allowed_labels)),
                    EXP_LABEL_IN_SET,
                    lcol,
                )
            )
    suites: list[tuple[list, pd.DataFrame, list[tuple[str, str | None]]]] = [
        ([e for e, _, _ in table_exps], table, [(n, c) for _, n, c in table_exps])
    ]

    # Suite 2, the strings: blank, length, decodability, control characters, duplicates.
    dup_info: dict[str, Any] | None = None
    conflict_info: dict[str, Any] | None = None
    if has_text:
        strings = [_SURROGATE.sub("\ufffd", v) if isinstance(v, str) else None for v in raw_text]
        blank = [s is not None and not s.strip() for s in strings]
        keys = [query_key(s) if s is not None and not b else None for s, b in zip(strings, blank)]
        text_frame = pd.DataFrame(
            {
                "text": pd.Series(strings, index=index, dtype=object),
                "text_nonblank": pd.Series(
                    [None if b else s for s, b in zip(strings, blank)], index=index, dtype=object
                ),
                "query_key": pd.Series(keys, index=index, dtype=object),
            },
            index=index,
        )
        text_exps = [
            (E.ExpectColumnValuesToMatchRegex(column="text", regex=NOT_BLANK_REGEX), EXP_TEXT_NOT_BLANK),
            (
                E.ExpectColumnValueLengthsToBeBetween(
                    column="text_nonblank", min_value=spec.min_length, max_value=spec.max_length
                ),
                EXP_TEXT_LENGTH,
            ),
            (E.ExpectColumnValuesToNotMatchRegex(column="text", regex=UNDECODABLE_REGEX), EXP_TEXT_DECODABLE),
            (E.ExpectColumnValuesToNotMatchRegex(column="text", regex=CONTROL_CHAR_REGEX), EXP_TEXT_NO_CONTROL),
        ]
        if spec.duplicates != "ignore":
            text_exps.append((E.ExpectColumnValuesToBeUnique(column="query_key"), EXP_QUERIES_UNIQUE))
            dup_info = _duplicate_details(keys, raw_text, index)
        suites.append(([e for e, _ in text_exps], text_frame, [(n, tcol) for _, n in text_exps]))

        # Suite 3, one label per query: distinct (query, label) pairs; a repeated query is a conflict.
        if has_label and spec.label_conflicts != "ignore":
            pairs = pd.DataFrame({"query_key": keys, "label": [_label_key(v) for v in labels]})
            pairs = pairs[pairs["query_key"].notna() & pairs["label"].notna()].drop_duplicates()
            pair_frame = pd.DataFrame({"query_key": pairs["query_key"].to_numpy(dtype=object)})
            suites.append(
                (
                    [E.ExpectColumnValuesToBeUnique(column="query_key")],
                    pair_frame,
                    [(EXP_ONE_LABEL_PER_QUERY, tcol)],
                )
            )
            conflict_info = _conflict_details(keys, raw_text, labels, index)

    # GX does not keep the suite's order in its results: each expectation carries its ebmops name
    # in `meta`, and the outcomes are put back in the order they were declared.
    for exps, _, names in suites:
        for e, (name, col) in zip(exps, names):
            e.meta = {**(e.meta or {}), "ebmops_check": name, "ebmops_column": col}
    declared = [name for _, _, names in suites for name, _ in names]
    results = _run_suites(gx, [(exps, frame) for exps, frame, _ in suites])
    outcomes: list[ExpectationOutcome] = []
    for res in results:
        for r in res.results:
            name, col = _tag_of(r)
            o = _renamed(_outcome_from_gx(r), name, col)
            if name == EXP_QUERIES_UNIQUE and dup_info is not None:
                o = _with_severity(o, spec.duplicates, dup_info, "duplicate queries")
            elif name == EXP_ONE_LABEL_PER_QUERY and conflict_info is not None:
                # The GX frame holds (query, label) pairs: report rows of the user's frame instead.
                o = ExpectationOutcome(o.expectation, o.column, o.success, {
                    "gx_expectation": o.details.get("gx_expectation"),
                    "element_count": len(raw_text),
                    **conflict_info,
                })  # fmt: skip
                o = _with_severity(o, spec.label_conflicts, {}, "queries with more than one label")
            outcomes.append(o)
    outcomes.sort(key=lambda o: declared.index(o.expectation))
    return DataCheckResult(
        dataset_name=dataset_name,
        success=all(o.success for o in outcomes),
        n_rows=len(df),
        outcomes=tuple(outcomes),
        gx_version=str(gx.__version__),
    )


# --------------------------------------------------------------------------------------------------
# Across datasets
# --------------------------------------------------------------------------------------------------


def check_split_leakage(
    train_texts: Sequence[str] | pd.Series,
    test_texts: Sequence[str] | pd.Series,
    name: str = "split_leakage",
    max_fraction: float = 0.01,
    column: str = "text",
) -> DataCheckResult:
    """Fail when more than ``max_fraction`` of the test queries also occur in train (compared with
    :func:`query_key`). Leaked rows below the tolerance are kept as a warning. Rows named are the
    test set's (index labels of a Series, else positions)."""
    return _check_overlap(
        reference=train_texts,
        checked=test_texts,
        name=name,
        max_fraction=max_fraction,
        column=column,
        expectation=EXP_NO_LEAKAGE,
        what="test queries that also occur in train",
        ref_label="train_rows",
    )


def check_ood_reference_overlap(
    in_texts: Sequence[str] | pd.Series,
    ood_texts: Sequence[str] | pd.Series,
    name: str = "ood_reference_overlap",
    max_fraction: float = 0.0,
    column: str = "text",
) -> DataCheckResult:
    """Fail when more than ``max_fraction`` (default: any) of the OOD reference queries also occur
    as in-distribution queries: such a row is labelled both ways, and the detector is scored
    against itself. Rows named are the OOD set's."""
    return _check_overlap(
        reference=in_texts,
        checked=ood_texts,
        name=name,
        max_fraction=max_fraction,
        column=column,
        expectation=EXP_OOD_NOT_IN_DIST,
        what="OOD reference queries that also occur in-distribution",
        ref_label="in_distribution_rows",
    )


def _check_overlap(reference, checked, name, max_fraction, column, expectation, what, ref_label):
    if not (0.0 <= float(max_fraction) <= 1.0):
        raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction!r}")
    ref_vals, ref_index = _texts_and_index(reference, "reference texts")
    chk_vals, chk_index = _texts_and_index(checked, "checked texts")
    gx = _import_gx()
    E = gx.expectations
    ref_rows: dict[str, list] = {}
    for i, v in zip(ref_index, ref_vals):
        if isinstance(v, str) and v.strip():
            ref_rows.setdefault(query_key(_SURROGATE.sub("\ufffd", v)), []).append(i)
    chk_keys = [
        query_key(_SURROGATE.sub("\ufffd", v)) if isinstance(v, str) and v.strip() else None for v in chk_vals
    ]
    # Membership is computed here (GX needs seconds to take a value set of 10^4 queries); GX judges
    # the flag column, with the tolerance as its `mostly`.
    flag = pd.Series([k in ref_rows if k is not None else None for k in chk_keys], index=chk_index, dtype=object)
    frame = pd.DataFrame({"in_reference": flag}, index=chk_index)
    exp = E.ExpectColumnValuesToBeInSet(column="in_reference", value_set=[False], mostly=1.0 - float(max_fraction))
    (res,) = _run_suites(gx, [([exp], frame)])
    o = _renamed(_outcome_from_gx(res.results[0]), expectation, column)
    hits = [j for j, k in enumerate(chk_keys) if k is not None and k in ref_rows]
    details = {
        "gx_expectation": o.details.get("gx_expectation"),
        "element_count": len(chk_vals),
        "unexpected_count": len(hits),
        "unexpected_percent": 100.0 * len(hits) / len(chk_vals) if chk_vals else 0.0,
        "max_fraction": float(max_fraction),
        "partial_unexpected_list": _json_safe([chk_vals[j] for j in hits[:_MAX_EXAMPLES]]),
        "unexpected_rows": _json_safe([chk_index[j] for j in hits[:_MAX_ROWS]]),
        "examples": [
            {"query": _json_safe(chk_vals[j]), "row": _json_safe(chk_index[j]), ref_label: _json_safe(ref_rows[chk_keys[j]][:_MAX_EXAMPLES])}
            for j in hits[:_MAX_EXAMPLES]
        ],
    }
    if not hits:
        for k in ("partial_unexpected_list", "unexpected_rows", "examples"):
            details.pop(k)
    elif o.success:
        details["warning"] = (
            f"{len(hits)} {what} ({100.0 * len(hits) / len(chk_vals):.2f}%, tolerated up to "
            f"{100.0 * float(max_fraction):.2f}%)"
        )
    o = ExpectationOutcome(o.expectation, o.column, o.success, details)
    return DataCheckResult(
        dataset_name=str(name),
        success=o.success,
        n_rows=len(chk_vals),
        outcomes=(o,),
        gx_version=str(gx.__version__),
    )


# --------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------


def check_embeddings(
    array: np.ndarray,
    expected_dim: int,
    norm_range: tuple[float, float] | None = None,
    name: str = "embeddings",
    expected_rows: int | None = None,
) -> DataCheckResult:
    """Check an (N, D) embedding matrix: numeric, 2-D with ``D == expected_dim``, ``N ==
    expected_rows`` (when given), every value finite, and every row's L2 norm in ``norm_range``
    (inclusive; e.g. ``(0.99, 1.01)`` for all-MiniLM-L6-v2, whose vectors are unit-norm).
    Rows named are row positions."""
    if isinstance(expected_dim, bool) or not isinstance(expected_dim, (int, np.integer)) or expected_dim < 1:
        raise ValueError(f"expected_dim must be a positive int, got {expected_dim!r}")
    if norm_range is not None:
        lo, hi = (float(v) for v in norm_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and 0.0 <= lo <= hi):
            raise ValueError(f"norm_range must be finite (low, high) with 0 <= low <= high, got {norm_range!r}")
    gx = _import_gx()
    E = gx.expectations
    arr = np.asarray(array)
    column = "embedding"
    outcomes: list[ExpectationOutcome] = []
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as e:
            outcomes.append(
                ExpectationOutcome(EXP_EMB_NUMERIC, column, False, {"observed_value": f"dtype {arr.dtype}: {e}"})
            )
            return _result(name, len(arr) if arr.ndim else 0, outcomes, gx)
    if arr.ndim != 2:
        outcomes.append(
            ExpectationOutcome(
                EXP_EMB_DIM, column, False,
                {"observed_value": f"an array of shape {tuple(arr.shape)}, expected (n_rows, {int(expected_dim)})"},
            )
        )  # fmt: skip
        return _result(name, len(arr) if arr.ndim else 0, outcomes, gx)

    n, d = arr.shape
    values = arr.astype(np.float64, copy=False)
    finite_rows = np.isfinite(values).all(axis=1)
    n_nonfinite = (~np.isfinite(values)).sum(axis=1)
    norms = np.full(n, np.nan)
    norms[finite_rows] = np.linalg.norm(values[finite_rows], axis=1)
    # The dimension is judged on an empty frame with the array's columns (no copy of the values);
    # row count, finiteness and norms on a frame of per-row statistics.
    dim_exps = [E.ExpectTableColumnCountToEqual(value=int(expected_dim))]
    dim_names = [EXP_EMB_DIM]
    row_frame = pd.DataFrame({"n_nonfinite": n_nonfinite, "norm": norms})
    row_exps: list[Any] = []
    row_names: list[str] = []
    if expected_rows is not None:
        row_exps.append(E.ExpectTableRowCountToEqual(value=int(expected_rows)))
        row_names.append(EXP_EMB_ROWS)
    row_exps.append(E.ExpectColumnValuesToBeBetween(column="n_nonfinite", min_value=0, max_value=0))
    row_names.append(EXP_EMB_FINITE)
    if norm_range is not None:
        row_exps.append(E.ExpectColumnValuesToBeBetween(column="norm", min_value=lo, max_value=hi))
        row_names.append(EXP_EMB_NORM)
    for exps, exp_names in ((dim_exps, dim_names), (row_exps, row_names)):
        for e, exp_name in zip(exps, exp_names):
            e.meta = {**(e.meta or {}), "ebmops_check": exp_name, "ebmops_column": column}
    names = dim_names + row_names
    suites = [(dim_exps, pd.DataFrame(columns=pd.RangeIndex(d), dtype=np.float64)), (row_exps, row_frame)]
    results = _run_suites(gx, suites)
    for r in (r for res in results for r in res.results):
        exp_name, _ = _tag_of(r)
        o = _renamed(_outcome_from_gx(r), exp_name, column)
        if exp_name == EXP_EMB_DIM:
            o = dataclasses.replace(o, details={**o.details, "observed_value": f"{d} columns (shape {(n, d)}), expected {int(expected_dim)}"})
        elif exp_name == EXP_EMB_ROWS:
            o = dataclasses.replace(o, details={**o.details, "observed_value": f"{n} rows, expected {int(expected_rows)}"})
        elif exp_name == EXP_EMB_FINITE and not o.success:
            rows = np.flatnonzero(~finite_rows)
            bad_vals = values[~np.isfinite(values)]
            o = dataclasses.replace(o, details={
                **o.details,
                "unexpected_rows": _json_safe(rows[:_MAX_ROWS].tolist()),
                "partial_unexpected_list": _json_safe(bad_vals[:_MAX_EXAMPLES].tolist()),
                "n_nonfinite_values": int(n_nonfinite.sum()),
            })  # fmt: skip
        outcomes.append(o)
    outcomes.sort(key=lambda o: names.index(o.expectation))
    return _result(name, n, outcomes, gx)


def _result(name, n, outcomes, gx) -> DataCheckResult:
    return DataCheckResult(
        dataset_name=str(name),
        success=all(o.success for o in outcomes),
        n_rows=int(n),
        outcomes=tuple(outcomes),
        gx_version=str(gx.__version__),
    )


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _clip(v: Any, n: int = _MAX_EXAMPLE_CHARS) -> Any:
    return v if not isinstance(v, str) or len(v) <= n else f"{v[: n - 3]}... ({len(v)} chars)"


def _tag_of(r) -> tuple[str, str | None]:
    meta = r.expectation_config.meta or {}
    return meta["ebmops_check"], meta.get("ebmops_column")


def _renamed(o: ExpectationOutcome, name: str, column: str | None) -> ExpectationOutcome:
    """The ebmops name and the user's column; the GX expectation kept in the details."""
    gx_name = o.expectation
    details = {"gx_expectation": gx_name, **o.details}
    examples = details.get("partial_unexpected_list")
    if examples and any(isinstance(v, str) for v in examples):
        if name == EXP_TEXT_LENGTH:
            details["example_lengths"] = [len(v) if isinstance(v, str) else None for v in examples]
        details["partial_unexpected_list"] = [_clip(v) for v in examples]
    if gx_name == "expect_column_to_exist" and not o.success:
        details["observed_value"] = "column is missing"
    return ExpectationOutcome(name, column, o.success, details)


def _with_severity(o: ExpectationOutcome, severity: str, extra: dict, what: str) -> ExpectationOutcome:
    details = {**o.details, **extra, "severity": severity}
    if o.success:
        return ExpectationOutcome(o.expectation, o.column, True, details)
    if severity == "warn":
        n = details.get("n_duplicated_queries", details.get("n_conflicting_queries", details.get("unexpected_count")))
        details["warning"] = f"{n} {what} (set to warn, not fail)"
        return ExpectationOutcome(o.expectation, o.column, True, details)
    return ExpectationOutcome(o.expectation, o.column, False, details)


def _duplicate_details(keys: list, raw: list, index: pd.Index) -> dict[str, Any]:
    groups: dict[str, list[int]] = {}
    for pos, k in enumerate(keys):
        if k is not None:
            groups.setdefault(k, []).append(pos)
    dup_groups = [g for g in groups.values() if len(g) > 1]
    return {
        "n_duplicated_queries": len(dup_groups),
        "n_extra_rows": sum(len(g) - 1 for g in dup_groups),
        "examples": [
            {"query": _json_safe(raw[g[0]]), "rows": _json_safe([index[p] for p in g[:_MAX_ROWS]])}
            for g in dup_groups[:_MAX_EXAMPLES]
        ],
    }


def _conflict_details(keys: list, raw: list, labels: list, index: pd.Index) -> dict[str, Any]:
    by_key: dict[str, dict[Any, list[int]]] = {}
    for pos, (k, lab) in enumerate(zip(keys, labels)):
        if k is not None and lab is not None:
            by_key.setdefault(k, {}).setdefault(_label_key(lab), []).append(pos)
    conflicts = [(k, v) for k, v in by_key.items() if len(v) > 1]
    rows = [p for _, v in conflicts for ps in v.values() for p in ps]
    examples = []
    for _, v in conflicts[:_MAX_EXAMPLES]:
        first = min(p for ps in v.values() for p in ps)
        examples.append({
            "query": _json_safe(raw[first]),
            "labels": {str(lab): _json_safe([index[p] for p in ps[:_MAX_ROWS]]) for lab, ps in v.items()},
        })  # fmt: skip
    return {
        "n_conflicting_queries": len(conflicts),
        "unexpected_count": len(rows),
        "unexpected_rows": _json_safe([index[p] for p in sorted(rows)[:_MAX_ROWS]]),
        "partial_unexpected_list": [e["query"] for e in examples],
        "examples": examples,
    }


def _label_key(v: Any) -> Any:
    return None if v is None else (v if isinstance(v, (str, int, float, bool)) else str(v))


def _column(df: pd.DataFrame, col: str) -> list[Any]:
    s = df.loc[:, [c for c in df.columns if str(c) == col][:1]].iloc[:, 0]
    return list(s.array)


def _none_if_missing(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (float, np.floating)) and np.isnan(v):
        return None
    return _py_scalar(v)


def _py_scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _texts_and_index(texts, what: str) -> tuple[list[Any], list[Any]]:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a sequence of strings, not one string")
    if isinstance(texts, pd.DataFrame):
        raise TypeError(f"{what} must be a Series or sequence of strings, not a DataFrame")
    if isinstance(texts, pd.Series):
        return [_none_if_missing(v) for v in texts.array], list(texts.index)
    vals = [_none_if_missing(v) for v in texts]
    return vals, list(range(len(vals)))


def check_training_variety(
    texts: Sequence[str] | pd.Series,
    labels: Sequence | pd.Series | None = None,
    min_distinct: int = 20,
    name: str = "train variety",
    column: str = "text",
    label_column: str = "label",
) -> DataCheckResult:
    """Fail when the training queries cannot describe a distribution: fewer than `min_distinct` distinct
    queries (compared with :func:`query_key`; a file of one query copied 500 times embeds to one point,
    whose covariance is singular), or, with labels, fewer than two labels (a classifier energy of one
    class is constant). Null labels are left to the label checks."""
    gx = _import_gx()
    values, _ = _texts_and_index(texts, "training texts")
    keys = {query_key(v) for v in values if isinstance(v, str) and v.strip()}
    outcomes = [
        ExpectationOutcome(
            expectation=EXP_DISTINCT_QUERIES,
            column=column,
            success=len(keys) >= min_distinct,
            details={
                "observed_value": len(keys),
                "min_value": min_distinct,
                "description": f"{len(keys)} distinct queries in {len(values)} rows, expected at least {min_distinct}",
            },
        )
    ]
    if labels is not None:
        distinct = sorted({str(v) for v in labels if v is not None and not (isinstance(v, float) and v != v)})
        outcomes.append(
            ExpectationOutcome(
                expectation=EXP_TWO_LABELS,
                column=label_column,
                success=len(distinct) >= 2,
                details={
                    "observed_value": distinct[:5],
                    "description": f"{len(distinct)} distinct label(s) {distinct[:5]}, expected at least 2",
                },
            )
        )
    return DataCheckResult(
        dataset_name=name,
        success=all(o.success for o in outcomes),
        n_rows=len(values),
        outcomes=tuple(outcomes),
        gx_version=str(gx.__version__),
    )
