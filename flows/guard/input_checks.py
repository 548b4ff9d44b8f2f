"""Validation of rows sent to the served guard: every problem is named (column, rows)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter

import numpy as np
import pandas as pd

# Largest request the guard scores; bigger ones are refused (split them). `EBMOPS_MAX_ROWS` overrides.
DEFAULT_MAX_ROWS = 10_000
# Largest magnitude accepted in a feature; beyond it the float32 energy network overflows.
# `EBMOPS_MAX_ABS_VALUE` overrides.
DEFAULT_MAX_ABS_VALUE = 1e6
# Longest text a served text guard embeds (characters); longer rows are refused. `EBMOPS_MAX_TEXT_CHARS` overrides.
DEFAULT_MAX_TEXT_CHARS = 10_000
# Largest request body the scoring server reads (bytes); a bigger one gets 413 before it is parsed.
# `EBMOPS_MAX_BODY_BYTES` overrides. 20 MB holds 10000 rows of 64 features comfortably as JSON.
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
# Deepest JSON nesting accepted; a guard's request is 4 levels deep ({"dataframe_split": {"data": [[..]]}}).
MAX_JSON_DEPTH = 20
# Longest name (a column, a key, a content type) quoted back in an error message, and longest message.
MAX_NAME_CHARS = 60
MAX_MESSAGE_CHARS = 2000


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


def max_body_bytes() -> int:
    value = os.environ.get("EBMOPS_MAX_BODY_BYTES", "")
    try:
        return int(value) if value.strip() else DEFAULT_MAX_BODY_BYTES
    except ValueError:
        return DEFAULT_MAX_BODY_BYTES


def check_unique_columns(columns) -> None:
    """A column given twice is ambiguous (which one is scored?): refused."""
    repeated = sorted(name for name, count in Counter(str(c) for c in columns).items() if count > 1)
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


# --- params: what a request may ask beside its rows ---------------------------------------------
# `explain`: for each flagged row, the k nearest training examples (0 = off, the default).
EXPLAIN_PARAM = "explain"
MAX_EXPLAIN = 20  # the most neighbours one request may ask for per flagged row


def requested_neighbours(params) -> int:
    """The `explain` count of a request's params (0 when absent or None), or InvalidGuardInput
    naming why it is not a whole number in [0, MAX_EXPLAIN]."""
    if params is None:
        return 0
    if not isinstance(params, dict):
        raise InvalidGuardInput(f"params must be a mapping such as {{'{EXPLAIN_PARAM}': 3}}; got {short(params)}")
    value = params.get(EXPLAIN_PARAM, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidGuardInput(
            f"params '{EXPLAIN_PARAM}' must be a whole number of neighbours per flagged row (0 = off); "
            f"got {short(value)}"
        )
    if value < 0 or value > MAX_EXPLAIN:
        raise InvalidGuardInput(
            f"params '{EXPLAIN_PARAM}' = {int(value)} is outside 0..{MAX_EXPLAIN} "
            f"(at most {MAX_EXPLAIN} nearest training examples per flagged row)"
        )
    return int(value)


def check_params(params, param_names) -> dict:
    """A request's `params` against the params the model declares (`param_names`): None or {} is no
    params; anything else must be an object of declared names with valid values. Returns the params
    to hand to the model; RefusedRequest names what is wrong."""
    if params is None or params == {}:
        return {}
    param_names = list(param_names or ())
    if not param_names:
        raise RefusedRequest(
            f"this model version takes no '{PARAMS_KEY}' (it was registered before '{EXPLAIN_PARAM}' existed); "
            f"got {short(params)}"
        )
    if not isinstance(params, dict):
        raise RefusedRequest(f"'{PARAMS_KEY}' must be a JSON object such as {{\"{EXPLAIN_PARAM}\": 3}}; got {short(params)}")
    unknown = [key for key in params if key not in param_names]
    if unknown:
        raise RefusedRequest(
            f"unknown '{PARAMS_KEY}' {_first(unknown)}; the model takes {_first(param_names)}"
        )
    try:
        if EXPLAIN_PARAM in params:
            requested_neighbours(params)
    except InvalidGuardInput as error:
        raise RefusedRequest(str(error)) from None
    return dict(params)


def validate_guard_input(model_input, feature_names: list[str]) -> np.ndarray:
    """Return the (N, D) float matrix of `feature_names`, or raise `InvalidGuardInput`. The input is a
    DataFrame (columns matched by name, in any order) or an (N, D) array whose columns are
    `feature_names` in order (the tensor form of a vector guard)."""
    if isinstance(model_input, np.ndarray):
        return validate_matrix(model_input, feature_names)
    if isinstance(model_input, dict):
        try:
            model_input = pd.DataFrame(model_input)
        except (ValueError, TypeError) as error:  # scalars without an index, columns of unequal length
            raise InvalidGuardInput(
                f"the input cannot be read as a table of columns: {short(str(error), 200)}"
            ) from error
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
    return check_values(frame.to_numpy(dtype=np.float64), feature_names)


def validate_matrix(x: np.ndarray, feature_names: list[str]) -> np.ndarray:
    """An (N, D) array whose columns are `feature_names` in order -> the float64 matrix, or
    `InvalidGuardInput` naming what is wrong (shape, row count, values)."""
    d = len(feature_names)
    span = f"{feature_names[0]}..{feature_names[-1]}" if d else "none"
    if x.ndim != 2:
        raise InvalidGuardInput(
            f"expected a 2-D array of rows, each of {d} values ({span}); got an array of shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise InvalidGuardInput("the input has no rows")
    limit = max_rows()
    if x.shape[0] > limit:
        raise InvalidGuardInput(
            f"too many rows: {x.shape[0]} > {limit} per request (EBMOPS_MAX_ROWS); send smaller batches"
        )
    if x.shape[1] != d:
        raise InvalidGuardInput(f"each row must hold {d} values ({span}); got rows of {x.shape[1]} values")
    if x.dtype.kind not in "biuf":
        try:
            x = x.astype(np.float64)
        except (ValueError, TypeError) as error:
            raise InvalidGuardInput(f"the input is not numeric: {short(str(error), 200)}") from None
    return check_values(np.asarray(x, dtype=np.float64), feature_names)


def check_values(values: np.ndarray, feature_names: list[str]) -> np.ndarray:
    """values (N, D) float64 in the order of `feature_names`: refused (InvalidGuardInput, naming
    columns and rows) when any is NaN, infinite or beyond max_abs_value()."""
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


def short(value, limit: int = None) -> str:
    """repr(value), cut to `limit` characters (MAX_NAME_CHARS): a 1 MB column name must not become a
    1 MB error message."""
    limit = MAX_NAME_CHARS if limit is None else limit
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# ---------------------------------------------------------------------------------------------
# Requests to the scoring server, checked before MLflow parses them (flows/guard/serving.py wraps
# MLflow's app with these). MLflow would otherwise drop columns the signature does not name, build
# three rows from one row and a three-entry index, or fail with a 500 on deep nesting.

CONTENT_TYPES = ("application/json", "text/csv", "application/vnd.apache.parquet")
INPUT_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS_KEY = "params"
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class RefusedRequest(InvalidGuardInput):
    """A request refused before the model sees it; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(bound_message(message))
        self.status = status


def bound_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    if len(message) <= limit:
        return message
    return f"{message[:limit]}... ({len(message) - limit} characters cut)"


def check_content_type(content_type: str | None) -> str:
    """The media type of a Content-Type header MLflow's server parses, or RefusedRequest(415)."""
    accepted = f"the server takes these content types: {list(CONTENT_TYPES)} (optionally '; charset=utf-8')"
    if content_type is None or not content_type.strip():
        raise RefusedRequest(f"no Content-Type header; {accepted}", 415)
    media, *parameters = [part.strip() for part in content_type.split(";")]
    if media.lower() not in CONTENT_TYPES:
        raise RefusedRequest(f"unsupported Content-Type {short(content_type)}; {accepted}", 415)
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key != "charset" or value.lower() != "utf-8":
            raise RefusedRequest(f"unsupported Content-Type parameter {short(parameter)}; {accepted}", 415)
    return media.lower()


def json_depth(body: bytes) -> int:
    """How deeply the JSON text nests arrays and objects, counted on the bytes (strings skipped), so
    that a 100000-deep body is refused without recursing into it."""
    skeleton = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8) & 0xDF  # '{' -> '[', '}' -> ']'
    brackets = skeleton[(skeleton == 0x5B) | (skeleton == 0x5D)]
    if not len(brackets):
        return 0
    return int(np.cumsum(np.where(brackets == 0x5B, 1, -1), dtype=np.int64).max())


def _unique_keys(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        repeated = [key for key, count in Counter(key for key, _ in pairs).items() if count > 1]
        raise RefusedRequest(f"a JSON object gives keys more than once: {_first(repeated)}")
    return obj


def parse_json_body(body: bytes):
    """The decoded JSON body, or RefusedRequest naming why it cannot be read."""
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise RefusedRequest(f"the JSON body nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except RefusedRequest:
        raise
    except RecursionError:
        raise RefusedRequest(f"the JSON body nests too deeply; at most {MAX_JSON_DEPTH} levels are accepted")
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer of > 4300 digits
        raise RefusedRequest(f"Ensure that input is a valid JSON formatted string: {short(str(error), 200)}")


def check_request_body(
    body: bytes, media_type: str, input_names: list[str] | None, param_names=(),
) -> None:
    """Refuse (RefusedRequest) what MLflow's parser would silently change or fail on: for JSON a
    body nested too deeply, invalid, or not exactly one input format, or params the model does not
    declare (`param_names`) or with invalid values; in every form columns the model does not take
    (`input_names`, when its signature names them), columns given twice, rows of the wrong length,
    an index that does not match the rows, more rows than max_rows()."""
    if media_type == "application/json":
        _check_json_request(parse_json_body(body), input_names, param_names)
    elif media_type == "text/csv":
        try:
            header = next(csv.reader(io.StringIO(body.decode("utf-8"))), [])
        except (UnicodeDecodeError, csv.Error):
            return  # MLflow answers 400 for a CSV it cannot parse
        _check_columns(header, input_names, "CSV header")
    elif media_type == "application/vnd.apache.parquet":
        try:
            import pyarrow.parquet as pq

            names = pq.read_schema(io.BytesIO(body)).names
        except Exception:  # noqa: BLE001 - MLflow answers 400 for a file it cannot read
            return
        _check_columns([n for n in names if not n.startswith("__index_level_")], input_names, "Parquet columns")


def _json_form(doc, param_names) -> tuple[str, object, dict]:
    """(input format, its value, checked params) of a decoded JSON request, or RefusedRequest."""
    formats_text = f"exactly one of the input fields {list(INPUT_FORMATS)}"
    if not isinstance(doc, dict):
        raise RefusedRequest(
            f"The input must be a JSON dictionary with {formats_text}; got a JSON {_json_type(doc)}"
        )
    formats = [key for key in doc if key in INPUT_FORMATS]
    if len(formats) != 1:
        raise RefusedRequest(
            f"The input must be a JSON dictionary with {formats_text} (and optionally '{PARAMS_KEY}'); "
            f"got keys {_first(list(doc))}"
        )
    (form,) = formats
    others = [key for key in doc if key not in (form, PARAMS_KEY)]
    if others:
        raise RefusedRequest(
            f"unexpected top-level keys {_first(others)} beside '{form}' (only '{PARAMS_KEY}' may be added)"
        )
    params = check_params(doc.get(PARAMS_KEY), param_names)
    return form, doc[form], params


def _check_json_request(doc, input_names: list[str] | None, param_names=()) -> None:
    form, value, _ = _json_form(doc, param_names)
    if form == "dataframe_split":
        _check_split(value, input_names)
    elif form == "dataframe_records":
        if not isinstance(value, list):
            raise RefusedRequest(
                f"dataframe_records must be a list of records (objects); got a JSON {_json_type(value)}"
            )
        _check_records(value, input_names, form)
    elif form == "instances":
        if isinstance(value, list) and any(isinstance(item, dict) for item in value):
            _check_records(value, input_names, form)
        elif isinstance(value, list):
            _check_row_count(len(value))
    elif isinstance(value, dict):  # inputs as {column: [values]}
        _check_columns(list(value), input_names, "inputs")
        lengths = {len(v) for v in value.values() if isinstance(v, list)}
        if len(lengths) > 1:
            raise RefusedRequest(f"inputs: the columns hold different numbers of values ({sorted(lengths)[:5]})")
        _check_row_count(max(lengths, default=0))
    elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
        _check_records(value, input_names, form)


def _check_split(split, input_names: list[str] | None) -> None:
    if not isinstance(split, dict):
        raise RefusedRequest(
            f"dataframe_split must be a dictionary with 'data' and optionally 'columns' and 'index'; "
            f"got a JSON {_json_type(split)}"
        )
    unknown = [key for key in split if key not in ("columns", "data", "index")]
    if unknown or "data" not in split:
        raise RefusedRequest(
            f"dataframe_split must be a dictionary with 'data' and optionally 'columns' and 'index'; "
            f"got keys {_first(list(split))}"
        )
    data = split["data"]
    if not isinstance(data, list):
        raise RefusedRequest(f"dataframe_split 'data' must be a list of rows; got a JSON {_json_type(data)}")
    _check_row_count(len(data))
    not_lists = [i for i, row in enumerate(data) if not isinstance(row, list)]
    if not_lists:
        raise RefusedRequest(f"dataframe_split 'data' rows {_first(not_lists)} are not lists of values")
    if "columns" in split:
        columns = split["columns"]
        if not isinstance(columns, list):
            raise RefusedRequest(f"dataframe_split 'columns' must be a list of names; got a JSON {_json_type(columns)}")
        _check_columns(columns, input_names, "dataframe_split")
        wrong = [i for i, row in enumerate(data) if len(row) != len(columns)]
        if wrong:
            raise RefusedRequest(
                f"dataframe_split names {len(columns)} columns but row {wrong[0]} has {len(data[wrong[0]])} columns "
                f"(rows {_first(wrong)} differ)"
            )
    if "index" in split:
        index = split["index"]
        if not isinstance(index, list) or len(index) != len(data):
            size = f"{len(index)} entries" if isinstance(index, list) else f"a JSON {_json_type(index)}"
            raise RefusedRequest(
                f"dataframe_split 'index' has {size} but 'data' has {len(data)} rows; "
                "send one index entry per row, or no index"
            )


def _check_records(records: list, input_names: list[str] | None, form: str) -> None:
    _check_row_count(len(records))
    not_objects = [i for i, record in enumerate(records) if not isinstance(record, dict)]
    if not_objects:
        raise RefusedRequest(f"{form}: records {_first(not_objects)} are not JSON objects of column: value")
    names: dict = {}
    for record in records:
        names.update(dict.fromkeys(record))
    _check_columns(list(names), input_names, form)


def _check_columns(columns: list, input_names: list[str] | None, where: str) -> None:
    not_names = [c for c in columns if not isinstance(c, str)]
    if not_names:
        raise RefusedRequest(f"{where}: column names must be strings; got {_first(not_names)}")
    try:
        check_unique_columns(columns)
    except InvalidGuardInput as error:
        raise RefusedRequest(f"{where}: {error}") from error
    if input_names is not None:
        known = set(input_names)
        extra = [c for c in columns if c not in known]
        if extra:
            given = set(columns)
            missing = [c for c in input_names if c not in given]
            raise RefusedRequest(
                f"{where}: unexpected columns {_first(extra)}"
                + (f"; missing columns {_first(missing)}" if missing else "")
                + f"; the model takes the {len(input_names)} columns "
                f"{short(input_names[0])}..{short(input_names[-1])} and nothing else"
            )


def _check_row_count(n: int) -> None:
    if n > max_rows():
        raise RefusedRequest(f"too many rows: {n} > {max_rows()} per request (EBMOPS_MAX_ROWS); send smaller batches")


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def first_items(items: list, n: int = 5) -> str:
    """The first n items, each cut to MAX_NAME_CHARS, as one bounded list for a message."""
    shown = ", ".join(short(i) for i in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"


_first = first_items


# ---------------------------------------------------------------------------------------------
# The tensor form of a vector guard. Its signature takes one (-1, D) float64 tensor, so a request is
# turned into that matrix here, before the model: `{"inputs": [[...], ...]}` (or `instances`) as
# rows of D numbers in the order of the model's features; the named-column forms of older clients
# (dataframe_split, dataframe_records, records in inputs/instances, inputs as {column: values}, CSV,
# Parquet) are matched by name, in any order, into the same matrix. Columns the model does not take,
# missing, or given twice are refused by name. Values are read as MLflow reads a double column: JSON
# numbers, booleans (1.0 / 0.0), numeric strings ("1.5"), null (NaN, then refused by the pyfunc's
# NaN check); anything else is refused naming its row and column.


def tensor_request(
    body: bytes, media_type: str, feature_names: list[str], param_names=(),
) -> tuple[np.ndarray, dict]:
    """(the float64 matrix (N, D) in the order of `feature_names`, the request's checked params), or
    RefusedRequest (InvalidGuardInput for a CSV/Parquet cell) naming what is wrong."""
    names = [str(n) for n in feature_names]
    if media_type == "application/json":
        return _json_tensor_request(body, names, param_names)
    if media_type == "text/csv":
        return _csv_matrix(body, names), {}
    return _parquet_matrix(body, names), {}


def _json_tensor_request(body: bytes, names: list[str], param_names) -> tuple[np.ndarray, dict]:
    # Fast path: orjson decodes a 1000-row body several times faster than `json`. It takes a key given
    # twice silently (the last wins), so the answer is kept only when the pairs it read account for
    # every ':' in the body (a repeated key or a ':' inside a string sends the body the careful way);
    # it refuses NaN/Infinity tokens, integers beyond 64 bits and a UTF-8 BOM, which the careful
    # parser reads (and then names) as before. Any refusal is made by the careful way too, so the
    # message never depends on which parser read the body.
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson comes with prefect
        orjson = None
    if orjson is not None:
        try:
            doc = orjson.loads(body)
            form, value, params = _json_form(doc, param_names)
            matrix, pairs = _json_matrix(form, value, names)
            if pairs + _pairs_outside_rows(doc) == body.count(b":"):
                return matrix, params
        except (ValueError, RecursionError):  # orjson.JSONDecodeError, RefusedRequest
            pass
    form, value, params = _json_form(parse_json_body(body), param_names)
    return _json_matrix(form, value, names)[0], params


def _pairs_outside_rows(doc: dict) -> int:
    """Key/value pairs of the top-level object and of its params (rows are counted by _json_matrix)."""
    params = doc.get(PARAMS_KEY)
    return len(doc) + (len(params) if isinstance(params, dict) else 0)


def _json_matrix(form: str, value, names: list[str]) -> tuple[np.ndarray, int]:
    """(matrix, key/value pairs read inside `value`) for one JSON input form."""
    if form == "dataframe_split":
        return _split_matrix(value, names), (len(value) if isinstance(value, dict) else 0)
    if form == "dataframe_records":
        if not isinstance(value, list):
            raise RefusedRequest(
                f"dataframe_records must be a list of records (objects); got a JSON {_json_type(value)}"
            )
        return _records_matrix(value, names, form), sum(len(r) for r in value)
    if isinstance(value, dict) and form == "inputs":  # {column: [values]}
        return _columns_matrix(value, names), len(value)
    if not isinstance(value, list):
        raise RefusedRequest(
            f"'{form}' must be a list of rows, each a list of {len(names)} numbers "
            f"({short(names[0])}..{short(names[-1])}), or a list of records; got a JSON {_json_type(value)}"
        )
    if value and all(isinstance(item, dict) for item in value):
        return _records_matrix(value, names, form), sum(len(r) for r in value)
    objects = [i for i, item in enumerate(value) if isinstance(item, dict)]
    if objects:
        raise RefusedRequest(f"{form}: items {_first(objects)} are records but the others are not; send one kind")
    return _rows_matrix(value, names, form), 0


def _rows_matrix(rows: list, names: list[str], where: str, columns: list[str] | None = None) -> np.ndarray:
    """Rows of values in the order of `columns` (default `names`) -> float64 matrix (N, len(columns))."""
    columns = names if columns is None else columns
    _check_row_count(len(rows))
    if not rows:
        raise RefusedRequest(f"{where}: the input has no rows")
    try:
        matrix = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        matrix = None
    if matrix is None or matrix.ndim != 2 or matrix.shape[1] != len(columns):
        _refuse_rows(rows, columns, where)
    return matrix


def _refuse_rows(rows: list, columns: list[str], where: str):
    """The named reason `rows` are not a matrix of len(columns) numbers (always raises)."""
    not_lists = [i for i, row in enumerate(rows) if not isinstance(row, list)]
    if not_lists:
        raise RefusedRequest(
            f"{where}: rows {_first(not_lists)} are not lists of values (row {not_lists[0]} is "
            f"{short(rows[not_lists[0]])}; each row is a list of {len(columns)} numbers)"
        )
    wrong = [i for i, row in enumerate(rows) if len(row) != len(columns)]
    if wrong:
        span = f"{short(columns[0])}..{short(columns[-1])}" if columns else "none"
        raise RefusedRequest(
            f"{where}: row {wrong[0]} has {len(rows[wrong[0]])} values; the model takes {len(columns)} "
            f"({span}) (rows {_first(wrong)} differ)"
        )
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            problem = _cell_problem(cell)
            if problem:
                raise RefusedRequest(f"{where}: row {i}, column {short(columns[j])}: {short(cell)} {problem}")
    raise RefusedRequest(f"{where}: the rows cannot be read as numbers")  # pragma: no cover - a cell says why


def _cell_problem(cell) -> str | None:
    if cell is None:
        return None  # NaN: refused by the NaN check, which names the columns and rows
    if isinstance(cell, (dict, list)):
        return "is not a number"
    try:
        float(cell)
    except OverflowError:
        return "is too large for a 64-bit float"
    except (ValueError, TypeError):
        return "is not a number"
    return None


def _missing_columns(columns: list, names: list[str], where: str) -> None:
    given = set(columns)
    missing = [c for c in names if c not in given]
    if missing:
        raise RefusedRequest(
            f"{where}: expected {len(names)} columns, got {len(columns)}; missing columns {_first(missing)}"
        )


def _split_matrix(split, names: list[str]) -> np.ndarray:
    _check_split(split, names)  # structure, index, extra or repeated columns, row lengths, row count
    if "columns" not in split:
        raise RefusedRequest(
            f"dataframe_split without 'columns': name the model's {len(names)} columns, or send the rows as "
            '{"inputs": [[...], ...]} in the order ' + f"{short(names[0])}..{short(names[-1])}"
        )
    columns = split["columns"]
    _missing_columns(columns, names, "dataframe_split")
    matrix = _rows_matrix(split["data"], names, "dataframe_split", columns)
    if columns != names:
        position = {c: j for j, c in enumerate(columns)}
        matrix = matrix[:, [position[n] for n in names]]
    return matrix


def _records_matrix(records: list, names: list[str], where: str) -> np.ndarray:
    _check_records(records, names, where)  # row count, objects, extra or repeated columns
    if not records:
        raise RefusedRequest(f"{where}: the input has no rows")
    keys: dict = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    _missing_columns(list(keys), names, where)
    lacking = [i for i, record in enumerate(records) if len(record) != len(names)]
    if lacking:
        first = records[lacking[0]]
        raise RefusedRequest(
            f"{where}: records {_first(lacking)} lack columns; record {lacking[0]} has no "
            f"{_first([n for n in names if n not in first])}"
        )
    from operator import itemgetter

    pick = itemgetter(*names)
    rows = [list(pick(record)) if len(names) > 1 else [pick(record)] for record in records]
    return _rows_matrix(rows, names, where)


def _columns_matrix(columns: dict, names: list[str]) -> np.ndarray:
    given = list(columns)
    _check_columns(given, names, "inputs")
    _missing_columns(given, names, "inputs")
    not_lists = [c for c in names if not isinstance(columns[c], list)]
    if not_lists:
        raise RefusedRequest(f"inputs: columns {_first(not_lists)} are not lists of values (one value per row)")
    lengths = {len(columns[c]) for c in names}
    if len(lengths) > 1:
        raise RefusedRequest(f"inputs: the columns hold different numbers of values ({sorted(lengths)[:5]})")
    n = lengths.pop()
    _check_row_count(n)
    rows = [list(r) for r in zip(*(columns[c] for c in names))] if n else []
    return _rows_matrix(rows, names, "inputs")


def _csv_matrix(body: bytes, names: list[str]) -> np.ndarray:
    try:
        text = body.decode("utf-8")
        header = next(csv.reader(io.StringIO(text)), [])
    except (UnicodeDecodeError, csv.Error) as error:
        raise RefusedRequest(f"the CSV body cannot be read: {short(str(error), 200)}") from None
    _check_columns(header, names, "CSV header")
    _missing_columns(header, names, "CSV header")
    try:
        frame = pd.read_csv(io.StringIO(text))
    except Exception as error:  # noqa: BLE001 - pandas raises several types for a malformed CSV
        raise RefusedRequest(f"the CSV body cannot be read as a table: {short(str(error), 200)}") from None
    return validate_guard_input(frame, names)


def _parquet_matrix(body: bytes, names: list[str]) -> np.ndarray:
    try:
        frame = pd.read_parquet(io.BytesIO(body))
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise RefusedRequest(f"the Parquet body cannot be read: {short(str(error), 200)}") from None
    columns = [str(c) for c in frame.columns if not str(c).startswith("__index_level_")]
    _check_columns(columns, names, "Parquet columns")
    _missing_columns(columns, names, "Parquet columns")
    return validate_guard_input(frame[columns], names)
