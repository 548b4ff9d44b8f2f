"""Serving benchmark: the real scoring server (`ebmops serve`: MLflow's scoring app behind
flows/guard/serving.py) on loopback, one client reusing one keep-alive connection.

Measures, for a small vector guard (64 pixel features, registered in a temporary $EBMOPS_HOME with the
tensor signature): p50/p99 latency of one-row requests and rows/s of 1000-row requests, in the
tensor form `{"inputs": [[...], ...]}`; and the one-query p50 of a small text guard (packaged
all-MiniLM-L6-v2 embedder, no download; a `text` column). `tensor_serving_figures` is what
benchmarks/speed.py imports.

    .venv/bin/python benchmarks/serving.py                    # tensor form, text guard too
    .venv/bin/python benchmarks/serving.py --quick            # fewer requests
    .venv/bin/python benchmarks/serving.py --form split       # the 64 named columns (dataframe_split)
    .venv/bin/python benchmarks/serving.py --use-home         # serves the champion of $EBMOPS_HOME
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLINC = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clinc150" / "data_full.json"
FORMS = ("inputs", "split")


class Client:
    """One HTTP/1.1 connection to the server, reused for every request (keep-alive)."""

    def __init__(self, base_url: str, timeout_s: float = 60.0):
        host, port = base_url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
        self.headers = {"Content-Type": "application/json"}

    def post(self, body: bytes) -> bytes:
        self.connection.request("POST", "/invocations", body=body, headers=self.headers)
        response = self.connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
        return payload

    def close(self) -> None:
        self.connection.close()


def request_body(rows: np.ndarray, form: str = "inputs", columns: list[str] | None = None) -> bytes:
    if form == "inputs":
        return json.dumps({"inputs": rows.tolist()}).encode()
    return json.dumps({"dataframe_split": {"columns": columns, "data": rows.tolist()}}).encode()


@contextlib.contextmanager
def temporary_home(root: Path):
    """$EBMOPS_HOME pointed at root/home (tracking reconfigured) for the block, restored after."""
    import mlflow

    from flows.guard import registry

    saved = {key: os.environ.get(key) for key in ("EBMOPS_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_uris = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    os.environ["EBMOPS_HOME"] = str(root / "home")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    registry.configure_tracking()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(saved_uris[0])  # the caller's MLflow, not the deleted temporary one
        mlflow.set_registry_uri(saved_uris[1])


def register_vector_guard(work: Path, n_steps: int = 100) -> tuple[str, list[str]]:
    """A small digits guard (tests/flows/guard_factory.py's config) registered as it is today; returns
    (its version URI, its feature names)."""
    from ebm_core import EnergyDetector
    from flows.data.datasets import read_vectors
    from flows.guard import registry
    from tests.flows.guard_factory import prepare_data, small_config

    config = small_config(n_steps)
    data, check = prepare_data(work, config, check=False)
    features = list(data.feature_columns)
    detector = EnergyDetector(config.detector).fit(read_vectors(data.path("train"), features), seed=0,
                                                   feature_names=features)
    detector.calibrate(read_vectors(data.path("calibration"), features), alpha=config.alpha)
    registered = registry.log_and_register(
        experiment_name="serving-benchmark", model_name="serving-benchmark-vector", params={}, metrics={},
        artifacts={"data_checks": check}, detector_dir=detector.save(work / "detector"), feature_names=features,
    )
    return registered.model_uri, features


def bench_texts(n: int) -> list[str]:
    """In-scope CLINC150 training queries when the file is there, else generated sentences."""
    if CLINC.exists():
        rows = json.loads(CLINC.read_text())["train"]
        return [text for text, _ in rows[:: max(1, len(rows) // n)]][:n]
    subjects = ["my card", "the transfer", "my flight", "the weather", "a timer", "my balance", "the alarm"]
    verbs = ["check", "cancel", "change", "show me", "set", "find", "book"]
    return [f"please {v} {s} for {d}" for v in verbs for s in subjects for d in ("today", "tomorrow", "monday")][:n]


def register_text_guard(work: Path) -> str:
    """A small text guard: kernel density on packaged all-MiniLM-L6-v2 embeddings of a few hundred
    queries, calibrated on others; returns its version URI."""
    from ebm_core import KernelDensityDetector
    from flows.data.featurize import TextEmbedder, normalise_text
    from flows.data.text_splits import embedding_columns
    from flows.guard import registry
    from flows.pipeline.steps import write_featurizer

    texts = bench_texts(400)
    vectors = TextEmbedder().embed([normalise_text(t) for t in texts], progress=False).astype(np.float64)
    features = embedding_columns(vectors.shape[1])
    cut = len(vectors) * 3 // 4
    detector = KernelDensityDetector().fit(vectors[:cut], feature_names=features).calibrate(vectors[cut:], alpha=0.05)
    detector_dir = detector.save(work / "text-detector")
    write_featurizer(detector_dir, "all-MiniLM-L6-v2")
    check = work / "text-checks.json"
    check.write_text(json.dumps({"success": True}))
    registered = registry.log_and_register(
        experiment_name="serving-benchmark", model_name="serving-benchmark-text", params={}, metrics={},
        artifacts={"data_checks": check}, detector_dir=detector_dir, feature_names=features, accepts_text=True,
    )
    return registered.model_uri


@contextlib.contextmanager
def served(model_uri: str, log_path: Path, workers: int = 1):
    from flows.guard.serving import start_server, stop_server, wait_until_ready

    proc, url = start_server(model_uri, workers=workers, log_path=log_path)
    try:
        wait_until_ready(url, proc, timeout_s=180)
        yield url
    finally:
        stop_server(proc)


def one_row_latencies_ms(client: Client, bodies: list[bytes], warmup: int) -> np.ndarray:
    for body in bodies[:warmup]:
        client.post(body)
    latencies = []
    for body in bodies[warmup:]:
        t0 = time.perf_counter()
        client.post(body)
        latencies.append(time.perf_counter() - t0)
    return np.array(latencies) * 1000


def batch_rows_per_s(client: Client, bodies: list[bytes], rows: int) -> float:
    client.post(bodies[0])  # warm-up
    t0 = time.perf_counter()
    for body in bodies:
        client.post(body)
    return len(bodies) * rows / (time.perf_counter() - t0)


def measure_vector(url: str, columns: list[str], form: str, n_single: int, n_batches: int, warmup: int = 50) -> dict:
    rng = np.random.default_rng(0)
    singles = [request_body(rng.uniform(0, 16, (1, len(columns))), form, columns) for _ in range(warmup + n_single)]
    batches = [request_body(rng.uniform(0, 16, (1000, len(columns))), form, columns) for _ in range(n_batches)]
    client = Client(url)
    try:
        ms = one_row_latencies_ms(client, singles, warmup)
        rate = batch_rows_per_s(client, batches, 1000)
    finally:
        client.close()
    return {
        "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
        "batch_rows_per_s": float(rate), "n_single": n_single, "n_batches": n_batches,
    }


def measure_text(url: str, n_queries: int, warmup: int = 10) -> float:
    texts = [f"can you tell me the status of order number {i}" for i in range(warmup + n_queries)]
    bodies = [json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t]]}}).encode() for t in texts]
    client = Client(url)
    try:
        return float(np.percentile(one_row_latencies_ms(client, bodies, warmup), 50))
    finally:
        client.close()


def tensor_serving_figures(quick: bool = False, text: bool = True, form: str = "inputs", workers: int = 1) -> dict:
    """Served vector guard, one client reusing its connection: `p50_ms`, `p99_ms` of one-row requests,
    `batch_rows_per_s` of 1000-row requests (the tensor form unless form="split"); `text_p50_ms`, a
    text guard's one-query p50 (nan with `text_note` when it cannot be built here, or text=False).
    Registers both guards in a temporary $EBMOPS_HOME (the caller's environment is restored)."""
    import torch

    torch.set_num_threads(1)
    n_single, n_batches, n_text = (150, 8, 30) if quick else (500, 30, 100)
    with tempfile.TemporaryDirectory(prefix="ebmops-serving-bench-") as tmp:
        root = Path(tmp)
        with temporary_home(root):
            model_uri, columns = register_vector_guard(root / "work")
            with served(model_uri, root / "vector-server.log", workers) as url:
                figures = measure_vector(url, columns, form, n_single, n_batches)
            figures.update(text_p50_ms=math.nan, text_note="not measured (text=False)")
            if text:
                try:
                    text_uri = register_text_guard(root / "work")
                    with served(text_uri, root / "text-server.log", workers) as url:
                        figures.update(text_p50_ms=measure_text(url, n_text), text_note="")
                except Exception as error:  # noqa: BLE001 - reported as a note: the vector figures stand
                    figures["text_note"] = f"text guard not measured: {type(error).__name__}: {str(error)[:200]}"
    figures.update(form=form, workers=workers)
    return figures


def serve_home_champion(form: str, n_single: int, n_batches: int, workers: int) -> dict:
    from flows.guard.guard import Guard
    from flows.guard.names import DEFAULT_CHAMPION_URI

    guard = Guard.load(DEFAULT_CHAMPION_URI)
    with tempfile.TemporaryDirectory(prefix="ebmops-serving-bench-") as tmp, \
            served(guard.uri, Path(tmp) / "server.log", workers) as url:
        figures = measure_vector(url, guard.feature_names, form, n_single, n_batches)
    figures.update(text_p50_ms=math.nan, text_note="not measured (--use-home)", form=form, workers=workers)
    return figures


def print_table(figures: dict) -> None:
    rows = [
        ("one row: p50 latency", f"{figures['p50_ms']:.2f} ms"),
        ("one row: p99 latency", f"{figures['p99_ms']:.2f} ms"),
        ("one row: mean latency", f"{figures['mean_ms']:.2f} ms"),
        ("1000-row batch: throughput", f"{figures['batch_rows_per_s']:,.0f} rows/s"),
        ("text guard, one query: p50", "n/a" if math.isnan(figures["text_p50_ms"]) else f"{figures['text_p50_ms']:.2f} ms"),
    ]
    print(f"Serving benchmark (ebmops serve, {figures['workers']} worker(s), vector guard of 64 features, "
          f"form {figures['form']!r}, {figures['n_single']} one-row requests, {figures['n_batches']} batches of "
          f"1000; one client reusing its connection, loopback; {os.cpu_count()} CPUs)")
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 14}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")
    if figures.get("text_note"):
        print(f"note: {figures['text_note']}")
    print(f"serve_p50_ms={figures['p50_ms']:.2f} serve_p99_ms={figures['p99_ms']:.2f} "
          f"serve_batch_rows_per_s={figures['batch_rows_per_s']:.0f} text_p50_ms={figures['text_p50_ms']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 one-row requests and 8 batches")
    parser.add_argument("--form", choices=FORMS, default="inputs", help="tensor rows, or 64 named columns")
    parser.add_argument("--no-text", action="store_true", help="skip the text guard")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--use-home", action="store_true", help="serve the champion of $EBMOPS_HOME as it is")
    args = parser.parse_args()
    if args.use_home:
        n_single, n_batches = (150, 8) if args.quick else (500, 30)
        figures = serve_home_champion(args.form, n_single, n_batches, args.workers)
    else:
        figures = tensor_serving_figures(args.quick, text=not args.no_text, form=args.form, workers=args.workers)
    print_table(figures)


if __name__ == "__main__":
    main()
