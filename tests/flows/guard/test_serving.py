"""The real MLflow scoring server on loopback serving models:/ebm-guard@champion: good requests get
energy, p_value and is_ood; every kind of bad request gets a 4xx naming the problem, never a 5xx; the
server keeps serving afterwards."""

import http.client
import json
import math
import socket
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from flows.guard import registry
from flows.data.datasets import pixel_columns
from flows.guard.input_checks import DEFAULT_MAX_BODY_BYTES
from flows.guard.serving import start_server, stop_server, wait_until_ready
from tests.flows.guard_factory import prepare_data, register_version

# A real `mlflow models serve` process on loopback, for the whole module.
pytestmark = [pytest.mark.server, pytest.mark.slow]

MAX_ROWS = 500
COLS = pixel_columns()
ROW = [0.0] * 64


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serving-home")
    work = tmp_path_factory.mktemp("serving-work")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        registry.configure_tracking()
        data, data_check = prepare_data(work, check=False)
        register_version(data, data_check, work, n_steps=100)
        proc, url = start_server(max_rows=MAX_ROWS, log_path=work / "server.log")
        try:
            wait_until_ready(url, proc, timeout_s=180)
            yield {"url": url, "proc": proc, "data": data, "log": work / "server.log"}
        finally:
            stop_server(proc)
    assert proc.poll() is not None


def post(url, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else body.encode()
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(f"{url}/invocations", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def split_body(columns, data):
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}})


def with_first(value):
    return split_body(COLS, [[value] + ROW[1:]])


def test_good_requests_get_energy_p_value_and_is_ood(server):
    frame = pd.read_parquet(server["data"].path("in_test")).drop(columns="label").head(10)
    noise = np.random.default_rng(0).uniform(0, 16, (10, 64))
    status, text = post(server["url"], split_body(COLS, frame.to_numpy().tolist() + noise.tolist()))
    assert status == 200, text
    predictions = json.loads(text)["predictions"]
    assert len(predictions) == 20
    assert set(predictions[0]) == {"energy", "p_value", "is_ood"}
    assert all(0 < p["p_value"] <= 1 and math.isfinite(p["energy"]) for p in predictions)
    assert np.mean([p["energy"] for p in predictions[10:]]) > np.mean([p["energy"] for p in predictions[:10]])
    assert sum(p["is_ood"] for p in predictions[10:]) >= 8
    # records orientation and CSV are accepted too, and MAX_ROWS rows exactly is fine
    status, _ = post(server["url"], json.dumps({"dataframe_records": [dict(zip(COLS, ROW))]}))
    assert status == 200
    status, _ = post(server["url"], ",".join(COLS) + "\n" + ",".join("1" for _ in COLS), "text/csv")
    assert status == 200
    status, text = post(server["url"], split_body(COLS, [ROW] * MAX_ROWS))
    assert status == 200 and len(json.loads(text)["predictions"]) == MAX_ROWS


BAD_REQUESTS = {
    # name: (body, content type, a phrase the message must contain)
    "missing column": (split_body(COLS[:-1], [ROW[:-1]]), None, "pixel_63"),
    "renamed columns": (split_body([f"p{i}" for i in range(64)], [ROW]), None, "missing"),
    "no columns at all": (json.dumps({"dataframe_records": [{}]}), None, "missing"),
    "records with one column": (json.dumps({"dataframe_records": [{"pixel_0": 1}]}), None, "pixel_1"),
    "NaN value": (with_first(float("nan")), None, "NaN or infinite values in columns ['pixel_0']"),
    "null value": (with_first(None), None, "NaN or infinite values in columns ['pixel_0']"),
    "Infinity": (split_body(COLS, [ROW]).replace("0.0", "Infinity", 1), None, "NaN or infinite"),
    "-Infinity": (split_body(COLS, [ROW]).replace("0.0", "-Infinity", 1), None, "NaN or infinite"),
    "number overflowing float": (split_body(COLS, [ROW]).replace("0.0", "1e400", 1), None, "NaN or infinite"),
    "huge finite number": (with_first(1e300), None, "values beyond"),
    "string value": (with_first("dark"), None, "pixel_0"),
    "nested object": (with_first({"a": 1}), None, "pixel_0"),
    "nested list": (with_first([1, 2]), None, "pixel_0"),
    "row too short": (split_body(COLS, [ROW[:10]]), None, "10 columns"),
    "row too long": (split_body(COLS, [ROW + [1.0]]), None, "65 columns"),
    "no rows": (split_body(COLS, []), None, "no rows"),
    "too many rows": (split_body(COLS, [ROW] * (MAX_ROWS + 1)), None, "too many rows"),
    "empty body": ("", None, "valid JSON"),
    "invalid JSON": ("{not json", None, "valid JSON"),
    "truncated JSON": (split_body(COLS, [ROW])[:-3], None, "valid JSON"),
    "JSON null": ("null", None, "JSON dictionary"),
    "JSON list": ("[1, 2, 3]", None, "JSON dictionary"),
    "JSON number": ("5", None, "JSON dictionary"),
    "unknown top-level key": (json.dumps({"rows": [ROW]}), None, "exactly one of the input fields"),
    "two input keys": (
        json.dumps({"dataframe_split": {"columns": COLS, "data": [ROW]}, "inputs": [ROW]}), None, "exactly one",
    ),
    "dataframe_split not an object": (json.dumps({"dataframe_split": [1, 2]}), None, "must be a dictionary"),
    "data not a list": (json.dumps({"dataframe_split": {"columns": COLS, "data": 5}}), None, "split"),
    "unnamed tensor input": (json.dumps({"inputs": [ROW]}), None, "missing inputs"),
    "instances of strings": (json.dumps({"instances": ["hello"]}), None, "hello"),
    "binary body": (b"\xff\xfe\x00", None, "valid JSON"),
    "CSV with wrong header": ("a,b\n1,2", "text/csv", "missing"),
    "plain text": ("hello", "text/plain", "content types"),
    "XML": ("<rows/>", "application/xml", "content types"),
    "no content type": (split_body(COLS, [ROW]), "", "content types"),
    # refused before MLflow parses the request (flows/guard/serving.py's RequestGuard)
    "extra column": (split_body(COLS + ["zzz"], [ROW + [1.0]]), None, "unexpected columns ['zzz']"),
    "extra record key": (json.dumps({"dataframe_records": [dict(zip(COLS + ["zzz"], ROW + [1.0]))]}), None, "'zzz'"),
    "extra CSV column": (",".join(COLS + ["zzz"]) + "\n" + ",".join("1" for _ in range(65)), "text/csv", "'zzz'"),
    "index longer than data": (
        json.dumps({"dataframe_split": {"columns": COLS, "data": [ROW], "index": [0, 1, 2]}}), None,
        "'index' has 3 entries but 'data' has 1 rows",
    ),
    "deeply nested JSON": ("[" * 100_000 + "]" * 100_000, None, "levels deep"),
    "deeply nested object": ('{"inputs": ' + '{"a": ' * 5000 + "1" + "}" * 5001, None, "levels deep"),
    "huge column name": (split_body(COLS[:-1] + ["x" * 1_000_000], [ROW]), None, "'xxxxxxxx"),
    "integer of 5000 digits": (split_body(COLS, [ROW]).replace("0.0", "1" * 5000, 1), None, "valid JSON"),
    "key given twice": ('{"dataframe_records": [{"pixel_0": 1, "pixel_0": 2}]}', None, "more than once"),
    "params": (json.dumps({"dataframe_split": {"columns": COLS, "data": [ROW]}, "params": {"t": 1}}), None, "params"),
    "charset latin-1": (split_body(COLS, [ROW]), "application/json; charset=latin-1", "content types"),
}
# An error answer is bounded and carries no dump of the request frame.
MAX_ERROR_BYTES = 4096


def test_at_least_20_kinds_of_bad_requests():
    assert len(BAD_REQUESTS) >= 20


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_gets_4xx_naming_the_problem(server, name):
    body, content_type, phrase = BAD_REQUESTS[name]
    status, text = post(server["url"], body, "application/json" if content_type is None else content_type)
    assert 400 <= status < 500, (status, text[:500])
    assert phrase in text, text[-800:]
    assert "unexpected error" not in text
    assert len(text) <= MAX_ERROR_BYTES, (len(text), text[:300])
    assert "Failed to predict data" not in text and "[1 rows x" not in text and "stack_trace" not in text, text[:300]
    assert set(json.loads(text)) >= {"error_code", "message"}


def raw_post(url, body: bytes, headers: dict) -> tuple[int, bytes]:
    """POST with exactly these headers (urllib adds a Content-Type of its own when none is given)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", "/invocations", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_no_content_type_header_is_415_not_500(server):
    status, text = raw_post(server["url"], split_body(COLS, [ROW]).encode(), {})
    assert status == 415, text
    assert b"no Content-Type header" in text


def test_a_body_over_the_cap_is_413(server):
    cap = DEFAULT_MAX_BODY_BYTES
    body = split_body(COLS, [ROW]).encode()
    status, text = raw_post(server["url"], body + b" " * (cap + 1 - len(body)), {"Content-Type": "application/json"})
    assert status == 413, text[:300]
    assert b"EBMOPS_MAX_BODY_BYTES" in text
    # far over it: refused from the Content-Length header alone, before any of the body arrives
    host, port = server["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        head = "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        s.sendall(f"{head}Content-Length: {50 * cap}\r\n\r\n".encode())
        assert b" 413 " in s.recv(65536).split(b"\r\n", 1)[0]


def test_server_keeps_serving_after_bad_requests(server):
    for body, content_type, _ in BAD_REQUESTS.values():
        post(server["url"], body, "application/json" if content_type is None else content_type)
    status, text = post(server["url"], split_body(COLS, [ROW, [16.0] * 64]))
    assert status == 200, text
    assert len(json.loads(text)["predictions"]) == 2
    assert server["proc"].poll() is None
    with urllib.request.urlopen(f"{server['url']}/ping", timeout=10) as response:
        assert response.status == 200
