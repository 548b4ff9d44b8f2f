"""Serve the champion over HTTP with MLflow's scoring server (`/ping`, `/health`, `/invocations`).

`ebmops serve` runs uvicorn on `create_app` below: MLflow's own scoring app
(`mlflow.pyfunc.scoring_server.init`, what `mlflow models serve` runs) for the verified copy of the
model, behind `RequestGuard`, an ASGI middleware that refuses malformed requests before MLflow parses
them. MLFLOW_TRACKING_URI is the embedded sqlite registry unless the caller set it. The pyfunc answers
energy, p_value and is_ood per row (and `neighbours` with params `explain` > 0); bad rows get a 4xx
naming the problem (flows/guard/input_checks.py).

A vector guard registered with the tensor signature ((-1, D) float64) has its `/invocations` answered
by `TensorScorer`: `{"inputs": [[...], ...]}` (or `instances`) rows in the model's feature order, and
every named-column form (dataframe_split, dataframe_records, records, {column: values}, CSV, Parquet)
matched by name into the same rows; the body is read once and scored by the pyfunc without MLflow's
per-column DataFrame parsing (most of a request's time before). A text guard, and a version
registered with named columns before the tensor form, are served by MLflow's app as before.

Limits (environment of the server):
- `EBMOPS_MAX_ROWS`: rows of one request (default 10000).
- `EBMOPS_MAX_BODY_BYTES`: bytes of one request body (default 20 MB); bigger gets 413 (the body is
  read and dropped up to 3x the cap so the client sees the 413; beyond that it is refused from its
  Content-Length alone).
- `EBMOPS_BODY_TIMEOUT_S`: seconds to receive a body (default 30); slower gets 408.
- JSON nested deeper than 20 levels gets 400 (a guard's request is 4 deep).

What the middleware refuses, each with a 4xx and a message of at most 2000 characters that quotes
names cut to 60 characters: no Content-Type or one MLflow does not parse (415); invalid JSON; more or
other top-level keys than one input format (+ empty `params`); columns the signature does not name
(MLflow would drop them silently); a column given twice; a `dataframe_split` row whose length differs
from `columns`, or an `index` whose length differs from `data` (pandas would broadcast one row to
three); params the model does not declare, or `explain` outside 0..20. Error answers from MLflow lose
the dump of the request frame it puts before the reason, and their stack trace. Values are read as a
double column reads them: JSON booleans become 1.0/0.0 and numeric strings such as "1.5" become
numbers; anything else is a 400 naming the column (and, for the tensor form, the row).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from flows import settings
from flows.guard.input_checks import (
    RefusedRequest,
    bound_message,
    check_content_type,
    check_request_body,
    max_body_bytes,
)
from flows.guard.names import DEFAULT_CHAMPION_URI

DEFAULT_MODEL_URI = DEFAULT_CHAMPION_URI
# The model folder the server process loads (set by serve_env; read by create_app).
MODEL_PATH_ENV = "EBMOPS_SERVE_MODEL_PATH"
DEFAULT_BODY_TIMEOUT_S = 30.0
# An oversized body is read and dropped up to this many times EBMOPS_MAX_BODY_BYTES before the 413.
DRAIN_FACTOR = 3
APP_FACTORY = "flows.guard.serving:create_app"
# A tensor guard's request body up to this size is scored on the event loop (about 10 rows of 64
# features); a bigger one in a worker thread.
INLINE_BODY_BYTES = 16 * 1024


def serve_args(host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> list[str]:
    """uvicorn on `create_app`, as `mlflow models serve --env-manager local` runs uvicorn on MLflow's app."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", APP_FACTORY,
        "--host", host, "--port", str(port), "--workers", str(workers), "--no-server-header",
    ]


def serve_env(
    max_rows: int | None = None, base: dict[str, str] | None = None, model_path: str | None = None,
    timeout_s: int = 60,
) -> dict[str, str]:
    """The server's environment: the model folder to load, the tracking URI (embedded sqlite unless
    set), MLflow's per-request timeout, one torch thread per worker, no pickle."""
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    env = dict(os.environ if base is None else base)
    env.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("EBMOPS_TORCH_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # ebmops stores no pickle: never load one
    env.setdefault(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name, str(int(timeout_s)))
    if model_path is not None:
        env[MODEL_PATH_ENV] = str(model_path)
    if max_rows is not None:
        env["EBMOPS_MAX_ROWS"] = str(int(max_rows))
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_server(
    model_uri: str = DEFAULT_MODEL_URI,
    host: str = "127.0.0.1",
    port: int | None = None,
    workers: int = 1,
    max_rows: int | None = None,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start the scoring server in its own process group; returns (process, base URL). A registered
    model is served from a copy checked against the digests recorded at registration."""
    port = port or free_port(host)
    holder, local = verified_copy_of(model_uri)
    out = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        serve_args(host, port, workers),
        env=serve_env(max_rows, env, model_path=local),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc._ebmops_verified_copy = holder  # the copy lives as long as the server's handle
    return proc, f"http://{host}:{port}"


def verified_copy_of(model_uri: str):
    """(a TemporaryDirectory holding it, the path to serve): a registered version's files after they
    matched their recorded digests; any other URI (a local folder) is served as given."""
    import tempfile

    from flows.guard import registry

    if not model_uri.startswith("models:/"):
        return None, model_uri
    name, version = registry.resolve_model_uri(model_uri)
    holder = tempfile.TemporaryDirectory(prefix="ebmops-serve-")
    return holder, str(registry.verified_model_copy(name, version, Path(holder.name)))


def wait_until_ready(base_url: str, proc: subprocess.Popen | None = None, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the scoring server exited with status {proc.returncode} before answering /ping")
        try:
            with urllib.request.urlopen(f"{base_url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base_url}/ping did not answer within {timeout_s:g} s")


def stop_server(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Stop the server and its workers (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


def serve_forever(
    model_uri: str = DEFAULT_MODEL_URI, host: str = "127.0.0.1", port: int = 5000, workers: int = 1,
    max_rows: int | None = None,
) -> int:
    """Run the server in the foreground until it exits or is interrupted; returns its exit status."""
    holder, local = verified_copy_of(model_uri)  # noqa: F841 - kept alive while the server runs
    proc = subprocess.Popen(serve_args(host, port, workers), env=serve_env(max_rows, model_path=local))
    # A service manager stops us with SIGTERM: pass it on, or the server would outlive us on its port.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the server process: MLflow's scoring app behind RequestGuard --------------------------------


def create_app():
    """The ASGI app uvicorn serves (`uvicorn --factory flows.guard.serving:create_app`): MLflow's
    scoring app for the model folder in $EBMOPS_SERVE_MODEL_PATH (the verified copy), behind
    RequestGuard. `/ping`, `/health`, `/version` are MLflow's; `/invocations` of a vector guard with
    the tensor signature is answered by `TensorScorer`, of any other model by MLflow's app."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_PATH_ENV])
    schema = model.metadata.get_input_schema()
    params_schema = model.metadata.get_params_schema()
    param_names = [p.name for p in params_schema.params] if params_schema is not None else []
    app = scoring_server.init(model)
    if schema is not None and schema.is_tensor_spec():
        return RequestGuard(app, param_names=param_names, scorer=TensorScorer(model, param_names))
    names = schema.input_names() if schema is not None and schema.has_input_names() else None
    return RequestGuard(app, input_names=[str(n) for n in names] if names else None, param_names=param_names)


class TensorScorer:
    """`/invocations` of a vector guard registered with the tensor signature, in one pass: the body is
    read once (orjson) into the (N, D) float64 matrix (`input_checks.tensor_request`: the tensor
    form, or named columns matched by name, with the params the signature declares checked), scored
    by the pyfunc (`EnergyGuardModel.score_tensor`: its own checks, then the detector), and the answer
    written as MLflow's scoring server writes it: {"predictions": [{"energy", "p_value", "is_ood"},
    ...]}. What MLflow's enforcement would do to that input is already done: the matrix is float64 of
    the signature's shape, the params are the declared ones with valid values (absent = default).
    MLflow's own parser decodes JSON with `json` and deep-copies the rows (40 ms of a 1000-row
    request), and a DataFrame per answer costs more than scoring one row; this path skips them.
    A refusal is a 4xx {"error_code", "message"} as MLflow's."""

    def __init__(self, model, param_names: list[str]):
        from flows.guard.pyfunc import feature_names_of

        self.model = model
        self.python_model = model.unwrap_python_model()
        self.param_names = list(param_names)
        self.feature_names = feature_names_of(self.python_model.detector)

    def answer(self, body: bytes, media_type: str) -> tuple[int, bytes]:
        """(HTTP status, JSON body) for one request."""
        from mlflow.exceptions import MlflowException

        from flows.guard.input_checks import InvalidGuardInput, tensor_request

        try:
            x, params = tensor_request(body, media_type, self.feature_names, self.param_names)
            scored = self.python_model.score_tensor(x, params or None)
        except InvalidGuardInput as refusal:
            return 400, error_body("BAD_REQUEST", str(refusal))
        except MlflowException as error:
            status = error.get_http_status_code()
            return status, rewrite_error(status, error.serialize_as_json().encode())
        return 200, predictions_body(scored)


def predictions_body(scored) -> bytes:
    """{"predictions": [one object per row]}: what MLflow's `predictions_to_json` writes for a frame
    (`scored`: a DataFrame, or its columns as name -> values)."""
    columns = [str(c) for c in scored]
    values = [v.tolist() if hasattr(v, "tolist") else list(v) for v in (scored[c] for c in scored)]
    records = [dict(zip(columns, row)) for row in zip(*values)]
    try:
        import orjson

        return orjson.dumps({"predictions": records})
    except ImportError:  # pragma: no cover - orjson comes with prefect
        return json.dumps({"predictions": records}).encode()


def error_body(error_code: str, message: str) -> bytes:
    return json.dumps({"error_code": error_code, "message": bound_message(message)}).encode()


def body_timeout_s() -> float:
    value = os.environ.get("EBMOPS_BODY_TIMEOUT_S", "")
    try:
        return float(value) if value.strip() else DEFAULT_BODY_TIMEOUT_S
    except ValueError:
        return DEFAULT_BODY_TIMEOUT_S


class RequestGuard:
    """ASGI middleware in front of MLflow's scoring app. For `POST /invocations` it checks the
    Content-Type, reads the body up to max_body_bytes() within body_timeout_s(), runs
    `check_request_body` (JSON depth and validity, input format, columns, rows, index), and only then
    hands the body to MLflow; error answers coming back are made bounded JSON without the request dump.
    Every other path goes to MLflow untouched."""

    def __init__(self, app, input_names: list[str] | None = None, param_names=(), scorer: TensorScorer | None = None):
        self.app = app
        self.input_names = input_names
        self.param_names = list(param_names)
        self.scorer = scorer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {key.lower(): value for key, value in scope.get("headers", [])}
        try:
            raw_type = headers.get(b"content-type")
            media_type = check_content_type(None if raw_type is None else raw_type.decode("latin-1"))
            body = await self._read_body(headers, receive)
            if body is None:
                return  # the client went away
            if self.scorer is None:
                await asyncio.to_thread(check_request_body, body, media_type, self.input_names, self.param_names)
        except RefusedRequest as refusal:
            await send_error(send, refusal.status, str(refusal), close=refusal.status in (408, 413))
            return
        if self.scorer is not None:
            await self._answer_with_scorer(body, media_type, send)
            return

        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        # MLflow compares the media type as written: hand it the normalised one (a charset can only be utf-8).
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", media_type.encode())]}
        await self.app(scope, replay, BoundedErrors(send))

    async def _answer_with_scorer(self, body: bytes, media_type: str, send) -> None:
        """The tensor guard's answer: a small body (a few rows, well under a millisecond of work) on
        the event loop itself, which spares two thread hand-offs per request; a bigger one in a
        thread, within MLflow's per-request timeout (504 past it, as MLflow)."""
        from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

        try:
            if len(body) <= INLINE_BODY_BYTES:
                status, payload = self.scorer.answer(body, media_type)
            else:
                status, payload = await asyncio.wait_for(
                    asyncio.to_thread(self.scorer.answer, body, media_type), MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()
                )
        except (asyncio.TimeoutError, TimeoutError):
            status, payload = 504, error_body("REQUEST_TIMEOUT", "Request processing time exceeded limit")
        except Exception:  # noqa: BLE001 - a fault of ours: logged with its traceback, answered 500
            import logging

            logging.getLogger(__name__).exception("scoring failed")
            status, payload = 500, error_body("INTERNAL_ERROR", "the guard failed to score the request (see the server log)")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _read_body(self, headers: dict, receive) -> bytes | None:
        """The whole body, None when the client went away, or RefusedRequest 413 / 408. An oversized
        body is still read and dropped up to DRAIN_FACTOR times the limit before the 413 goes out
        (as a web server's lingering close does): closing on unread bytes resets the connection, and
        the client would see the reset instead of the 413."""
        limit = max_body_bytes()
        too_large = RefusedRequest(
            f"request body larger than {limit} bytes (EBMOPS_MAX_BODY_BYTES); send smaller batches", 413
        )
        declared = headers.get(b"content-length")
        oversized = declared is not None and declared.strip().isdigit() and int(declared) > limit
        if oversized and int(declared) > DRAIN_FACTOR * limit:
            raise too_large
        timeout = body_timeout_s()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except (asyncio.TimeoutError, TimeoutError):
                if oversized:
                    raise too_large from None
                raise RefusedRequest(
                    f"the request body did not arrive within {timeout:g} s (EBMOPS_BODY_TIMEOUT_S)", 408
                ) from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            oversized = oversized or size > limit
            if oversized:
                chunks = []
                if size > DRAIN_FACTOR * limit or not message.get("more_body", False):
                    raise too_large
                continue
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def send_error(send, status: int, message: str, close: bool = False) -> None:
    error_code = {408: "REQUEST_TIMEOUT", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(
        status, "BAD_REQUEST"
    )
    body = json.dumps({"error_code": error_code, "message": bound_message(message)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BoundedErrors:
    """The `send` MLflow's app answers through: successes pass; an error answer is rewritten as JSON
    {"error_code", "message"} whose message has no request dump and at most MAX_MESSAGE_CHARS."""

    def __init__(self, send):
        self.send = send
        self.start = None  # the held http.response.start of an error answer
        self.chunks: list[bytes] = []

    async def __call__(self, message):
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = rewrite_error(self.start["status"], b"".join(self.chunks))
        headers = [
            (key, value) for key, value in self.start.get("headers", [])
            if key.lower() not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


def rewrite_error(status: int, body: bytes) -> bytes:
    """MLflow's error answer -> {"error_code", "message"}: no stack trace, no dump of the request
    frame before the reason, the message bounded."""
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict) or "message" not in doc:
            raise ValueError("not an MLflow error")
    except ValueError:
        code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        doc = {"error_code": code, "message": body.decode("utf-8", errors="replace")}
    doc.pop("stack_trace", None)
    doc["message"] = bound_message(strip_request_dump(str(doc["message"])))
    return json.dumps(doc).encode()


def strip_request_dump(message: str) -> str:
    """Drop what MLflow prints of the request before the reason: "Failed to predict data '<frame>'.
    \\nError: <reason>" and "Failed to enforce schema of data '<frame>' with schema '<schema>'. Error:"."""
    predict_prefix, predict_sep = "Failed to predict data '", "'. \nError: "
    if message.startswith(predict_prefix) and predict_sep in message:
        message = message[message.index(predict_sep) + len(predict_sep):]
    schema_prefix, schema_mid, schema_sep = "Failed to enforce schema of data '", "' with schema '", "'. Error: "
    if message.startswith(schema_prefix) and schema_mid in message:
        at = message.index(schema_mid)
        cut = message.find(schema_sep, at)
        if cut != -1:
            message = f"the input does not match the model signature: {message[cut + len(schema_sep):]}"
    return message
