"""Data checks for vector datasets, run with Great Expectations (GX 1.x).

This is the one module of ebmops that imports ``great_expectations``. The import is slow (about 5 s),
so it happens inside :func:`check_vector_dataset`, never at module import.

What is checked (:class:`VectorDatasetSpec` says what is expected):

* the table has exactly the expected columns: the feature columns plus the label column, if any
  (``expect_table_columns_to_match_set``; each missing column also gets a failed
  ``expect_column_to_exist``);
* the row count is at least ``min_rows`` (``expect_table_row_count_to_be_between``);
* every feature column holds numbers (``expect_column_values_to_be_in_type_list``, added for
  columns whose dtype is not numeric, e.g. a string in a float column);
* no feature value is null; NaN counts as null (``expect_column_values_to_not_be_null``);
* every feature value lies in ``value_range`` (``expect_column_values_to_be_between``). Without a
  ``value_range`` the bounds are the largest finite float64 values, so +/-inf still fails;
* label values are not null and, when ``allowed_labels`` is given, in that set
  (``expect_column_values_to_not_be_null`` / ``expect_column_values_to_be_in_set``).

How it is run. GX spends roughly 15 ms of pure Python per expectation however small the data, so one
expectation per feature column per check would take ~2 s for 64 columns and ~12 s for a 384-d
embedding. Instead the numeric feature columns are stacked into one long frame
(``row``, ``column``, ``value``) and the null and range expectations run once on ``value``; a second
suite holds the table-level, label and type expectations on the frame as given. Both suites run in
one fresh ephemeral context per call (names carry a random suffix, so calls never collide). GX
decides success; the per-column breakdown of a failed long-frame expectation (count, rows, a few
values) is computed with numpy using the same rule (nulls are not range failures; bounds are
inclusive), and each feature column gets its own :class:`ExpectationOutcome`.

Row indices in the outcomes are the labels of the frame's index.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DataCheckResult",
    "DataValidationError",
    "ExpectationOutcome",
    "VectorDatasetSpec",
    "check_vector_dataset",
    "raise_for_failures",
]

# How much detail an outcome keeps.
_MAX_VALUES = 5
_MAX_ROWS = 10
# Bounds used when the spec gives no value range: every finite float64 passes, +/-inf fails.
_FLOAT_MAX = float(np.finfo(np.float64).max)
# Element types accepted in an object-dtype feature column, and dtypes accepted otherwise.
_NUMERIC_TYPE_LIST = [
    "int", "float", "bool",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
]  # fmt: skip

_NOT_NULL = "expect_column_values_to_not_be_null"
_BETWEEN = "expect_column_values_to_be_between"


# --------------------------------------------------------------------------------------------------
# Spec and results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorDatasetSpec:
    """What a vector dataset must look like.

    feature_columns: the numeric columns, in order.
    min_rows: the fewest rows accepted.
    value_range: inclusive (low, high) bounds for every feature value; finite. ``None`` still
        rejects +/-inf.
    label_column: a column of labels, expected in the table when given.
    allowed_labels: the label values accepted (needs ``label_column``).
    """

    feature_columns: tuple[str, ...]
    min_rows: int = 1
    value_range: tuple[float, float] | None = None
    label_column: str | None = None
    allowed_labels: tuple | None = None
    # Fewest distinct rows (over the feature columns); None: min(min_rows, 10). A split of one vector
    # copied many times has no spread: a density fitted on it is singular, an energy trained on it constant.
    min_distinct_rows: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.feature_columns, str):
            raise TypeError("feature_columns must be a sequence of column names, not one string")
        cols = tuple(self.feature_columns)
        if not cols:
            raise ValueError("feature_columns must name at least one column")
        if not all(isinstance(c, str) for c in cols):
            raise TypeError(f"feature_columns must be strings, got {cols!r}")
        if len(set(cols)) != len(cols):
            raise ValueError(f"feature_columns has duplicates: {cols!r}")
        object.__setattr__(self, "feature_columns", cols)

        if isinstance(self.min_rows, bool) or not isinstance(self.min_rows, (int, np.integer)):
            raise TypeError(f"min_rows must be an int, got {self.min_rows!r}")
        if self.min_rows < 0:
            raise ValueError(f"min_rows must be >= 0, got {self.min_rows}")
        object.__setattr__(self, "min_rows", int(self.min_rows))

        if self.value_range is not None:
            if len(self.value_range) != 2:
                raise ValueError(f"value_range must be (low, high), got {self.value_range!r}")
            lo, hi = (float(v) for v in self.value_range)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"value_range bounds must be finite, got {self.value_range!r}")
            if lo > hi:
                raise ValueError(f"value_range low > high: {self.value_range!r}")
            object.__setattr__(self, "value_range", (lo, hi))

        if self.label_column is not None:
            if not isinstance(self.label_column, str):
                raise TypeError(f"label_column must be a string, got {self.label_column!r}")
            if self.label_column in cols:
                raise ValueError(f"label_column {self.label_column!r} is also a feature column")
        if self.allowed_labels is not None:
            if self.label_column is None:
                raise ValueError("allowed_labels needs a label_column")
            if isinstance(self.allowed_labels, str):
                raise TypeError("allowed_labels must be a sequence of labels, not one string")
            labels = tuple(_py_scalar(v) for v in self.allowed_labels)
            if not labels:
                raise ValueError("allowed_labels is empty")
            object.__setattr__(self, "allowed_labels", labels)

    @property
    def expected_columns(self) -> tuple[str, ...]:
        if self.label_column is None:
            return self.feature_columns
        return (*self.feature_columns, self.label_column)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_columns": list(self.feature_columns),
            "min_rows": self.min_rows,
            "value_range": None if self.value_range is None else list(self.value_range),
            "label_column": self.label_column,
            "allowed_labels": None if self.allowed_labels is None else list(self.allowed_labels),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VectorDatasetSpec:
        vr = d.get("value_range")
        labels = d.get("allowed_labels")
        return cls(
            feature_columns=tuple(d["feature_columns"]),
            min_rows=d.get("min_rows", 1),
            value_range=None if vr is None else tuple(vr),
            label_column=d.get("label_column"),
            allowed_labels=None if labels is None else tuple(labels),
        )


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict. ``details`` holds JSON-serialisable values only (observed value,
    unexpected count, a few unexpected values, unexpected row indices, ...)."""

    expectation: str
    column: str | None
    success: bool
    details: dict = field(default_factory=dict, hash=False)

    def describe(self) -> str:
        """One line: the expectation, the column, what was observed."""
        where = f" on column {self.column!r}" if self.column is not None else ""
        return f"{self.expectation}{where}: {_describe_details(self.expectation, self.details)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "column": self.column,
            "success": self.success,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExpectationOutcome:
        return cls(
            expectation=d["expectation"],
            column=d.get("column"),
            success=bool(d["success"]),
            details=dict(d.get("details") or {}),
        )


@dataclass(frozen=True)
class DataCheckResult:
    """The verdict on one dataset: ``success`` is True only when every outcome succeeded."""

    dataset_name: str
    success: bool
    n_rows: int
    outcomes: tuple[ExpectationOutcome, ...]
    gx_version: str

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.success)

    def summary(self) -> str:
        """One line per failed expectation; a single 'passed' line when none failed."""
        fails = self.failures
        if not fails:
            return (
                f"{self.dataset_name}: all {len(self.outcomes)} expectations passed "
                f"({self.n_rows} rows)"
            )
        return "\n".join(o.describe() for o in fails)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_name": self.dataset_name,
            "success": self.success,
            "n_rows": self.n_rows,
            "gx_version": self.gx_version,
            "n_failures": len(self.failures),
            "outcomes": [o.to_dict() for o in self.outcomes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataCheckResult:
        return cls(
            dataset_name=d["dataset_name"],
            success=bool(d["success"]),
            n_rows=int(d["n_rows"]),
            outcomes=tuple(ExpectationOutcome.from_dict(o) for o in d["outcomes"]),
            gx_version=d["gx_version"],
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> DataCheckResult:
        return cls.from_dict(json.loads(text))

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path


class DataValidationError(ValueError):
    """A dataset failed its data checks; ``.result`` holds the full :class:`DataCheckResult`."""

    def __init__(self, result: DataCheckResult) -> None:
        self.result = result
        super().__init__(f"data check failed for {result.dataset_name}:\n{result.summary()}")

    def __reduce__(self):  # keep it picklable (Prefect may pickle task exceptions)
        return (type(self), (self.result,))

    def one_line(self) -> str:
        failures = "; ".join(o.describe() for o in self.result.failures)
        return " ".join(f"data check failed for {self.result.dataset_name}: {failures}".split())


class ChecksFailed(ValueError):
    """One or more datasets failed their checks; the run stops. `results` holds the failed
    DataCheckResults, `result_path` the full result written for the user."""

    what = "checks"

    def __init__(self, results: list, result_path: Path):
        self.results = results
        self.result_path = result_path
        lines = [f"{self.what} failed (full result: {result_path}):"]
        for result in results:
            lines.append(f"- {result.dataset_name}:")
            lines.extend(f"    {line}" for line in result.summary().splitlines())
        super().__init__("\n".join(lines))

    def __reduce__(self):  # Prefect may pickle a task's exception
        return (type(self), (self.results, self.result_path))

    def one_line(self) -> str:
        """The failures on one line: each failed dataset with its failed expectations, then the result file."""
        parts = [
            f"{result.dataset_name}: " + "; ".join(o.describe() for o in result.failures)
            for result in self.results
        ]
        return " ".join(f"{self.what} failed: {' | '.join(parts)} (full result: {self.result_path})".split())


def raise_for_failures(result: DataCheckResult) -> None:
    """Raise :class:`DataValidationError` unless every expectation passed."""
    if not result.success:
        raise DataValidationError(result)


# --------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------


def check_vector_dataset(
    df: pd.DataFrame, spec: VectorDatasetSpec, dataset_name: str
) -> DataCheckResult:
    """Validate ``df`` against ``spec`` with Great Expectations and return the verdict.

    Never raises for bad data (missing/extra columns, strings, NaN, inf, ...): each problem is a
    failed :class:`ExpectationOutcome`. Use :func:`raise_for_failures` to stop on failure.
    Raises ``TypeError`` when ``df`` is not a DataFrame or ``spec`` not a :class:`VectorDatasetSpec`.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if not isinstance(spec, VectorDatasetSpec):
        raise TypeError(f"spec must be a VectorDatasetSpec, got {type(spec).__name__}")
    dataset_name = str(dataset_name)

    gx = _import_gx()
    E = gx.expectations
    n_rows = len(df)
    pre_outcomes: list[ExpectationOutcome] = []

    # Duplicate column names would make df[col] ambiguous (and GX misbehave): report, keep first.
    dup_mask = df.columns.duplicated()
    if dup_mask.any():
        dups = sorted({_json_safe(c) for c in df.columns[dup_mask]}, key=str)
        pre_outcomes.append(
            ExpectationOutcome(
                "expect_column_names_to_be_unique", None, False, {"duplicated_columns": dups}
            )
        )
        df = df.loc[:, ~dup_mask]

    present = set(df.columns)
    lo, hi = spec.value_range if spec.value_range is not None else (-_FLOAT_MAX, _FLOAT_MAX)

    # Sort the present feature columns: numeric ones go to the long frame; the others get a type
    # expectation (and a null check) on the frame as given. An object column holding only numbers
    # passes the type expectation and is range-checked too.
    long_cols: list[str] = []
    typed_cols: set[str] = set()
    for col in spec.feature_columns:
        if col not in present:
            continue
        s = df[col]
        if _is_numeric_dtype(s.dtype):
            long_cols.append(col)
        else:
            typed_cols.add(col)
            if s.dtype == object and _all_numbers(s):
                long_cols.append(col)

    # Suite 1: the frame as given.
    table_exps: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=list(spec.expected_columns), exact_match=True),
        E.ExpectTableRowCountToBeBetween(min_value=spec.min_rows, max_value=None),
    ]
    table_exps += [E.ExpectColumnToExist(column=c) for c in spec.expected_columns if c not in present]
    for col in spec.feature_columns:
        if col in typed_cols:
            table_exps.append(E.ExpectColumnValuesToBeInTypeList(column=col, type_list=_NUMERIC_TYPE_LIST))
            if col not in long_cols:
                table_exps.append(E.ExpectColumnValuesToNotBeNull(column=col))
    label = spec.label_column
    if label is not None and label in present:
        table_exps.append(E.ExpectColumnValuesToNotBeNull(column=label))
        if spec.allowed_labels is not None:
            table_exps.append(
                E.ExpectColumnValuesToBeInSet(column=label, value_set=list(spec.allowed_labels))
            )

    # Suite 2: the numeric feature columns stacked column after column.
    n_long = len(long_cols)
    values = (
        np.column_stack([_as_float(df[c]) for c in long_cols])
        if n_long
        else np.empty((n_rows, 0), dtype=np.float64)
    )
    long_df = pd.DataFrame({"value": values.ravel(order="F")})
    long_exps = [
        E.ExpectColumnValuesToNotBeNull(column="value"),
        E.ExpectColumnValuesToBeBetween(column="value", min_value=lo, max_value=hi),
    ]

    table_res, long_res = _run_suites(gx, [(table_exps, df), (long_exps, long_df)])

    outcomes = pre_outcomes
    outcomes += [_outcome_from_gx(r) for r in table_res.results]
    outcomes += _long_outcomes(long_res, values, long_cols, df.index, lo, hi)
    outcomes += _distinct_rows_outcome(values, spec, n_rows)
    outcomes = _order(outcomes, spec)
    return DataCheckResult(
        dataset_name=dataset_name,
        success=bool(table_res.success and long_res.success and all(o.success for o in outcomes)),
        n_rows=n_rows,
        outcomes=tuple(outcomes),
        gx_version=str(gx.__version__),
    )


# --------------------------------------------------------------------------------------------------
# GX plumbing
# --------------------------------------------------------------------------------------------------


def _import_gx():
    import great_expectations as gx  # slow (~5 s): imported on first check only

    return gx


def preload_great_expectations() -> None:
    """Import Great Expectations and make the checks' context now (e.g. while another process
    starts), so the first check does not pay for them."""
    _gx_session(_import_gx())


class _GxSession:
    """One ephemeral GX context (in-memory stores, no analytics, no progress bars) with one pandas
    batch definition, made once per process and reused by every check: making them costs more than
    running a small suite. Suites and validation definitions are added per run and deleted after it,
    so the stores do not grow in a long-lived process; a lock keeps two threads from sharing them."""

    def __init__(self, gx) -> None:
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        self.gx = gx
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.batch_def = (
            self.context.data_sources.add_pandas("ebmops_source")
            .add_dataframe_asset("ebmops_asset")
            .add_batch_definition_whole_dataframe("ebmops_batch")
        )
        self.lock = threading.Lock()

    def run(self, suites: list[tuple[list, pd.DataFrame]]) -> list[Any]:
        gx, context = self.gx, self.context
        tag = uuid.uuid4().hex[:12]
        results = []
        with self.lock:
            for i, (exps, frame) in enumerate(suites):
                # Expectations go in through the constructor: suite.add_expectation saves the suite
                # each time, which costs ~50 ms per expectation.
                suite = context.suites.add(gx.ExpectationSuite(name=f"ebmops_suite_{tag}_{i}", expectations=exps))
                vd = context.validation_definitions.add(
                    gx.ValidationDefinition(name=f"ebmops_validation_{tag}_{i}", data=self.batch_def, suite=suite)
                )
                try:
                    results.append(
                        vd.run(
                            batch_parameters={"dataframe": frame},
                            result_format={"result_format": "SUMMARY", "partial_unexpected_count": _MAX_ROWS},
                        )
                    )
                finally:
                    context.validation_definitions.delete(vd.name)
                    context.suites.delete(suite.name)
        return results


_GX_SESSIONS: dict[int, _GxSession] = {}
_GX_SESSIONS_LOCK = threading.Lock()


def _gx_session(gx) -> _GxSession:
    with _GX_SESSIONS_LOCK:
        session = _GX_SESSIONS.get(id(gx))
        if session is None:
            session = _GX_SESSIONS[id(gx)] = _GxSession(gx)
        return session


def _run_suites(gx, suites: list[tuple[list, pd.DataFrame]]) -> list[Any]:
    """Run each (expectations, dataframe) pair in this process's GX context; return the results."""
    return _gx_session(gx).run(suites)


def _outcome_from_gx(r) -> ExpectationOutcome:
    cfg = r.expectation_config
    kwargs = cfg.kwargs
    res = r.result or {}
    details: dict[str, Any] = {}
    if "observed_value" in res:
        details["observed_value"] = _json_safe(res["observed_value"])
    for key in ("element_count", "unexpected_count", "unexpected_percent", "missing_count"):
        if key in res and res[key] is not None:
            details[key] = _json_safe(res[key])
    if res.get("partial_unexpected_list"):
        details["partial_unexpected_list"] = _json_safe(res["partial_unexpected_list"][:_MAX_VALUES])
    if res.get("partial_unexpected_index_list"):
        details["unexpected_rows"] = _json_safe(res["partial_unexpected_index_list"][:_MAX_ROWS])
    mismatched = (res.get("details") or {}).get("mismatched") or {}
    if mismatched:
        details["missing_columns"] = _json_safe(list(mismatched.get("missing", [])))
        details["unexpected_columns"] = _json_safe(list(mismatched.get("unexpected", [])))
    for key in ("min_value", "max_value"):
        if kwargs.get(key) is not None:
            details[key] = _json_safe(kwargs[key])
    if cfg.type == "expect_column_values_to_be_in_set":
        details["value_set"] = _json_safe(list(kwargs.get("value_set") or [])[:50])
    exc = r.exception_info or {}
    if not isinstance(exc, dict) or "raised_exception" not in exc:
        # keyed by metric id when a metric failed to compute; keep the first message
        exc = next((v for v in (exc.values() if isinstance(exc, dict) else []) if isinstance(v, dict)), {})
    if exc.get("raised_exception"):
        details["exception_message"] = str(exc.get("exception_message"))
    column = kwargs.get("column")
    return ExpectationOutcome(
        expectation=str(cfg.type),
        column=None if column is None else str(column),
        success=bool(r.success),
        details=details,
    )


def _long_outcomes(long_res, values, cols, index, lo, hi) -> list[ExpectationOutcome]:
    """Per-column outcomes for the null and range expectations run on the stacked frame."""
    by_type = {r.expectation_config.type: r for r in long_res.results}
    n = values.shape[0]
    null = np.isnan(values)
    with np.errstate(invalid="ignore"):
        outside = ~null & ((values < lo) | (values > hi))
    out: list[ExpectationOutcome] = []
    for exp_type, mask, extra in (
        (_NOT_NULL, null, {}),
        (_BETWEEN, outside, {"min_value": lo, "max_value": hi}),
    ):
        gx_r = by_type[exp_type]
        counts = mask.sum(axis=0)
        for j, col in enumerate(cols):
            k = int(counts[j])
            details: dict[str, Any] = {
                "element_count": n,
                "unexpected_count": k,
                "unexpected_percent": 100.0 * k / n if n else 0.0,
                **extra,
            }
            if k:
                rows = np.flatnonzero(mask[:, j])
                details["unexpected_rows"] = _json_safe(list(index[rows[:_MAX_ROWS]]))
                if exp_type != _NOT_NULL:
                    details["partial_unexpected_list"] = _json_safe(list(values[rows[:_MAX_VALUES], j]))
            out.append(ExpectationOutcome(exp_type, col, k == 0, details))
        # GX is the judge: a failure GX saw but the breakdown did not (should not happen) is kept.
        if not gx_r.success and not counts.any():
            o = _outcome_from_gx(gx_r)
            out.append(ExpectationOutcome(o.expectation, None, False, {"stacked_feature_columns": True, **o.details}))
    return out


EXP_DISTINCT_ROWS = "expect_distinct_rows_to_be_at_least"


def _distinct_rows_outcome(values: np.ndarray, spec: VectorDatasetSpec, n_rows: int) -> list[ExpectationOutcome]:
    """Distinct feature rows, judged only when the table has its rows (the row count reports a short one)."""
    wanted = spec.min_distinct_rows if spec.min_distinct_rows is not None else min(spec.min_rows, 10)
    if wanted < 2 or n_rows < spec.min_rows or values.shape[1] == 0:
        return []
    finite = values[np.isfinite(values).all(axis=1)]
    distinct = len(np.unique(finite, axis=0)) if len(finite) else 0
    return [
        ExpectationOutcome(
            EXP_DISTINCT_ROWS,
            None,
            distinct >= wanted,
            {
                "observed_value": int(distinct),
                "min_value": int(wanted),
                "description": f"{distinct} distinct rows in {n_rows}, expected at least {wanted}",
            },
        )
    ]


def _order(outcomes: list[ExpectationOutcome], spec: VectorDatasetSpec) -> list[ExpectationOutcome]:
    """Table-level outcomes first, then per column in spec order (type, null, range, set)."""
    col_rank = {c: i for i, c in enumerate(spec.expected_columns)}
    exp_rank = {
        "expect_column_to_exist": 0,
        "expect_column_values_to_be_in_type_list": 1,
        _NOT_NULL: 2,
        _BETWEEN: 3,
        "expect_column_values_to_be_in_set": 4,
    }

    def key(ix_o):
        i, o = ix_o
        if o.column is None:
            return (0, 0, 0, i)
        return (1, col_rank.get(o.column, len(col_rank)), exp_rank.get(o.expectation, 9), i)

    return [o for _, o in sorted(enumerate(outcomes), key=key)]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _is_numeric_dtype(dtype) -> bool:
    return bool(
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
    )


def _all_numbers(s: pd.Series) -> bool:
    """True when every non-null element of an object column is a real number (bools count, as
    they do for GX's type list)."""
    vals = s[s.notna()]
    return bool(all(isinstance(v, (int, float, np.integer, np.floating, np.bool_)) for v in vals))


def _as_float(s: pd.Series) -> np.ndarray:
    if s.dtype == object:
        return np.array([np.nan if pd.isna(v) else float(v) for v in s], dtype=np.float64)
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


def _py_scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _json_safe(v: Any) -> Any:
    """Plain JSON values only: NaN/inf become the strings 'nan'/'inf'/'-inf'; unknown objects
    become their str()."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset, np.ndarray, pd.Index)):
        return [_json_safe(x) for x in v]
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def _plural(k: int, word: str) -> str:
    return f"{k} {word}" + ("" if k == 1 else "s")


def _describe_details(expectation: str, d: dict) -> str:
    if d.get("description"):
        return str(d["description"])
    if "duplicated_columns" in d:
        return f"duplicated columns {d['duplicated_columns']}"
    if "missing_columns" in d or "unexpected_columns" in d:
        parts = []
        if d.get("missing_columns"):
            parts.append(f"missing columns {d['missing_columns']}")
        if d.get("unexpected_columns"):
            parts.append(f"unexpected columns {d['unexpected_columns']}")
        return "; ".join(parts) or f"observed columns {d.get('observed_value')}"
    if expectation == "expect_column_to_exist":
        return "column is missing"
    if "exception_message" in d:
        return f"could not be evaluated: {d['exception_message']}"
    if expectation == "expect_table_row_count_to_be_between":
        return f"observed {d.get('observed_value')} rows, expected at least {d.get('min_value')}"
    if d.get("unexpected_count"):
        k = int(d["unexpected_count"])
        text = _plural(k, "unexpected value")
        rows = d.get("unexpected_rows")
        if rows:
            more = ", ..." if k > len(rows) else ""
            text += f" (rows {str(rows)[:-1]}{more}])"
        vals = d.get("partial_unexpected_list")
        if vals and expectation != _NOT_NULL:
            text += f", e.g. {vals}"
        if expectation == _BETWEEN and "min_value" in d:
            if d["min_value"] == -_FLOAT_MAX and d["max_value"] == _FLOAT_MAX:
                text += "; values must be finite"
            else:
                text += f"; allowed [{d['min_value']}, {d['max_value']}]"
        if expectation == "expect_column_values_to_be_in_set" and "value_set" in d:
            text += f"; allowed {d['value_set']}"
        return text
    if "observed_value" in d:
        return f"observed {d['observed_value']!r}"
    return "failed"
