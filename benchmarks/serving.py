"""Serving benchmark: the real MLflow scoring server serving models:/ebm-guard@champion on loopback.

Measures p50/p99 latency of single-row requests and rows/s of 1000-row batches (vector input,
dataframe_split JSON), one client on the same machine. Text input is not measured: raw text goes
through the text embedder of another issue.

    .venv/bin/python benchmarks/serving.py                 # registers a small guard in a temp home
    .venv/bin/python benchmarks/serving.py --use-home      # serves the champion of $EBMOPS_HOME
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def post(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return response.read()


def body(columns: list[str], rows: np.ndarray) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": rows.tolist()}}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=500, help="single-row requests")
    parser.add_argument("--batches", type=int, default=30, help="1000-row requests")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--use-home", action="store_true", help="serve the champion of $EBMOPS_HOME as it is")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from flows.guard import registry
    from flows.data.datasets import pixel_columns
    from flows.guard.serving import start_server, stop_server, wait_until_ready

    tmp = tempfile.mkdtemp(prefix="ebmops-bench-")
    if not args.use_home:
        from tests.flows.guard_factory import prepare_data, register_version

        os.environ["EBMOPS_HOME"] = str(Path(tmp) / "home")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        registry.configure_tracking()
        data, check = prepare_data(Path(tmp) / "work", check=False)
        register_version(data, check, Path(tmp) / "work", n_steps=200)
    columns = pixel_columns()
    rng = np.random.default_rng(0)
    proc, url = start_server(workers=args.workers, log_path=Path(tmp) / "server.log")
    try:
        wait_until_ready(url, proc, timeout_s=180)
        invocations = f"{url}/invocations"
        for _ in range(20):  # warm up
            post(invocations, body(columns, rng.uniform(0, 16, (1, 64))))
        single = [body(columns, rng.uniform(0, 16, (1, 64))) for _ in range(args.single)]
        latencies = []
        for payload in single:
            t0 = time.perf_counter()
            post(invocations, payload)
            latencies.append(time.perf_counter() - t0)
        batch = [body(columns, rng.uniform(0, 16, (1000, 64))) for _ in range(args.batches)]
        post(invocations, batch[0])
        t0 = time.perf_counter()
        for payload in batch:
            post(invocations, payload)
        batch_seconds = time.perf_counter() - t0
    finally:
        stop_server(proc)
    ms = np.array(latencies) * 1000
    rows = [
        ("single row: p50 latency", f"{np.percentile(ms, 50):.2f} ms"),
        ("single row: p99 latency", f"{np.percentile(ms, 99):.2f} ms"),
        ("single row: mean latency", f"{ms.mean():.2f} ms"),
        ("1000-row batch: mean latency", f"{batch_seconds / args.batches * 1000:.1f} ms"),
        ("1000-row batch: throughput", f"{args.batches * 1000 / batch_seconds:,.0f} rows/s"),
    ]
    print(f"Serving benchmark (mlflow scoring server, {args.workers} worker(s), vector input, 64 features, "
          f"{args.single} single-row requests, {args.batches} batches of 1000; one client, loopback; "
          f"{os.cpu_count()} CPUs)")
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 14}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
    main()
