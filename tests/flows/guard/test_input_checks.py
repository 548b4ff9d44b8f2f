"""Requests the served guard refuses, each with a message that names the problem (no model needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from flows.guard.input_checks import InvalidGuardInput, check_texts, validate_guard_input
from flows.guard.pyfunc import embed_text_frame

FEATURES = ["f0", "f1"]


class FakeEmbedder:
    def embed(self, texts, progress=False):
        return np.ones((len(texts), 2))


def test_a_column_given_twice_is_refused():
    frame = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["f0", "f1", "f1"])
    with pytest.raises(InvalidGuardInput, match=r"columns given more than once: \['f1'\]"):
        validate_guard_input(frame, FEATURES)


def test_two_text_columns_are_refused_not_scored_as_the_word_text():
    frame = pd.DataFrame([["hello", "world"]], columns=["text", "text"])
    with pytest.raises(MlflowException, match=r"more than once: \['text'\]"):
        embed_text_frame(FakeEmbedder(), frame, FEATURES)


def test_texts_longer_than_the_cap_are_refused_by_row(monkeypatch):
    monkeypatch.setenv("EBMOPS_MAX_TEXT_CHARS", "10")
    with pytest.raises(InvalidGuardInput, match=r"rows \[1\] are longer than 10 characters"):
        check_texts(["short", "x" * 11], "text")
    frame = pd.DataFrame({"text": ["fine", "y" * 50]})
    with pytest.raises(MlflowException, match="longer than 10"):
        embed_text_frame(FakeEmbedder(), frame, FEATURES)
    assert embed_text_frame(FakeEmbedder(), pd.DataFrame({"text": ["fine"]}), FEATURES).shape == (1, 2)


def test_blank_and_non_string_texts_are_refused():
    with pytest.raises(InvalidGuardInput, match=r"rows \[1, 2\]"):
        check_texts(["ok", "   ", None], "text")


# --- requests refused before MLflow parses them (flows/guard/serving.py's RequestGuard) ----------

import asyncio  # noqa: E402
import json  # noqa: E402

from flows.guard.input_checks import (  # noqa: E402
    MAX_JSON_DEPTH,
    MAX_MESSAGE_CHARS,
    RefusedRequest,
    check_content_type,
    check_request_body,
    json_depth,
    parse_json_body,
)
from flows.guard.serving import RequestGuard, rewrite_error, strip_request_dump  # noqa: E402

PIXELS = [f"pixel_{i}" for i in range(64)]
ROW = [0.0] * 64


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def refusal(raw: bytes, media_type: str = "application/json", names=PIXELS) -> RefusedRequest:
    with pytest.raises(RefusedRequest) as caught:
        check_request_body(raw, media_type, names)
    return caught.value


def test_valid_requests_in_every_form_pass():
    records = [dict(zip(PIXELS, ROW))]
    for doc in (
        {"dataframe_split": {"columns": PIXELS, "data": [ROW, ROW], "index": [0, 1]}},
        {"dataframe_split": {"columns": PIXELS[::-1], "data": [ROW]}},
        {"dataframe_records": records, "params": {}},
        {"instances": records},
        {"inputs": {c: [0.0] for c in PIXELS}},
    ):
        check_request_body(body(doc), "application/json", PIXELS)
    check_request_body((",".join(PIXELS) + "\n" + ",".join("1" for _ in PIXELS)).encode(), "text/csv", PIXELS)


def test_missing_or_unknown_content_type_is_415():
    for header in (None, "", "  "):
        with pytest.raises(RefusedRequest, match="no Content-Type header") as caught:
            check_content_type(header)
        assert caught.value.status == 415
    for header in ("text/plain", "application/json; charset=latin-1", "application/json; foo=bar", "application/json;"):
        with pytest.raises(RefusedRequest, match="content types") as caught:
            check_content_type(header)
        assert caught.value.status == 415
    assert check_content_type("Application/JSON; charset=UTF-8") == "application/json"
    with pytest.raises(RefusedRequest) as caught:
        check_content_type("x" * 100_000)
    assert len(str(caught.value)) < 400


def test_deep_nesting_is_refused_without_recursing():
    assert json_depth(b'{"a": [[1, "[[[[{{{{"], {"b": "\\"]]]"}]}') == 3
    assert json_depth(b"[" * 200_000 + b"]" * 200_000) == 200_000
    with pytest.raises(RefusedRequest, match=f"nests 100000 levels deep; at most {MAX_JSON_DEPTH}"):
        parse_json_body(b"[" * 100_000 + b"]" * 100_000)
    error = refusal(b'{"inputs": ' + b'{"a": ' * 50 + b"1" + b"}" * 51)
    assert "51 levels deep" in str(error)


def test_invalid_json_is_named_without_echoing_the_body():
    for raw in (b"", b"{" + b"x" * 1_000_000, b"\xff\xfe\x00", b'{"a": 1' + b"0" * 5000 + b"}"):
        error = refusal(raw)
        assert "valid JSON" in str(error) and len(str(error)) < 400


def test_a_json_object_with_a_key_twice_is_refused():
    raw = b'{"dataframe_records": [{"pixel_0": 1, "pixel_0": 2}]}'
    assert "keys more than once: ['pixel_0']" in str(refusal(raw))


def test_extra_columns_are_refused_by_name_in_every_form():
    extra_row = ROW + [1.0]
    columns = PIXELS + ["zzz"]
    records = [dict(zip(columns, extra_row))]
    for doc in (
        {"dataframe_split": {"columns": columns, "data": [extra_row]}},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": {c: [1.0] for c in columns}},
    ):
        assert "unexpected columns ['zzz']" in str(refusal(body(doc)))
    csv = (",".join(columns) + "\n" + ",".join("1" for _ in columns)).encode()
    assert "unexpected columns ['zzz']" in str(refusal(csv, "text/csv"))
    renamed = {"dataframe_split": {"columns": ["p0"] + PIXELS[1:], "data": [ROW]}}
    assert "missing columns ['pixel_0']" in str(refusal(body(renamed)))
    # a model without a signature (a text guard) leaves the columns to the pyfunc
    text_request = body({"dataframe_split": {"columns": ["text", "zzz"], "data": [["a", "b"]]}})
    check_request_body(text_request, "application/json", None)


def test_a_huge_column_name_is_cut_in_the_message():
    doc = {"dataframe_split": {"columns": PIXELS + ["x" * 1_000_000], "data": [ROW + [1.0]]}}
    message = str(refusal(body(doc)))
    assert "'xxxxxxxx" in message and "..." in message
    assert len(message) < 400


def test_index_and_data_of_different_lengths_are_refused():
    doc = {"dataframe_split": {"columns": PIXELS, "data": [ROW], "index": [0, 1, 2]}}
    assert "'index' has 3 entries but 'data' has 1 rows" in str(refusal(body(doc)))
    doc["dataframe_split"]["index"] = 7
    assert "'index' has a JSON number" in str(refusal(body(doc)))


def test_split_structure_problems_are_refused():
    cases = {
        "rows [1] are not lists": {"dataframe_split": {"columns": PIXELS, "data": [ROW, 5]}},
        "row 0 has 10 columns": {"dataframe_split": {"columns": PIXELS, "data": [ROW[:10]]}},
        "got keys ['columns', 'data', 'extra']": {"dataframe_split": {"columns": PIXELS, "data": [ROW], "extra": 1}},
        "column names must be strings": {"dataframe_split": {"columns": [1] + PIXELS[1:], "data": [ROW]}},
        "columns given more than once": {"dataframe_split": {"columns": PIXELS + ["pixel_0"], "data": [ROW + [0.0]]}},
        "must be a dictionary": {"dataframe_split": [1, 2]},
        "must be a list of rows": {"dataframe_split": {"columns": PIXELS, "data": 5}},
    }
    for phrase, doc in cases.items():
        assert phrase in str(refusal(body(doc))), phrase


def test_top_level_shape_problems_are_refused():
    cases = {
        "exactly one of the input fields": {"rows": [ROW]},
        "got keys ['messages']": {"messages": [{"role": "user"}]},
        "unexpected top-level keys ['extra']": {"dataframe_records": [dict(zip(PIXELS, ROW))], "extra": 1},
        "takes no 'params'": {"dataframe_records": [dict(zip(PIXELS, ROW))], "params": {"a": 1}},
        "got a JSON array": [1, 2, 3],
        "records [0] are not JSON objects": {"dataframe_records": [ROW]},
        "different numbers of values": {"inputs": {"pixel_0": [1.0], "pixel_1": [1.0, 2.0]}},
    }
    for phrase, doc in cases.items():
        assert phrase in str(refusal(body(doc))), phrase


def test_too_many_rows_are_refused_before_parsing_into_a_frame(monkeypatch):
    monkeypatch.setenv("EBMOPS_MAX_ROWS", "3")
    doc = {"dataframe_split": {"columns": PIXELS, "data": [ROW] * 4}}
    assert "too many rows: 4 > 3" in str(refusal(body(doc)))


def test_messages_are_bounded():
    error = RefusedRequest("x" * 100_000)
    assert len(str(error)) < MAX_MESSAGE_CHARS + 50 and "characters cut" in str(error)


def test_mlflows_request_dump_and_stack_trace_are_dropped_from_errors():
    message = "Failed to predict data '   pixel_0\n0  1.0\n\n[1 rows x 64 columns]'. \nError: NaN or infinite values"
    assert strip_request_dump(message) == "NaN or infinite values"
    schema = (
        "Failed to enforce schema of data '   pixel_0 ...' with schema '['pixel_0': double (required)]'. "
        "Error: Model is missing inputs ['pixel_63']."
    )
    assert strip_request_dump(schema) == (
        "the input does not match the model signature: Model is missing inputs ['pixel_63']."
    )
    dumped = "Failed to predict data '" + "y" * 10**6 + "'. \nError: " + "z" * 10**5
    raw = json.dumps({"error_code": "BAD_REQUEST", "message": dumped, "stack_trace": "..."})
    rewritten = json.loads(rewrite_error(400, raw.encode()))
    assert set(rewritten) == {"error_code", "message"}
    assert rewritten["message"].startswith("zzz") and len(rewritten["message"]) < MAX_MESSAGE_CHARS + 50
    assert json.loads(rewrite_error(415, b"This predictor only supports ..."))["error_code"] == "BAD_REQUEST"


# RequestGuard in front of a stand-in for MLflow's app, driven as uvicorn drives an ASGI app.


class StandIn:
    """Answers 200 with the body it was given, or an MLflow-style error when the body says `fail`."""

    def __init__(self):
        self.bodies = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.bodies.append(message["body"])
        self.content_type = dict(scope["headers"]).get(b"content-type")
        if b"fail" in message["body"]:
            dumped = "Failed to predict data '" + "d" * 5000 + "'. \nError: bad row"
            error = {"error_code": "INVALID_PARAMETER_VALUE", "message": dumped, "stack_trace": "tb"}
            status, payload = 400, json.dumps(error).encode()
        else:
            status, payload = 200, message["body"]
        headers = [(b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def call(app, raw: bytes, content_type=b"application/json", chunks=1, path="/invocations", declared=True):
    headers = [] if content_type is None else [(b"content-type", content_type)]
    if declared:
        headers.append((b"content-length", str(len(raw)).encode()))
    pieces = [raw[i::chunks] for i in range(chunks)] if chunks > 1 else [raw]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def test_request_guard_passes_a_valid_request_and_normalises_the_content_type():
    inner = StandIn()
    raw = body({"dataframe_split": {"columns": PIXELS, "data": [ROW]}})
    assert call(RequestGuard(inner, PIXELS), raw, b"Application/JSON; charset=utf-8") == (200, raw)
    assert inner.content_type == b"application/json"


def test_request_guard_refuses_before_the_model_sees_the_request(monkeypatch):
    monkeypatch.setenv("EBMOPS_MAX_BODY_BYTES", "2000")
    inner = StandIn()
    guard = RequestGuard(inner, PIXELS)
    status, answer = call(guard, b"{}", content_type=None)
    assert status == 415 and b"no Content-Type header" in answer
    big = b'{"inputs": {}}' + b" " * 2500
    for chunks, declared in ((1, True), (4, False)):  # refused from Content-Length, or counted while read
        status, answer = call(guard, big, chunks=chunks, declared=declared)
        assert status == 413 and b"EBMOPS_MAX_BODY_BYTES" in answer
    status, answer = call(guard, b"[" * 500 + b"]" * 500)
    assert status == 400 and b"levels deep" in answer
    extra = body({"dataframe_split": {"columns": PIXELS + ["zzz"], "data": [ROW + [1.0]]}})
    status, answer = call(guard, extra)
    assert status == 400 and b"unexpected columns ['zzz']" in answer
    assert inner.bodies == []  # none of them reached MLflow's app


def test_request_guard_cuts_mlflows_error_answers():
    inner = StandIn()
    status, answer = call(RequestGuard(inner, None), body({"inputs": {"fail": [1]}}))
    assert status == 400
    assert json.loads(answer) == {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad row"}


def test_request_guard_leaves_other_paths_to_mlflow():
    inner = StandIn()
    status, answer = call(RequestGuard(inner, PIXELS), b"anything", content_type=None, path="/ping")
    assert (status, answer) == (200, b"anything")


def test_request_guard_answers_408_for_a_body_that_stops_arriving(monkeypatch):
    monkeypatch.setenv("EBMOPS_BODY_TIMEOUT_S", "0.2")
    sent = []

    async def receive():
        await asyncio.sleep(5)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(RequestGuard(StandIn(), PIXELS)(scope, receive, send))
    assert sent[0]["status"] == 408 and b"EBMOPS_BODY_TIMEOUT_S" in sent[1]["body"]


def test_a_text_guard_names_extra_columns_cut_to_size():
    frame = pd.DataFrame({"text": ["hello"], "y" * 100_000: [1]})
    with pytest.raises(MlflowException, match="not both") as caught:
        embed_text_frame(FakeEmbedder(), frame, FEATURES)
    assert len(caught.value.message) < 400


# --- the tensor form of a vector guard (input_checks.tensor_request) -----------------------------

import io  # noqa: E402

from flows.guard.input_checks import (  # noqa: E402
    MAX_EXPLAIN,
    check_params,
    requested_neighbours,
    tensor_request,
    validate_matrix,
)
from flows.guard.serving import predictions_body  # noqa: E402

NAMES = ["a", "b", "c"]
X = np.array([[1.0, 2.0, 3.0], [4.5, -5.0, 6.25]])
SHUFFLED = ["c", "a", "b"]  # a request may name the columns in any order


def matrix_of(raw: bytes, media_type="application/json", params=("explain",)):
    return tensor_request(raw, media_type, NAMES, params)


def tensor_refusal(raw: bytes, media_type="application/json", params=("explain",)) -> str:
    with pytest.raises(InvalidGuardInput) as caught:
        tensor_request(raw, media_type, NAMES, params)
    return str(caught.value)


def shuffled_rows():
    return [[row[NAMES.index(c)] for c in SHUFFLED] for row in X.tolist()]


def test_every_request_form_gives_the_same_matrix_in_the_models_column_order():
    records = [dict(zip(SHUFFLED, row)) for row in shuffled_rows()]
    frame = pd.DataFrame(shuffled_rows(), columns=SHUFFLED)
    parquet = io.BytesIO()
    frame.to_parquet(parquet, index=False)
    requests = {
        "inputs rows": (body({"inputs": X.tolist()}), "application/json"),
        "instances rows": (body({"instances": X.tolist()}), "application/json"),
        "split, shuffled": (body({"dataframe_split": {"columns": SHUFFLED, "data": shuffled_rows(), "index": [7, 8]}}), "application/json"),
        "records, shuffled": (body({"dataframe_records": records}), "application/json"),
        "instances records": (body({"instances": records}), "application/json"),
        "inputs columns": (body({"inputs": {c: frame[c].tolist() for c in SHUFFLED}}), "application/json"),
        "CSV, shuffled": (frame.to_csv(index=False).encode(), "text/csv"),
        "Parquet, shuffled": (parquet.getvalue(), "application/vnd.apache.parquet"),
    }
    for name, (raw, media_type) in requests.items():
        matrix, params = matrix_of(raw, media_type)
        assert matrix.dtype == np.float64 and params == {}, name
        np.testing.assert_array_equal(matrix, X, err_msg=name)


def test_json_values_are_read_as_a_double_column_reads_them():
    # booleans 1.0/0.0, numeric strings, null -> NaN (left to the NaN check, which names the column)
    matrix, _ = matrix_of(body({"inputs": [[True, "1.5", None]]}))
    np.testing.assert_array_equal(matrix[:, :2], [[1.0, 1.5]])
    assert np.isnan(matrix[0, 2])
    # tokens only the careful parser reads: NaN, an integer past 64 bits
    matrix, _ = matrix_of(b'{"inputs": [[NaN, 1, 123456789012345678901234567890]]}')
    assert np.isnan(matrix[0, 0]) and matrix[0, 2] == pytest.approx(1.2345678901234568e29)


def test_params_are_passed_on_checked():
    assert matrix_of(body({"inputs": X.tolist(), "params": {"explain": 3}}))[1] == {"explain": 3}
    assert matrix_of(body({"inputs": X.tolist(), "params": {}}))[1] == {}
    cases = {
        "unknown 'params' ['t']; the model takes ['explain']": {"t": 1},
        f"'explain' = {MAX_EXPLAIN + 1} is outside 0..{MAX_EXPLAIN}": {"explain": MAX_EXPLAIN + 1},
        "'explain' = -1 is outside": {"explain": -1},
        "'explain' must be a whole number": {"explain": 2.5},
        "must be a whole number of neighbours per flagged row (0 = off); got True": {"explain": True},
        "'params' must be a JSON object": [1],
    }
    for phrase, params in cases.items():
        assert phrase in tensor_refusal(body({"inputs": X.tolist(), "params": params})), phrase
    # a version registered before params existed refuses them by name
    message = tensor_refusal(body({"inputs": X.tolist(), "params": {"explain": 1}}), params=())
    assert "takes no 'params'" in message


def test_requested_neighbours():
    assert requested_neighbours(None) == 0 and requested_neighbours({}) == 0
    assert requested_neighbours({"explain": None}) == 0
    assert requested_neighbours({"explain": np.int64(4)}) == 4
    with pytest.raises(InvalidGuardInput, match="outside 0..20"):
        requested_neighbours({"explain": 21})
    with pytest.raises(InvalidGuardInput, match="must be a mapping"):
        requested_neighbours(3)


def test_tensor_requests_are_refused_by_name():
    row = [1.0, 2.0, 3.0]
    cases = {
        "row 1 has 2 values; the model takes 3 ('a'..'c')": {"inputs": [row, [1.0, 2.0]]},
        "row 0, column 'b': 'dark' is not a number": {"inputs": [[1.0, "dark", 3.0]]},
        "row 0, column 'c': [1, 2] is not a number": {"inputs": [[1.0, 2.0, [1, 2]]]},
        "row 0, column 'a': {'x': 1} is not a number": {"instances": [[{"x": 1}, 2.0, 3.0]]},
        "rows [0, 1, 2] are not lists of values (row 0 is 1.0": {"inputs": row},
        "inputs: the input has no rows": {"inputs": []},
        "'inputs' must be a list of rows": {"inputs": "hello"},
        "dataframe_split without 'columns'": {"dataframe_split": {"data": [row]}},
        "missing columns ['c']": {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}},
        "unexpected columns ['zzz']": {"dataframe_split": {"columns": NAMES + ["zzz"], "data": [row + [1.0]]}},
        "columns given more than once: ['a']": {"dataframe_split": {"columns": ["a", "a", "b", "c"], "data": [row + [1.0]]}},
        "dataframe_split: row 0, column 'b': 'x' is not a number": {"dataframe_split": {"columns": ["c", "b", "a"], "data": [[1, "x", 2]]}},
        "records [1] lack columns; record 1 has no ['b', 'c']": {"dataframe_records": [dict(zip(NAMES, row)), {"a": 1.0}]},
        "inputs: expected 3 columns, got 1; missing columns ['b', 'c']": {"inputs": {"a": [1.0]}},
        "items [1] are records but the others are not": {"instances": [row, {"a": 1}]},
        "exactly one of the input fields": {"rows": [row]},
    }
    for phrase, doc in cases.items():
        assert phrase in tensor_refusal(body(doc)), (phrase, tensor_refusal(body(doc)))
    assert "a JSON object gives keys more than once: ['inputs']" in tensor_refusal(
        b'{"inputs": [[0, 0, 0]], "inputs": [[1, 2, 3]]}'
    )
    assert "too large for a 64-bit float" in tensor_refusal(b'{"inputs": [[1' + b"0" * 400 + b", 2, 3]]}")
    assert "valid JSON" in tensor_refusal(b'{"inputs": [[1, 2, 3]]')
    assert "levels deep" in tensor_refusal(b'{"inputs": [' + b"[" * 60 + b"]" * 60 + b"]}")
    assert "missing columns ['b']" in tensor_refusal(b"a,c\n1,2\n", "text/csv")
    assert "column 'b' is not numeric" in tensor_refusal(b"a,b,c\n1,x,2\n", "text/csv")
    assert "Parquet body cannot be read" in tensor_refusal(b"PAR1 not parquet", "application/vnd.apache.parquet")


def test_too_many_rows_are_refused_in_every_tensor_form(monkeypatch):
    monkeypatch.setenv("EBMOPS_MAX_ROWS", "2")
    row = [1.0, 2.0, 3.0]
    for doc in ({"inputs": [row] * 3}, {"dataframe_split": {"columns": NAMES, "data": [row] * 3}},
                {"dataframe_records": [dict(zip(NAMES, row))] * 3}, {"inputs": {c: [1.0] * 3 for c in NAMES}}):
        assert "too many rows: 3 > 2" in tensor_refusal(body(doc)), doc


def test_a_repeated_key_is_found_whichever_parser_reads_the_body():
    # orjson keeps the last of two keys silently: the ':' count sends such a body to the careful parser
    assert "keys more than once: ['a']" in tensor_refusal(b'{"dataframe_records": [{"a": 1, "a": 2, "b": 3, "c": 4}]}')
    assert "keys more than once: ['explain']" in tensor_refusal(
        b'{"inputs": [[1, 2, 3]], "params": {"explain": 50, "explain": 1}}'
    )
    # a ':' inside a string only sends the body the careful way; it is still read
    matrix, _ = matrix_of(body({"dataframe_split": {"columns": NAMES, "data": [[1, 2, 3]], "index": ["t:1"]}}))
    np.testing.assert_array_equal(matrix, [[1.0, 2.0, 3.0]])


def test_validate_matrix_names_shapes_and_values():
    np.testing.assert_array_equal(validate_matrix(X, NAMES), X)
    with pytest.raises(InvalidGuardInput, match=r"each row must hold 3 values \(a..c\); got rows of 2"):
        validate_matrix(X[:, :2], NAMES)
    with pytest.raises(InvalidGuardInput, match="2-D array"):
        validate_matrix(X[0], NAMES)
    with pytest.raises(InvalidGuardInput, match="no rows"):
        validate_matrix(np.zeros((0, 3)), NAMES)
    bad = X.copy()
    bad[1, 2] = np.inf
    with pytest.raises(InvalidGuardInput, match=r"NaN or infinite values in columns \['c'\] \(rows \[1\]\)"):
        validate_matrix(bad, NAMES)


def test_check_params_against_what_the_model_declares():
    assert check_params(None, ()) == {} and check_params({}, ()) == {}
    assert check_params({"explain": 2}, ["explain"]) == {"explain": 2}
    with pytest.raises(RefusedRequest, match="takes no 'params'"):
        check_params({"explain": 2}, ())
    # a text guard (no input names) takes declared params through MLflow's app
    check_request_body(body({"dataframe_split": {"columns": ["text"], "data": [["hi"]]}, "params": {"explain": 2}}),
                       "application/json", None, ["explain"])


def test_the_predictions_body_is_what_mlflows_server_writes():
    from mlflow.pyfunc.scoring_server import predictions_to_json

    frame = pd.DataFrame({"energy": [1.5, -2.25], "p_value": [0.5, 0.01], "is_ood": [False, True],
                          "neighbours": ["[]", '[{"rank": 1}]']})
    expected = io.StringIO()
    predictions_to_json(frame, expected)
    assert json.loads(predictions_body(frame)) == json.loads(expected.getvalue())
