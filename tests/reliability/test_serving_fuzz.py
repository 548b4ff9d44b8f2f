"""Property-based fuzz of the real scoring server (`flows.guard.serving.start_server`, the process
`ebmops serve` runs) on loopback, serving the shared small vector guard.

Over 1000 generated requests (hypothesis, derandomized so every run sends the same ones): valid
requests in the tensor form of a vector guard ({"inputs": rows} / {"instances": rows}, columns in the
model's order) and in every named-column form older clients send (dataframe_split, dataframe_records,
instances and inputs records/columns, CSV, Parquet; columns in any order), params `explain` in and
out of range,
cells replaced by wrong types, NaN/Infinity tokens and strings, huge numbers, unicode, nested objects;
columns renamed, added, doubled, with huge names; index/data mismatches; random JSON; deep nesting;
random bytes; truncated bodies; missing and wrong content types; oversized bodies, sent whole or
chunked. For every one: no 5xx, an answer within the per-request timeout, a 4xx body that is bounded
JSON naming the reason (no request dump, no "unexpected error"), and the known answer where there is
one (a valid request: 200 with one prediction per row; an oversized body: 413; no Content-Type: 415;
an extra column: 400 naming it; ...). Afterwards the server still scores a valid request exactly as
the guard loaded in-process does, and the registry is unchanged with its invariants holding.

`pytest -s` shows the request count and the status histogram.
"""

from __future__ import annotations

import collections
import http.client
import io
import json
import math
import socket
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from flows.guard.input_checks import MAX_MESSAGE_CHARS
from flows.guard.serving import start_server, stop_server, wait_until_ready
from tests.reliability.invariants import assert_registry_invariants, registry_snapshot

pytestmark = [pytest.mark.server, pytest.mark.slow]

N_REQUESTS = 1100  # hypothesis examples, one request each
MIN_REQUESTS = 1000
WALL_BUDGET_S = 540.0  # past it, the remaining examples send nothing (and the count check fails)
REQUEST_TIMEOUT_S = 30.0  # "no hang": every answer comes within this
MAX_ROWS = 40
MAX_BODY = 64 * 1024  # EBMOPS_MAX_BODY_BYTES of the fuzzed server: oversized bodies stay cheap
BODY_TIMEOUT_S = 2
MAX_ERROR_BYTES = 16 * 1024  # a 4xx body is bounded (2000 characters, JSON-escaped)

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"


@pytest.fixture(scope="module")
def fuzz_server(small_vector_guard, tmp_path_factory):
    guard = small_vector_guard
    log = tmp_path_factory.mktemp("fuzz-server") / "server.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(guard.home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.setenv("EBMOPS_MAX_BODY_BYTES", str(MAX_BODY))
        mp.setenv("EBMOPS_BODY_TIMEOUT_S", str(BODY_TIMEOUT_S))
        from flows.guard import registry

        registry.configure_tracking()
        proc, url = start_server(guard.uri, max_rows=MAX_ROWS, log_path=log)
        try:
            wait_until_ready(url, proc, timeout_s=180)
            yield {"url": url, "proc": proc, "guard": guard, "log": log}
        finally:
            stop_server(proc)


# --- sending -------------------------------------------------------------------------------------


def send(url: str, body: bytes, content_type: str | None, chunked: bool = False) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT_S)
    try:
        headers = {} if content_type is None else {"Content-Type": content_type}
        if chunked:
            pieces = [body[i: i + 8192] for i in range(0, len(body), 8192)] or [b""]
            connection.request("POST", "/invocations", body=iter(pieces), headers=headers, encode_chunked=True)
        else:
            connection.request("POST", "/invocations", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# --- what is sent --------------------------------------------------------------------------------

COLUMNS = [f"pixel_{i}" for i in range(64)]

pixel = st.floats(0, 16, allow_nan=False, width=32)
rows = st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(pixel, min_size=64, max_size=64), min_size=n, max_size=n))
odd_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
weird_cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**40), 10**40),
    st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "1e400", "", " ", "0x10", "1,5", "١٢", "1.5", "true"]),
    odd_text,
    st.booleans(),
    st.none(),
    st.dictionaries(odd_text, st.integers(), max_size=2),
    st.lists(st.integers(), max_size=3),
)
RAW_TOKENS = ["1e400", "-1e400", "1e-400", "1" + "0" * 5000, "9" * 400, "-0", "01", "NaN", "-Infinity", "1.", ".5", "+1"]
column_name = st.one_of(
    odd_text,
    st.text(min_size=1, max_size=3).map(lambda s: s * 3_000),  # names of 3000-12000 characters
    st.sampled_from(["", " ", "pixel_64", "PIXEL_0", "pixel_0 "]),
)
any_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers(-(10**20), 10**20) | odd_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(odd_text, children, max_size=4),
    max_leaves=20,
)


def split_doc(data, columns=None, **extra):
    return {"dataframe_split": {"columns": COLUMNS if columns is None else columns, "data": data, **extra}}


def in_form(form: str, data: list[list[float]], columns: list[str]) -> dict:
    records = [dict(zip(columns, row)) for row in data]
    if form in ("tensor inputs", "tensor instances"):  # rows only: the columns are the model's, in order
        return {form.split()[1]: data}
    if form == "dataframe_split":
        return split_doc(data, columns)
    if form == "inputs":
        return {"inputs": {c: [row[j] for row in data] for j, c in enumerate(columns)}}
    return {form: records}


def dumps(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def case(kind, body, content_type=JSON, expect=None, n_rows=None, phrase=None, chunked=False, explain=0):
    """One request: `expect` the status (None: any non-5xx), n_rows the predictions of a 200, phrase a
    text the 4xx message must hold, `explain` the neighbours asked for (a 200 then carries them; a 4xx
    says the version has no stored training examples). A body over the cap gets 413 whatever else is
    wrong with it, once its Content-Type passed."""
    if len(body) > MAX_BODY and expect != 415:
        expect, n_rows, phrase = 413, None, "EBMOPS_MAX_BODY_BYTES"
    return {"kind": kind, "body": body, "content_type": content_type, "expect": expect, "n_rows": n_rows,
            "phrase": phrase, "chunked": chunked, "explain": explain}


TENSOR_FORMS = ["tensor inputs", "tensor instances"]
NAMED_FORMS = ["dataframe_split", "dataframe_records", "instances", "inputs"]


@st.composite
def valid_requests(draw):
    data = draw(rows)
    form = draw(st.sampled_from(TENSOR_FORMS + NAMED_FORMS))
    columns = COLUMNS if form in TENSOR_FORMS else draw(st.permutations(COLUMNS))
    order = [COLUMNS.index(c) for c in columns]
    doc = in_form(form, [[row[j] for j in order] for row in data], list(columns))
    if draw(st.booleans()):
        doc["params"] = {}
    content_type = draw(st.sampled_from([JSON, "application/json; charset=utf-8", "APPLICATION/JSON"]))
    return case(f"valid {form}", dumps(doc), content_type, 200, len(data), chunked=draw(st.booleans()))


@st.composite
def bad_cells(draw):
    data = [list(row) for row in draw(rows)]
    for _ in range(draw(st.integers(1, 3))):
        data[draw(st.integers(0, len(data) - 1))][draw(st.integers(0, 63))] = draw(weird_cell)
    form = draw(st.sampled_from(TENSOR_FORMS + NAMED_FORMS))
    return case(f"bad cell {form}", dumps(in_form(form, data, COLUMNS)))


@st.composite
def raw_tokens(draw):
    data = draw(rows)
    token = draw(st.sampled_from(RAW_TOKENS))
    body = dumps(split_doc(data)).replace(json.dumps(data[0][0]).encode(), token.encode(), 1)
    return case("raw number token", body)


@st.composite
def column_changes(draw):
    data = [list(row) for row in draw(rows)]
    columns = list(COLUMNS)
    change = draw(st.sampled_from(["extra", "rename", "duplicate", "drop", "not strings"]))
    form = draw(st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs"]))
    if change == "extra":
        name = draw(column_name.filter(lambda n: n not in COLUMNS))
        columns.append(name)
        for row in data:
            row.append(draw(pixel))
        phrase = "unexpected columns"
        return case(f"extra column {form}", dumps(in_form(form, data, columns)), expect=400, phrase=phrase)
    if change == "rename":
        j = draw(st.integers(0, 63))
        columns[j] = draw(column_name.filter(lambda n: n not in COLUMNS))
        return case(f"renamed column {form}", dumps(in_form(form, data, columns)), expect=400)
    if change == "duplicate":  # only dataframe_split can say a name twice (JSON objects refuse it too)
        j = draw(st.integers(0, 63))
        body = dumps(split_doc([row + [row[j]] for row in data], columns + [columns[j]]))
        return case("duplicate column", body, expect=400, phrase="more than once")
    if change == "drop":
        j = draw(st.integers(0, 63))
        del columns[j]
        data = [row[:j] + row[j + 1:] for row in data]
        return case(f"dropped column {form}", dumps(in_form(form, data, columns)), expect=400, phrase=COLUMNS[j])
    not_a_name = draw(st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2)))
    body = dumps(split_doc(data, [not_a_name] + columns[1:]))
    return case("non-string column name", body, expect=400)


@st.composite
def split_shapes(draw):
    data = draw(rows)
    change = draw(st.sampled_from([
        "index", "index type", "ragged", "no data", "extra key", "not rows", "too many rows", "two forms", "params",
        "top-level key", "tensor ragged", "tensor too many rows",
    ]))
    not_a_list = any_json.filter(lambda v: not isinstance(v, list))
    if change == "index":
        n = draw(st.integers(0, 8).filter(lambda k: k != len(data)))
        return case("index length", dumps(split_doc(data, index=list(range(n)))), expect=400, phrase="index")
    if change == "index type":
        return case("index type", dumps(split_doc(data, index=draw(not_a_list))), expect=400)
    if change == "ragged":
        i = draw(st.integers(0, len(data) - 1))
        cut = [list(row) for row in data]
        cut[i] = cut[i][: draw(st.integers(0, 63))] if draw(st.booleans()) else cut[i] + [1.0]
        return case("ragged rows", dumps(split_doc(cut)), expect=400, phrase="columns")
    if change == "no data":
        return case("split without data", dumps({"dataframe_split": {"columns": COLUMNS}}), expect=400)
    if change == "extra key":
        key = draw(odd_text.filter(lambda k: k not in ("index", "columns", "data")))
        return case("split extra key", dumps(split_doc(data, **{key: 1})), expect=400)
    if change == "not rows":
        data = draw(st.lists(not_a_list, min_size=1, max_size=3))
        return case("split data not rows", dumps(split_doc(data)), expect=400)
    if change == "too many rows":
        many = [data[0]] * (MAX_ROWS + draw(st.integers(1, 20)))
        return case("too many rows", dumps(split_doc(many)), expect=400, phrase="too many rows")
    if change == "two forms":
        doc = {**split_doc(data), "inputs": {c: [1.0] for c in COLUMNS}}
        return case("two input forms", dumps(doc), expect=400, phrase="exactly one")
    if change == "params":
        doc = {**split_doc(data), "params": draw(any_json.filter(lambda v: v not in (None, {})))}
        return case("params", dumps(doc), expect=400, phrase="params")
    if change == "tensor ragged":
        i = draw(st.integers(0, len(data) - 1))
        cut = [list(row) for row in data]
        cut[i] = cut[i][: draw(st.integers(0, 63))] if draw(st.booleans()) else cut[i] + [1.0]
        return case("tensor ragged rows", dumps({"inputs": cut}), expect=400, phrase=f"has {len(cut[i])} values")
    if change == "tensor too many rows":
        many = [data[0]] * (MAX_ROWS + draw(st.integers(1, 20)))
        return case("tensor too many rows", dumps({"instances": many}), expect=400, phrase="too many rows")
    key = draw(odd_text.filter(lambda k: k not in ("params", "dataframe_split", "inputs", "instances", "dataframe_records")))
    doc = {**split_doc(data), key: 1}
    return case("extra top-level key", dumps(doc), expect=400)


@st.composite
def explain_requests(draw):
    """params `explain`: 0 is off (200), 1..20 neighbours (200 with them, or 400: no stored training
    examples), anything else a 400 naming the range or the type."""
    data = draw(rows)
    k = draw(st.one_of(st.integers(-3, 30), st.sampled_from([1.5, "3", True, None, [2]])))
    doc = {**in_form(draw(st.sampled_from(TENSOR_FORMS + NAMED_FORMS)), data, COLUMNS), "params": {"explain": k}}
    if k is None or (type(k) is int and k == 0):
        return case("explain off", dumps(doc), expect=200, n_rows=len(data))
    if type(k) is int and 1 <= k <= 20:
        return case("explain", dumps(doc), n_rows=len(data), explain=k)
    phrase = "outside 0..20" if type(k) is int else "must be a whole number"
    return case("explain invalid", dumps(doc), expect=400, phrase=phrase)


@st.composite
def random_json(draw):
    value = draw(any_json)
    key = draw(st.sampled_from(
        [None, "dataframe_split", "dataframe_records", "instances", "inputs", "messages", "prompt", "input"]
    ))
    return case("random JSON", dumps(value if key is None else {key: value}))


@st.composite
def deep_nesting(draw):
    depth = draw(st.integers(21, 60_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")]))
    inner = opener * depth + b"1" + closer * depth
    if len(inner) > MAX_BODY:
        depth = MAX_BODY // (len(opener) + len(closer) + 1)
        inner = opener * depth + b"1" + closer * depth
    wrap = draw(st.sampled_from(
        [b"%s", b'{"dataframe_split": {"columns": ["pixel_0"], "data": [[%s]]}}', b'{"inputs": %s}']
    ))
    return case("deep nesting", wrap.replace(b"%s", inner), expect=400, phrase="levels")


@st.composite
def broken_bodies(draw):
    change = draw(st.sampled_from(["bytes", "truncated", "utf-16", "latin-1", "bom", "empty"]))
    if change == "bytes":
        return case("random bytes", draw(st.binary(max_size=200)), expect=None)
    valid = dumps(split_doc(draw(rows)))
    if change == "truncated":
        return case("truncated JSON", valid[: draw(st.integers(0, len(valid) - 1))], expect=400, phrase="valid JSON")
    if change == "utf-16":
        return case("UTF-16 JSON", valid.decode().encode("utf-16"))
    if change == "latin-1":
        text = json.dumps(split_doc(draw(rows), ["é"] + COLUMNS[1:]), ensure_ascii=False)
        return case("latin-1 JSON", text.encode("latin-1", "replace"), expect=400)
    if change == "bom":
        return case("UTF-8 BOM", b"\xef\xbb\xbf" + valid)
    return case("empty body", b"", expect=400, phrase="valid JSON")


@st.composite
def content_types(draw):
    valid = dumps(split_doc(draw(rows)))
    change = draw(st.sampled_from(["none", "blank", "other", "charset", "parameter", "mismatch"]))
    if change == "none":
        return case("no Content-Type", valid, None, expect=415, phrase="content types")
    if change == "blank":
        return case("blank Content-Type", valid, " ", expect=415, phrase="content types")
    if change == "other":
        other = draw(st.sampled_from([
            "text/plain", "application/xml", "multipart/form-data", "application/x-www-form-urlencoded", "*/*",
            "json", "application/json5", "x" * 4000,
        ]))
        return case("other Content-Type", valid, other, expect=415, phrase="content types")
    if change == "charset":
        charset = draw(st.sampled_from(
            ["application/json; charset=latin-1", 'application/json; charset="utf-8"', "application/json;charset=utf-16"]
        ))
        return case("charset", valid, charset, expect=415)
    if change == "parameter":
        parameter = draw(st.sampled_from(["application/json; foo=bar", "application/json;", "text/csv; header=present"]))
        return case("Content-Type parameter", valid, parameter, expect=415)
    return case("JSON sent as CSV", valid, CSV, expect=None)


@st.composite
def csv_bodies(draw):
    data = draw(rows)
    change = draw(st.sampled_from(["valid", "extra", "duplicate", "bad cell", "garbage"]))
    columns = list(COLUMNS)
    if change == "valid":
        frame = pd.DataFrame(data, columns=columns)
        return case("valid CSV", frame.to_csv(index=False).encode(), CSV, expect=200, n_rows=len(data))
    if change == "extra":
        frame = pd.DataFrame([row + [1.0] for row in data], columns=columns + ["zzz_extra"])
        return case("CSV extra column", frame.to_csv(index=False).encode(), CSV, expect=400, phrase="zzz_extra")
    if change == "duplicate":
        header = ",".join(columns + ["pixel_3"])
        lines = [",".join(str(v) for v in row + [row[3]]) for row in data]
        return case("CSV duplicate column", "\n".join([header, *lines]).encode(), CSV, expect=400, phrase="more than once")
    if change == "bad cell":
        frame = pd.DataFrame(data, columns=columns).astype(object)
        frame.iloc[0, draw(st.integers(0, 63))] = draw(odd_text)
        return case("CSV bad cell", frame.to_csv(index=False).encode(), CSV)
    return case("CSV garbage", draw(st.binary(max_size=300)), CSV)


@st.composite
def parquet_bodies(draw):
    data = draw(rows)
    change = draw(st.sampled_from(["valid", "extra", "garbage"]))
    if change == "garbage":
        return case("Parquet garbage", b"PAR1" + draw(st.binary(max_size=200)), PARQUET)
    buffer = io.BytesIO()
    frame = pd.DataFrame(data, columns=COLUMNS).astype("float64")
    if change == "extra":
        frame["zzz_extra"] = 1.0
    frame.to_parquet(buffer, index=False)
    if change == "valid":
        return case("valid Parquet", buffer.getvalue(), PARQUET, expect=200, n_rows=len(data))
    return case("Parquet extra column", buffer.getvalue(), PARQUET, expect=400, phrase="zzz_extra")


@st.composite
def oversized(draw):
    size = draw(st.integers(MAX_BODY + 1, int(2.5 * MAX_BODY)))
    valid = dumps(split_doc(draw(rows)))
    body = valid + b" " * max(0, size - len(valid))
    return case("oversized", body, draw(st.sampled_from([JSON, CSV, None])) or JSON, expect=413,
                phrase="EBMOPS_MAX_BODY_BYTES", chunked=draw(st.booleans()))


requests_strategy = st.one_of(
    valid_requests(), bad_cells(), raw_tokens(), column_changes(), split_shapes(), explain_requests(), random_json(),
    deep_nesting(), broken_bodies(), content_types(), csv_bodies(), parquet_bodies(), oversized(),
)


# --- checks --------------------------------------------------------------------------------------


def check_answer(request: dict, status: int, body: bytes) -> None:
    where = f"{request['kind']}: {status} {body[:300]!r}"
    assert status < 500, where
    assert status == 200 or 400 <= status < 500, where
    if request["expect"] is not None:
        assert status == request["expect"], where
    if status == 200:
        predictions = json.loads(body)["predictions"]
        if request["n_rows"] is not None:
            assert len(predictions) == request["n_rows"], where
        columns = {"energy", "p_value", "is_ood"} | ({"neighbours"} if request["explain"] else set())
        for p in predictions:
            assert set(p) == columns and math.isfinite(p["energy"]), where
            if request["explain"]:
                shown = json.loads(p["neighbours"])
                assert (len(shown) == request["explain"]) if p["is_ood"] else shown == [], where
        return
    assert len(body) <= MAX_ERROR_BYTES, f"{request['kind']}: a {len(body)}-byte error answer"
    doc = json.loads(body)
    message = doc["message"]
    assert isinstance(message, str) and message.strip(), where
    assert len(message) <= MAX_MESSAGE_CHARS + 40, f"{request['kind']}: a {len(message)}-character message"
    assert "Failed to predict data" not in message and "Failed to enforce schema of data" not in message, where
    assert "unexpected error" not in message, where
    assert "stack_trace" not in doc, where
    if request["phrase"] is not None:
        assert request["phrase"] in message, where
    if request["explain"]:  # the only refusal of a valid explain: a version stored without its training examples
        assert "no stored training examples" in message, where


# --- the tests -----------------------------------------------------------------------------------


def test_fuzzed_requests_get_200_or_a_named_4xx_never_5xx(fuzz_server):
    url = fuzz_server["url"]
    guard = fuzz_server["guard"]
    before = registry_snapshot(guard.model_name)
    histogram: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    started = time.monotonic()

    @settings(
        max_examples=N_REQUESTS, deadline=None, derandomize=True, database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(request=requests_strategy)
    def one_request(request):
        if time.monotonic() - started > WALL_BUDGET_S:
            return
        try:
            status, body = send(url, request["body"], request["content_type"], request["chunked"])
        except (TimeoutError, socket.timeout) as error:
            raise AssertionError(f"{request['kind']}: no answer within {REQUEST_TIMEOUT_S} s") from error
        histogram[status] += 1
        kinds[request["kind"].split(" ")[0]] += 1
        check_answer(request, status, body)

    try:
        one_request()
    finally:
        wall = time.monotonic() - started
        n = sum(histogram.values())
        print(
            f"\nserving fuzz: {n} requests in {wall:.1f} s; status histogram {dict(sorted(histogram.items()))}; "
            f"5xx: {sum(c for s, c in histogram.items() if s >= 500)}; families {dict(sorted(kinds.items()))}"
        )
    assert n >= MIN_REQUESTS, f"only {n} requests within the {WALL_BUDGET_S:g} s budget"
    assert 200 in histogram and 413 in histogram and 415 in histogram and 400 in histogram, histogram
    assert kinds["explain"] > 0 and kinds["tensor"] > 0 and kinds["valid"] > 0, kinds

    # Still serving, and correctly: the same energies as the guard loaded in this process.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(guard.home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        from flows.guard.guard import Guard

        frame = pd.read_parquet(guard.data.path("in_test"))[list(guard.feature_names)].head(8)
        local = Guard.load(guard.uri).score(frame)
        for doc in (split_doc(frame.to_numpy().tolist(), list(frame.columns)), {"inputs": frame.to_numpy().tolist()}):
            status, body = send(url, dumps(doc), JSON)
            assert status == 200, body[:500]
            served = pd.DataFrame(json.loads(body)["predictions"])
            np.testing.assert_allclose(served["energy"], local["energy"], rtol=1e-6, atol=1e-6)
            assert served["is_ood"].tolist() == local["is_ood"].tolist()
        assert registry_snapshot(guard.model_name) == before
        assert_registry_invariants(guard.model_name)
    assert fuzz_server["proc"].poll() is None
    with urllib.request.urlopen(f"{url}/ping", timeout=10) as response:
        assert response.status == 200


def _raw_exchange(url: str, head: bytes, body: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT_S) as s:
        s.sendall(head + body)
        received = b""
        while not _complete_response(received):
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def _complete_response(received: bytes) -> bool:
    """Headers and as many body bytes as their Content-Length says (the body may come in a later packet)."""
    head, separator, body = received.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False  # no length: read until the server closes


def test_a_body_shorter_than_its_content_length_gets_408_not_a_hang(fuzz_server):
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5000\r\n\r\n"
    )
    answer = _raw_exchange(fuzz_server["url"], head, b'{"dataframe_split": {"columns"')
    status_line = answer.split(b"\r\n", 1)[0]
    assert b" 408 " in status_line, answer[:300]
    assert b"EBMOPS_BODY_TIMEOUT_S" in answer


def test_a_body_far_over_the_cap_is_refused_from_its_content_length(fuzz_server):
    # Declared 10x the cap and never sent: refused at once from the header, without waiting for it.
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {10 * MAX_BODY}\r\n\r\n".encode()
    )
    answer = _raw_exchange(fuzz_server["url"], head, b"")
    assert b" 413 " in answer.split(b"\r\n", 1)[0], answer[:300]
    assert b"EBMOPS_MAX_BODY_BYTES" in answer
