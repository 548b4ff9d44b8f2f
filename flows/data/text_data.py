"""Loaders for text (and vector) data sources: CLINC150's JSON, and any CSV or Parquet table.

Loaders check structure only and say exactly what is wrong with a file (which file, which key or
column, which row, which byte). The content checks (empty text, duplicates, leakage, label set, ...)
are Great Expectations suites in :mod:`flows.data.text_checks`; a loader returns empty or odd
strings as they are so that those checks can name them.

Frames returned here have normalised column names:

* ``text``      - the raw query text (``str``), when the source has a text column;
* vector columns - their own names, in file order (when the source holds vectors instead of text);
* ``label``     - optional class label (intent);
* ``split``     - optional split name;
* ``timestamp`` - optional, UTC ``datetime64`` (naive times are taken as UTC);
* ``feedback``  - optional, nullable ``Int8``: 1 = a person marked the input as a problem, 0 = marked
  fine, missing = nobody looked.

Errors name rows as "data rows": 0-based positions in the table (the CSV header not counted).
Nothing here runs at import.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "CLINC150_KEYS",
    "CLINC150_OOS_LABEL",
    "DataSourceError",
    "NORMALISED_COLUMNS",
    "default_clinc150_path",
    "load_clinc150",
    "load_table",
    "vector_columns_of",
]

#: The six lists of CLINC150's ``data_full.json``: in-scope train/val/test and out-of-scope ones.
CLINC150_KEYS = ("train", "val", "test", "oos_train", "oos_val", "oos_test")
#: The label CLINC150 gives every out-of-scope query.
CLINC150_OOS_LABEL = "oos"
#: Names that :func:`load_table` gives the optional columns (vector columns keep their own names).
NORMALISED_COLUMNS = ("text", "label", "split", "timestamp", "feedback")

# Strings read as missing in non-text CSV columns (pandas' defaults). A text column keeps them as
# text: "none", "NA" and "null" are real chatbot queries.
_NA_TOKENS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_MAX_SHOWN = 5


class DataSourceError(ValueError):
    """A data file cannot be read as asked; the message names the file and what is wrong."""


# --------------------------------------------------------------------------------------------------
# CLINC150
# --------------------------------------------------------------------------------------------------


def default_clinc150_path() -> Path:
    """``$EBMOPS_CLINC150_PATH`` if set, else ``../shared/datasets/clinc150/data_full.json`` next to
    the repository (where the project expects the file; it is not committed)."""
    env = os.environ.get("EBMOPS_CLINC150_PATH")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "datasets" / "clinc150" / "data_full.json"


def load_clinc150(path: str | Path) -> dict[str, pd.DataFrame]:
    """Read CLINC150's ``data_full.json``: ``{key: DataFrame(text, label)}`` for the six keys
    ``train, val, test, oos_train, oos_val, oos_test`` (out-of-scope rows have label ``"oos"``).

    Raises ``FileNotFoundError`` for a missing file and :class:`DataSourceError` for a file that
    is not JSON, lacks a key, or holds a row that is not ``[text, intent]`` with two strings (the
    message names the key and the row index). Extra keys are ignored. Text is returned unchanged.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"CLINC150 file not found: {path} (get data_full.json from "
            "https://github.com/clinc/oos-eval, data/data_full.json, and pass its path)"
        )
    if not path.is_file():
        raise DataSourceError(f"{path}: not a file")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataSourceError(f"{path}: {_describe_decode_error(raw, e)}") from None
    except json.JSONDecodeError as e:
        raise DataSourceError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from None
    if not isinstance(data, dict):
        raise DataSourceError(
            f"{path}: expected a JSON object with keys {list(CLINC150_KEYS)}, "
            f"got a JSON {type(data).__name__}"
        )
    missing = [k for k in CLINC150_KEYS if k not in data]
    if missing:
        raise DataSourceError(
            f"{path}: missing keys {missing}; found {sorted(map(str, data))} "
            "(is this CLINC150's data_full.json?)"
        )
    frames: dict[str, pd.DataFrame] = {}
    for key in CLINC150_KEYS:
        rows = data[key]
        if not isinstance(rows, list):
            raise DataSourceError(
                f"{path}: {key!r} must be a list of [text, intent] rows, got {type(rows).__name__}"
            )
        texts: list[str] = []
        labels: list[str] = []
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 2):
                raise DataSourceError(
                    f"{path}: {key}[{i}] must be a [text, intent] pair, got {_short(row)}"
                )
            text, label = row
            if not isinstance(text, str):
                raise DataSourceError(
                    f"{path}: {key}[{i}]: text must be a string, got {type(text).__name__} {_short(text)}"
                )
            if not isinstance(label, str):
                raise DataSourceError(
                    f"{path}: {key}[{i}]: intent must be a string, got {type(label).__name__} {_short(label)}"
                )
            texts.append(text)
            labels.append(label)
        frames[key] = pd.DataFrame(
            {"text": pd.Series(texts, dtype=object), "label": pd.Series(labels, dtype=object)}
        )
    return frames


# --------------------------------------------------------------------------------------------------
# CSV / Parquet
# --------------------------------------------------------------------------------------------------


def load_table(
    path: str | Path,
    text_column: str | None = None,
    vector_columns: str | Sequence[str] | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    timestamp_column: str | None = None,
    feedback_column: str | None = None,
) -> pd.DataFrame:
    """Read a CSV or Parquet file holding either a text column or vector columns.

    path: ``.csv``/``.tsv``/``.txt`` (comma-separated, or tab for ``.tsv``) or ``.parquet``/``.pq``.
        CSV bytes are decoded as UTF-8, strictly (a leading BOM is dropped).
    text_column / vector_columns: exactly one must be given. ``vector_columns`` is a list of names
        or one glob pattern (``"emb_*"``), matched against the file's columns in file order; a
        single name without wildcards is taken as that column.
    label_column, split_column, timestamp_column, feedback_column: optional; renamed to ``label``,
        ``split``, ``timestamp``, ``feedback``.

    Returns only the selected columns: ``text`` or the vector columns, then the optional ones.
    ``frame.attrs`` holds ``source`` (the path) and ``vector_columns`` (a list, maybe empty).

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for wrong arguments and
    :class:`DataSourceError` for a file that does not fit: undecodable bytes (line and byte offset),
    a missing column (with the columns available), non-numeric vector values, feedback other than
    0/1, unparseable timestamps (each with rows and values).
    """
    path = Path(path).expanduser()
    if (text_column is None) == (vector_columns is None):
        raise ValueError(
            "give exactly one of text_column (text to embed) or vector_columns (precomputed vectors)"
        )
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if not path.is_file():
        raise DataSourceError(f"{path}: not a file")
    suffixes = "".join(path.suffixes[-2:]).lower()
    suffix = path.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        frame = _read_csv(path, text_column, sep="\t" if suffix == ".tsv" else ",")
    elif suffix in _PARQUET_SUFFIXES:
        frame = _read_parquet(path)
    else:
        raise DataSourceError(
            f"{path}: unsupported file type {suffixes or '(no suffix)'!r}; "
            f"use CSV ({', '.join(_CSV_SUFFIXES)}) or Parquet ({', '.join(_PARQUET_SUFFIXES)})"
        )

    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    roles = {
        "text_column": text_column,
        "label_column": label_column,
        "split_column": split_column,
        "timestamp_column": timestamp_column,
        "feedback_column": feedback_column,
    }
    for role, col in roles.items():
        if col is not None and not isinstance(col, str):
            raise ValueError(f"{role} must be a column name (str), got {col!r}")
    vec_cols = (
        _resolve_vector_columns(path, vector_columns, columns) if vector_columns is not None else []
    )
    for role, col in roles.items():
        if col is not None and col not in columns:
            raise DataSourceError(
                f"{path}: column {col!r} ({role}) not found; available columns: {_show(columns, 20)}"
            )
    chosen = [c for c in roles.values() if c is not None] + vec_cols
    dup = sorted({c for c in chosen if chosen.count(c) > 1})
    if dup:
        raise ValueError(f"column(s) {dup} given for more than one role")
    clash = [c for c in vec_cols if c in NORMALISED_COLUMNS]
    if clash:
        raise DataSourceError(
            f"{path}: vector column(s) {clash} clash with the normalised names {list(NORMALISED_COLUMNS)}; "
            "rename them"
        )

    out: dict[str, pd.Series] = {}
    if text_column is not None:
        out["text"] = _text_series(path, frame[text_column], text_column)
    for c in vec_cols:
        out[c] = _numeric_series(path, frame[c], c)
    if label_column is not None:
        out["label"] = frame[label_column]
    if split_column is not None:
        out["split"] = frame[split_column]
    if timestamp_column is not None:
        out["timestamp"] = _timestamp_series(path, frame[timestamp_column], timestamp_column)
    if feedback_column is not None:
        out["feedback"] = _feedback_series(path, frame[feedback_column], feedback_column)
    result = pd.DataFrame(out, index=pd.RangeIndex(len(frame)))
    result.attrs["source"] = str(path)
    result.attrs["vector_columns"] = list(vec_cols)
    return result


def vector_columns_of(frame: pd.DataFrame) -> list[str]:
    """The vector columns of a frame from :func:`load_table` (every column but the normalised ones)."""
    return [c for c in frame.columns if c not in NORMALISED_COLUMNS]


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _read_csv(path: Path, text_column: str | None, sep: str) -> pd.DataFrame:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # strict; the BOM, if any, is not part of the first name
    except UnicodeDecodeError as e:
        raise DataSourceError(f"{path}: {_describe_decode_error(raw, e)}") from None
    if not text.strip():
        raise DataSourceError(f"{path}: the file is empty (no header row)")
    try:
        header = pd.read_csv(io.StringIO(text), sep=sep, nrows=0)
        names = [str(c) for c in header.columns]
        # The text column keeps every string as written ("NA", "none", "" stay text); the other
        # columns read pandas' usual missing-value tokens as missing.
        na_values = {c: list(_NA_TOKENS) for c in names if c != text_column}
        dtype = {text_column: object} if text_column in names else None
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            keep_default_na=False,
            na_values=na_values,
            dtype=dtype,
        )
    except pd.errors.EmptyDataError:
        raise DataSourceError(f"{path}: the file is empty (no header row)") from None
    except pd.errors.ParserError as e:
        raise DataSourceError(f"{path}: cannot parse as CSV: {e}") from None
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except UnicodeDecodeError as e:
        raise DataSourceError(f"{path}: a string column holds bytes that are not UTF-8 ({e})") from None
    except Exception as e:  # pyarrow raises several types for a damaged or non-Parquet file
        raise DataSourceError(f"{path}: cannot read as Parquet: {type(e).__name__}: {e}") from None


def _describe_decode_error(raw: bytes, e: UnicodeDecodeError) -> str:
    start = e.start
    line = raw.count(b"\n", 0, start) + 1
    line_start = raw.rfind(b"\n", 0, start) + 1
    bad = raw[start : max(e.end, start + 1)]
    context = raw[line_start : min(len(raw), start + 20)].split(b"\n")[0]
    return (
        f"not valid UTF-8: byte(s) {bad!r} at byte offset {start} (line {line}, "
        f"byte {start - line_start + 1} of the line): {e.reason}; the line starts {context!r}. "
        "Re-save the file as UTF-8."
    )


# --------------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------------


def _resolve_vector_columns(path: Path, spec: str | Sequence[str], columns: list[str]) -> list[str]:
    if isinstance(spec, str):
        if any(ch in spec for ch in "*?["):
            matched = [c for c in columns if fnmatch.fnmatchcase(c, spec)]
            if not matched:
                raise DataSourceError(
                    f"{path}: no column matches vector_columns pattern {spec!r}; "
                    f"available columns: {_show(columns, 20)}"
                )
            return matched
        spec = [spec]
    names = list(spec)
    if not names:
        raise ValueError("vector_columns is empty")
    if not all(isinstance(c, str) for c in names):
        raise ValueError(f"vector_columns must be column names (str), got {names[:5]!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"vector_columns has duplicates: {sorted({c for c in names if names.count(c) > 1})}")
    missing = [c for c in names if c not in columns]
    if missing:
        raise DataSourceError(
            f"{path}: vector column(s) {_show(missing)} not found; available columns: {_show(columns, 20)}"
        )
    return names


def _text_series(path: Path, s: pd.Series, column: str) -> pd.Series:
    """Text as an object column of str; nulls stay None (the checks report them); bytes are decoded
    strictly as UTF-8; any other type is an error."""
    values = list(s.array)
    out: list[object] = []
    bad: list[tuple[int, object]] = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, (bytes, bytearray)):
            try:
                out.append(bytes(v).decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataSourceError(
                    f"{path}: column {column!r}, data row {i}: not valid UTF-8: byte(s) "
                    f"{bytes(v)[e.start:e.end]!r} at byte offset {e.start} of the value ({e.reason})"
                ) from None
        elif v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            out.append(None)
        else:
            bad.append((i, v))
            out.append(None)
    if bad:
        rows = [i for i, _ in bad]
        raise DataSourceError(
            f"{path}: text column {column!r} holds non-text values in {_rows(len(bad))} "
            f"(data rows {_show(rows)}, e.g. {_show([v for _, v in bad])}); is it the right column?"
        )
    return pd.Series(out, dtype=object)


def _numeric_series(path: Path, s: pd.Series, column: str) -> pd.Series:
    """A float64 column; NaN/inf pass here (the vector checks report them), non-numbers fail."""
    if pd.api.types.is_bool_dtype(s.dtype) or not (
        pd.api.types.is_numeric_dtype(s.dtype) or s.dtype == object or pd.api.types.is_string_dtype(s.dtype)
    ):
        raise DataSourceError(f"{path}: vector column {column!r} has dtype {s.dtype}, expected numbers")
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_complex_dtype(s.dtype):
        return s.astype(np.float64)
    converted = pd.to_numeric(s, errors="coerce").astype(np.float64)
    bad = np.flatnonzero(converted.isna().to_numpy() & s.notna().to_numpy())
    if len(bad):
        raise DataSourceError(
            f"{path}: vector column {column!r} holds non-numeric values in {_rows(len(bad))} "
            f"(data rows {_show(bad.tolist())}, e.g. {_show([s.iloc[i] for i in bad])})"
        )
    return converted


def _feedback_series(path: Path, s: pd.Series, column: str) -> pd.Series:
    """Nullable Int8 of 0/1; True/False count as 1/0; missing means no feedback."""
    values = list(s.array)
    out: list[object] = []
    bad: list[tuple[int, object]] = []
    for i, v in enumerate(values):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            out.append(pd.NA)
            continue
        parsed = _as_binary(v)
        if parsed is None:
            bad.append((i, v))
        out.append(parsed)
    if bad:
        raise DataSourceError(
            f"{path}: feedback column {column!r} must hold 0 or 1 (or be empty); "
            f"found other values in {_rows(len(bad))} (data rows {_show([i for i, _ in bad])}, "
            f"e.g. {_show([v for _, v in bad])})"
        )
    return pd.Series(out, dtype="Int8")


def _as_binary(v: object) -> int | None:
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v) if v in (0, 1) else None
    if isinstance(v, (float, np.floating)):
        return int(v) if v in (0.0, 1.0) else None
    if isinstance(v, str):
        t = v.strip().lower()
        return {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "true": 1, "false": 0}.get(t)
    return None


def _timestamp_series(path: Path, s: pd.Series, column: str) -> pd.Series:
    """UTC timestamps; naive ones are taken as UTC; every row must parse."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        parsed = s
    elif pd.api.types.is_numeric_dtype(s.dtype):
        raise DataSourceError(
            f"{path}: timestamp column {column!r} holds numbers ({s.dtype}); write timestamps as "
            "ISO 8601 text, e.g. 2024-05-01T12:00:00Z"
        )
    else:
        parsed = None
        for fmt in ("ISO8601", "mixed"):
            try:
                parsed = pd.to_datetime(s, utc=True, format=fmt, errors="coerce")
            except (ValueError, TypeError):
                continue
            if not (parsed.isna() & s.notna()).any():
                break
        if parsed is None:
            parsed = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    if parsed.dt.tz is None:
        parsed = parsed.dt.tz_localize("UTC")
    else:
        parsed = parsed.dt.tz_convert("UTC")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        raise DataSourceError(
            f"{path}: timestamp column {column!r}: missing or unparseable date/time in "
            f"{_rows(len(bad))} (data rows {_show(bad.tolist())}, e.g. {_show([s.iloc[i] for i in bad])})"
        )
    return parsed.reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _short(v: object, n: int = 80) -> str:
    r = repr(v.item() if isinstance(v, np.generic) else v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _rows(k: int) -> str:
    return f"{k} row" + ("" if k == 1 else "s")


def _show(items: Sequence, n: int = _MAX_SHOWN) -> str:
    items = list(items)
    shown = ", ".join(_short(i, 60) for i in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"
