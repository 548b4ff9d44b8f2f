"""The real MLflow scoring server on loopback serving models:/ebm-guard@champion: good requests get
energy, p_value and is_ood; every kind of bad request gets a 4xx naming the problem, never a 5xx; the
server keeps serving afterwards."""

import json
import math
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from flows.guard import registry
from flows.data.datasets import pixel_columns
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
}


def test_at_least_20_kinds_of_bad_requests():
    assert len(BAD_REQUESTS) >= 20


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_gets_4xx_naming_the_problem(server, name):
    body, content_type, phrase = BAD_REQUESTS[name]
    status, text = post(server["url"], body, "application/json" if content_type is None else content_type)
    assert 400 <= status < 500, (status, text[:500])
    assert phrase in text, text[-800:]
    assert "unexpected error" not in text


def test_server_keeps_serving_after_bad_requests(server):
    for body, content_type, _ in BAD_REQUESTS.values():
        post(server["url"], body, "application/json" if content_type is None else content_type)
    status, text = post(server["url"], split_body(COLS, [ROW, [16.0] * 64]))
    assert status == 200, text
    assert len(json.loads(text)["predictions"]) == 2
    assert server["proc"].poll() is None
    with urllib.request.urlopen(f"{server['url']}/ping", timeout=10) as response:
        assert response.status == 200
