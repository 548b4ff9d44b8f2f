"""The real scoring server (`ebmops serve`) on loopback serving a registered vector guard: the tensor
form {"inputs": [[...], ...]} and every named-column form of older clients get energy, p_value and
is_ood (the same answer, matched by name); `explain` adds the nearest training examples of flagged
rows; every kind of bad request gets a 4xx naming the problem, never a 5xx; the server keeps serving
afterwards. A version registered with the 64-column signature (before the tensor form) still loads
and serves."""

import http.client
import io
import json
import math
import socket
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from ebm_core import EnergyDetector
from flows.data.datasets import pixel_columns, read_vectors
from flows.guard import registry
from flows.guard.guard import Guard
from flows.guard.input_checks import DEFAULT_MAX_BODY_BYTES, MAX_EXPLAIN
from flows.guard.serving import start_server, stop_server, wait_until_ready
from tests.flows.guard_factory import prepare_data, small_config

# A real scoring server process on loopback, for the whole module.
pytestmark = [pytest.mark.server, pytest.mark.slow]

MAX_ROWS = 500
COLS = pixel_columns()
ROW = [0.0] * 64


def register_guard(data, data_check, work, *, bank: bool, legacy: bool = False):
    """Train a small digits guard and register it: with its training rows as a neighbour bank, or (legacy)
    exactly as versions were registered before the tensor form (64 double columns, no params)."""
    from flows.guard.explanations import save_neighbour_bank

    config = small_config(100)
    train = pd.read_parquet(data.path("train"))
    x_train = train[COLS].to_numpy(dtype=np.float64)
    detector = EnergyDetector(config.detector).fit(x_train, seed=0, feature_names=COLS)
    detector.calibrate(read_vectors(data.path("calibration"), COLS), alpha=config.alpha)
    detector_dir = detector.save(work / f"detector-{bank}-{legacy}")
    if bank:
        save_neighbour_bank(detector_dir, x_train, labels=train["label"].tolist())
    with pytest.MonkeyPatch.context() as mp:
        if legacy:
            mp.setattr(registry, "guard_signature", lambda names, accepts_text=False: registry.column_signature(names))
            mp.setattr(registry, "guard_input_example",
                       lambda names, accepts_text=False: pd.DataFrame([np.zeros(len(names))], columns=names))
        return registry.log_and_register(
            experiment_name=config.experiment_name, model_name=config.model_name, params=config.to_params(),
            metrics={}, artifacts={"data_checks": data_check}, detector_dir=detector_dir, feature_names=COLS,
        )


def serve_new_guard(tmp_path_factory, name: str, bank: bool, legacy: bool = False):
    home = tmp_path_factory.mktemp(f"{name}-home")
    work = tmp_path_factory.mktemp(f"{name}-work")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        registry.configure_tracking()
        data, data_check = prepare_data(work, check=False)
        registered = register_guard(data, data_check, work, bank=bank, legacy=legacy)
        proc, url = start_server(registered.model_uri, max_rows=MAX_ROWS, log_path=work / "server.log")
        try:
            wait_until_ready(url, proc, timeout_s=180)
            yield {"url": url, "proc": proc, "data": data, "log": work / "server.log", "uri": registered.model_uri,
                   "home": home}
        finally:
            stop_server(proc)
    assert proc.poll() is not None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A vector guard registered as today (tensor signature, params `explain`, a neighbour bank)."""
    yield from serve_new_guard(tmp_path_factory, "serving", bank=True)


@pytest.fixture(scope="module")
def legacy_server(tmp_path_factory):
    """A version registered as before the tensor form: 64 named double columns, no params, no bank."""
    yield from serve_new_guard(tmp_path_factory, "legacy", bank=False, legacy=True)


def in_home(fixture, monkeypatch):
    monkeypatch.setenv("EBMOPS_HOME", str(fixture["home"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry.configure_tracking()


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


def tensor_body(rows, **params):
    return json.dumps({"inputs": rows, **({"params": params} if params else {})})


def predictions(text):
    return pd.DataFrame(json.loads(text)["predictions"])


def test_good_requests_get_energy_p_value_and_is_ood(server):
    frame = pd.read_parquet(server["data"].path("in_test")).drop(columns="label").head(10)
    noise = np.random.default_rng(0).uniform(0, 16, (10, 64))
    status, text = post(server["url"], tensor_body(frame.to_numpy().tolist() + noise.tolist()))
    assert status == 200, text
    rows = json.loads(text)["predictions"]
    assert len(rows) == 20
    assert set(rows[0]) == {"energy", "p_value", "is_ood"}
    assert all(0 < p["p_value"] <= 1 and math.isfinite(p["energy"]) for p in rows)
    assert np.mean([p["energy"] for p in rows[10:]]) > np.mean([p["energy"] for p in rows[:10]])
    assert sum(p["is_ood"] for p in rows[10:]) >= 8
    status, text = post(server["url"], tensor_body([ROW] * MAX_ROWS))  # MAX_ROWS rows exactly is fine
    assert status == 200 and len(json.loads(text)["predictions"]) == MAX_ROWS


def test_every_form_of_older_clients_gets_the_same_answer_as_the_tensor_form(server, monkeypatch):
    frame = pd.read_parquet(server["data"].path("in_test"))[COLS].head(6)
    frame.iloc[3] = np.random.default_rng(1).uniform(0, 16, 64)  # one flagged-looking row among them
    status, text = post(server["url"], tensor_body(frame.to_numpy().tolist()))
    assert status == 200, text
    expected = predictions(text)
    in_home(server, monkeypatch)
    local = Guard.load(server["uri"]).score(frame)  # the guard loaded in this process
    np.testing.assert_allclose(expected["energy"], local["energy"], rtol=1e-12)
    assert expected["is_ood"].tolist() == local["is_ood"].tolist()
    shuffled = frame[list(np.random.default_rng(2).permutation(COLS))]
    parquet = io.BytesIO()
    shuffled.to_parquet(parquet, index=False)
    requests = {
        "instances rows": (json.dumps({"instances": frame.to_numpy().tolist()}), "application/json"),
        "dataframe_split": (split_body(COLS, frame.to_numpy().tolist()), "application/json"),
        "dataframe_split, shuffled": (split_body(list(shuffled.columns), shuffled.to_numpy().tolist()), "application/json"),
        "dataframe_records, shuffled": (json.dumps({"dataframe_records": shuffled.to_dict(orient="records")}), "application/json"),
        "instances records": (json.dumps({"instances": shuffled.to_dict(orient="records")}), "application/json"),
        "inputs columns": (json.dumps({"inputs": shuffled.to_dict(orient="list")}), "application/json"),
        "CSV, shuffled": (shuffled.to_csv(index=False), "text/csv"),
        "Parquet, shuffled": (parquet.getvalue(), "application/vnd.apache.parquet"),
    }
    for name, (body, content_type) in requests.items():
        status, text = post(server["url"], body, content_type)
        assert status == 200, (name, text[:300])
        pd.testing.assert_frame_equal(predictions(text), expected, obj=name)


def test_explain_adds_the_nearest_training_examples_of_flagged_rows(server, monkeypatch):
    frame = pd.read_parquet(server["data"].path("in_test"))[COLS].head(4)
    noise = np.random.default_rng(3).uniform(0, 16, (4, 64))
    x = np.vstack([frame.to_numpy(dtype=np.float64), noise])
    status, text = post(server["url"], tensor_body(x.tolist(), explain=3))
    assert status == 200, text
    served = predictions(text)
    flagged = served["is_ood"].to_numpy()
    assert flagged[4:].sum() >= 3
    assert (served.loc[~flagged, "neighbours"] == "[]").all()
    in_home(server, monkeypatch)
    guard = Guard.load(server["uri"])  # held: its verified copy of the artifacts lives as long as it does
    bank = guard.pyfunc.unwrap_python_model().neighbour_bank()
    expected = bank.nearest(x[flagged], 3)
    train = pd.read_parquet(server["data"].path("train"))
    for shown, nearest in zip(served.loc[flagged, "neighbours"], expected):
        found = json.loads(shown)
        assert [n["rank"] for n in found] == [1, 2, 3]
        assert [n["label"] for n in found] == [e["label"] for e in nearest]
        assert set(n["label"] for n in found) <= set(train["label"].tolist())
        np.testing.assert_allclose([n["distance"] for n in found], [e["distance"] for e in nearest], rtol=1e-12)
        assert all(a["distance"] <= b["distance"] for a, b in zip(found, found[1:]))
    pd.testing.assert_frame_equal(served.drop(columns="neighbours"), predictions(post(server["url"], tensor_body(x.tolist()))[1]))


def test_a_version_registered_with_named_columns_still_loads_and_serves(legacy_server, monkeypatch):
    frame = pd.read_parquet(legacy_server["data"].path("in_test"))[COLS].head(5)
    status, text = post(legacy_server["url"], split_body(COLS, frame.to_numpy().tolist()))
    assert status == 200, text
    in_home(legacy_server, monkeypatch)
    guard = Guard.load(legacy_server["uri"])
    assert not guard.takes_tensor and guard.param_names == []
    local = guard.score(frame)
    np.testing.assert_allclose(predictions(text)["energy"], local["energy"], rtol=1e-12)
    np.testing.assert_allclose(local["energy"], guard.detector.score(frame.to_numpy(dtype=np.float64)), rtol=1e-12)
    status, _ = post(legacy_server["url"], json.dumps({"dataframe_records": frame.to_dict(orient="records")}))
    assert status == 200
    # what it never took, it still refuses by name
    status, text = post(legacy_server["url"], tensor_body([ROW]))
    assert status == 400 and "missing inputs" in text, text
    status, text = post(legacy_server["url"], json.dumps({"dataframe_split": {"columns": COLS, "data": [ROW]},
                                                          "params": {"explain": 2}}))
    assert status == 400 and "takes no 'params'" in text, text
    with pytest.raises(registry.RegistryError, match="takes no 'explain'"):
        guard.score(frame, explain=2)


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
    "instances of strings": (json.dumps({"instances": ["hello"]}), None, "hello"),
    # the tensor form
    "tensor row too short": (tensor_body([ROW, ROW[:10]]), None, "row 1 has 10 values; the model takes 64"),
    "tensor string value": (tensor_body([["dark"] + ROW[1:]]), None, "row 0, column 'pixel_0': 'dark' is not a number"),
    "tensor NaN": (tensor_body([ROW]).replace("0.0", "NaN", 1), None, "NaN or infinite values in columns ['pixel_0']"),
    "tensor flat row": (tensor_body(ROW), None, "not lists of values"),
    "tensor no rows": (tensor_body([]), None, "no rows"),
    "tensor too many rows": (tensor_body([ROW] * (MAX_ROWS + 1)), None, "too many rows"),
    "split without columns": (json.dumps({"dataframe_split": {"data": [ROW]}}), None, "without 'columns'"),
    "explain past the cap": (tensor_body([ROW], explain=MAX_EXPLAIN + 1), None, f"outside 0..{MAX_EXPLAIN}"),
    "explain not a whole number": (tensor_body([ROW], explain=1.5), None, "'explain' must be a whole number"),
    "explain as a string": (tensor_body([ROW], explain="3"), None, "'explain' must be a whole number"),
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
    "unknown params": (json.dumps({"dataframe_split": {"columns": COLS, "data": [ROW]}, "params": {"t": 1}}), None,
                       "unknown 'params' ['t']"),
    "params not an object": (json.dumps({"inputs": [ROW], "params": [1]}), None, "'params' must be a JSON object"),
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
    status, text = post(server["url"], tensor_body([ROW, [16.0] * 64]))
    assert status == 200, text
    assert len(json.loads(text)["predictions"]) == 2
    assert server["proc"].poll() is None
    with urllib.request.urlopen(f"{server['url']}/ping", timeout=10) as response:
        assert response.status == 200
