"""Validation of rows sent to the served guard: every problem is named (column, rows)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

# Largest request the guard scores; bigger ones are refused (split them). `EBMOPS_MAX_ROWS` overrides.
DEFAULT_MAX_ROWS = 10_000
# Largest magnitude accepted in a feature; beyond it the float32 energy network overflows.
# `EBMOPS_MAX_ABS_VALUE` overrides.
DEFAULT_MAX_ABS_VALUE = 1e6
# Longest text a served text guard embeds (characters); longer rows are refused. `EBMOPS_MAX_TEXT_CHARS` overrides.
DEFAULT_MAX_TEXT_CHARS = 10_000


def max_rows() -> int:
    value = os.environ.get("EBMOPS_MAX_ROWS", "")
    try:
        return int(value) if value.strip() else DEFAULT_MAX_ROWS
    except ValueError:
        return DEFAULT_MAX_ROWS


def max_abs_value() -> float:
    value = os.environ.get("EBMOPS_MAX_ABS_VALUE", "")
    try:
        return float(value) if value.strip() else DEFAULT_MAX_ABS_VALUE
    except ValueError:
        return DEFAULT_MAX_ABS_VALUE


def max_text_chars() -> int:
    value = os.environ.get("EBMOPS_MAX_TEXT_CHARS", "")
    try:
        return int(value) if value.strip() else DEFAULT_MAX_TEXT_CHARS
    except ValueError:
        return DEFAULT_MAX_TEXT_CHARS


def check_unique_columns(columns) -> None:
    """A column given twice is ambiguous (which one is scored?): refused."""
    names = [str(c) for c in columns]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise InvalidGuardInput(f"columns given more than once: {_first(repeated)}")


def check_texts(texts, column: str) -> list[str]:
    """Non-empty strings no longer than max_text_chars(), or InvalidGuardInput naming the rows."""
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise InvalidGuardInput(f"column '{column}' must hold non-empty strings; rows {_first(bad)} do not")
    limit = max_text_chars()
    long = [i for i, t in enumerate(texts) if len(t) > limit]
    if long:
        raise InvalidGuardInput(
            f"column '{column}': rows {_first(long)} are longer than {limit} characters (EBMOPS_MAX_TEXT_CHARS)"
        )
    return texts


class InvalidGuardInput(ValueError):
    """A request the guard cannot score; the message says what is wrong."""


def validate_guard_input(model_input, feature_names: list[str]) -> np.ndarray:
    """Return the (N, D) float matrix of `feature_names`, or raise `InvalidGuardInput`."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise InvalidGuardInput(
            f"expected a DataFrame with columns {feature_names[0]}..{feature_names[-1]}, "
            f"got {type(model_input).__name__}"
        )
    if len(model_input) == 0:
        raise InvalidGuardInput("the input has no rows")
    limit = max_rows()
    if len(model_input) > limit:
        raise InvalidGuardInput(
            f"too many rows: {len(model_input)} > {limit} per request (EBMOPS_MAX_ROWS); send smaller batches"
        )
    check_unique_columns(model_input.columns)
    columns = [str(c) for c in model_input.columns]
    missing = [c for c in feature_names if c not in columns]
    extra = [c for c in columns if c not in feature_names]
    if missing or extra:
        parts = [f"expected {len(feature_names)} columns, got {len(columns)}"]
        if missing:
            parts.append(f"missing columns: {_first(missing)}")
        if extra:
            parts.append(f"unexpected columns: {_first(extra)}")
        raise InvalidGuardInput("; ".join(parts))
    # Selecting columns copies the frame (milliseconds per request); skip it when already in order.
    frame = model_input if columns == list(feature_names) else model_input[feature_names]
    # dtype kinds: bool, signed, unsigned, float. Checked on the dtypes at once: per-column pandas
    # calls cost tens of milliseconds on a 64-column row, most of a served request.
    non_numeric = [c for c, dtype in zip(feature_names, frame.dtypes) if dtype.kind not in "biuf"]
    for column in non_numeric:
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad_rows = np.flatnonzero(converted.isna() & frame[column].notna())
        if len(bad_rows):
            raise InvalidGuardInput(
                f"column {column!r} is not numeric: rows {_first(bad_rows.tolist())} hold "
                f"{_first([frame[column].iloc[i] for i in bad_rows[:3]])}"
            )
    if non_numeric:
        frame = frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in non_numeric})
    values = frame.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        bad_columns = [feature_names[j] for j in np.flatnonzero(~finite.all(axis=0))]
        bad_rows = np.flatnonzero(~finite.all(axis=1)).tolist()
        raise InvalidGuardInput(
            f"NaN or infinite values in columns {_first(bad_columns)} (rows {_first(bad_rows)})"
        )
    limit = max_abs_value()
    too_large = np.abs(values) > limit
    if too_large.any():
        bad_columns = [feature_names[j] for j in np.flatnonzero(too_large.any(axis=0))]
        bad_rows = np.flatnonzero(too_large.any(axis=1)).tolist()
        raise InvalidGuardInput(
            f"values beyond +/-{limit:g} in columns {_first(bad_columns)} (rows {_first(bad_rows)}); "
            "features are expected on the training scale"
        )
    return values


def _first(items: list, n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"
