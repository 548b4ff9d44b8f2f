"""Batch scoring speed and memory (flows/ops/batch_scoring.py): 1M rows x 384 float32 features,
in-process vs split by row group across two Dask worker processes.

  .venv/bin/python benchmarks/batch_scoring.py [--rows 1000000] [--features 384] [--row-group 65536]
                                               [--batch-rows 65536] [--workers 2] [--keep DIR]

Data (made here, in a temporary folder): a Parquet file of `--rows` rows, `--features` float32 columns
f000.. and an int64 `id`, written in row groups of `--row-group` rows (snappy). Rows are standard
normal; every 10th row group is shifted by +0.5 in every feature (traffic the guard should flag).
Guard: a 384-feature MLP energy (one hidden layer of 256, denoising score matching, 200 steps) trained
on 4096 standard-normal rows, calibrated on 2048 more (alpha 0.05) and registered in a throwaway
`$EBMOPS_HOME`. Each scoring run is a fresh process running the `batch_score` flow (what `ebmops score`
runs), so its peak memory is the scoring's own:

- in-process: `EBMOPS_DASK_ADDRESS` unset, one process, one torch thread;
- dask: a `LocalCluster` of `--workers` worker processes (one thread each), the flow connected to it
  with `EBMOPS_DASK_ADDRESS=<its scheduler>`; each worker's peak is read with `client.run`.

Reported: rows/s (rows / the flow's own seconds, and rows / the wall time of the flow call, which adds
the flow run's start and, for Dask, the concatenation), peak RSS of every process (ru_maxrss), whether
the two outputs are the same table, and the flagged share.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL_NAME = "bench-batch-guard"


def peak_rss_mib() -> float:
    """This process's peak resident set (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_traffic(path: Path, rows: int, features: int, row_group: int, seed: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"f{j:03d}" for j in range(features)]
    schema = pa.schema([pa.field("id", pa.int64())] + [pa.field(n, pa.float32()) for n in names])
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for g, start in enumerate(range(0, rows, row_group)):
            n = min(row_group, rows - start)
            x = rng.standard_normal((n, features), dtype=np.float32)
            if g % 10 == 9:
                x += np.float32(0.5)
            arrays = [pa.array(np.arange(start, start + n, dtype=np.int64))] + [pa.array(x[:, j]) for j in range(features)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=row_group)
    return path


def register_guard(work: Path, features: int, seed: int = 0) -> str:
    from ebm_core import DetectorConfig, EnergyDetector
    from flows.guard import registry
    from flows.guard.names import version_uri

    names = [f"f{j:03d}" for j in range(features)]
    rng = np.random.default_rng(seed + 1)
    x_train = rng.standard_normal((4096, features))
    x_cal = rng.standard_normal((2048, features))
    config = DetectorConfig.from_dict(
        {
            "hidden_dims": [256],
            "objective": {"name": "dsm", "sigmas": [1.0]},
            "train": {"n_steps": 200, "batch_size": 256, "learning_rate": 0.001},
        }
    )
    detector = EnergyDetector(config).fit(x_train, seed=seed, feature_names=names)
    detector.calibrate(x_cal, alpha=0.05)
    detector_dir = detector.save(work / "detector")
    checks = work / "data_checks.json"
    checks.write_text(json.dumps({"success": True, "splits": {}}))
    registered = registry.log_and_register(
        experiment_name=MODEL_NAME, model_name=MODEL_NAME, params={"benchmark": "batch_scoring"}, metrics={},
        artifacts={"data_checks": checks}, detector_dir=detector_dir, feature_names=names,
    )
    return version_uri(registered.model_name, registered.version)


def score_run(mode: str, model: str, input_path: str, output_path: str, batch_rows: int, workers: int) -> dict:
    """One scoring run in this (fresh) process; returns the figures as a dict."""
    from flows.ops.batch_scoring import batch_score
    from flows.pipeline import task_runners

    worker_peaks: dict[str, float] = {}
    if mode == "in_process":
        os.environ.pop(task_runners.DASK_ADDRESS_ENV, None)
        started = time.perf_counter()
        summary = batch_score(model, input_path, output_path, batch_rows)
        wall = time.perf_counter() - started
    else:
        from distributed import Client, LocalCluster

        with LocalCluster(**task_runners.local_cluster_kwargs(workers)) as cluster, Client(cluster) as client:
            os.environ[task_runners.DASK_ADDRESS_ENV] = cluster.scheduler_address
            started = time.perf_counter()
            summary = batch_score(model, input_path, output_path, batch_rows)
            wall = time.perf_counter() - started
            worker_peaks = client.run(peak_rss_mib)
    return {
        "mode": mode,
        "rows": summary.rows,
        "flagged": summary.flagged,
        "parts": summary.parts,
        "flow_seconds": summary.seconds,
        "wall_seconds": wall,
        "rows_per_s": summary.rows / summary.seconds,
        "rows_per_s_wall": summary.rows / wall,
        "driver_peak_mib": peak_rss_mib(),
        "worker_peak_mib": sorted(worker_peaks.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=384)
    parser.add_argument("--row-group", type=int, default=65_536)
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--score", choices=("in_process", "dask"), help=argparse.SUPPRESS)  # child process
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.score:
        figures = score_run(args.score, args.model, args.input, args.output, args.batch_rows, args.workers)
        print("FIGURES " + json.dumps(figures))
        return

    holder = None if args.keep else tempfile.TemporaryDirectory(prefix="ebmops-bench-score-")
    work = Path(args.keep or holder.name)
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "EBMOPS_HOME": str(work / "home"),
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    os.environ.update({k: env[k] for k in ("EBMOPS_HOME", "PREFECT_HOME")})
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    started = time.perf_counter()
    traffic = make_traffic(work / "traffic.parquet", args.rows, args.features, args.row_group)
    print(f"data: {args.rows} x {args.features} float32 in {traffic} ({traffic.stat().st_size / 2**30:.2f} GiB), "
          f"{time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    model = register_guard(work, args.features)
    print(f"guard: {model}, trained and registered in {time.perf_counter() - started:.0f} s")

    results = {}
    for mode in ("in_process", "dask"):
        out = work / f"scores-{mode}.parquet"
        run = subprocess.run(
            [sys.executable, __file__, "--score", mode, "--model", model, "--input", str(traffic),
             "--output", str(out), "--batch-rows", str(args.batch_rows), "--workers", str(args.workers)],
            env=env, capture_output=True, text=True,
        )
        line = next((l for l in run.stdout.splitlines() if l.startswith("FIGURES ")), None)
        if run.returncode != 0 or line is None:
            sys.exit(f"{mode} run failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
        results[mode] = json.loads(line.removeprefix("FIGURES "))
        results[mode]["output"] = out

    import pyarrow.parquet as pq

    same = pq.read_table(results["in_process"]["output"]).equals(pq.read_table(results["dask"]["output"]))
    print()
    print("| run | rows/s (flow) | rows/s (wall) | flow s | wall s | parts | peak RSS per process (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, r in results.items():
        peaks = f"driver {r['driver_peak_mib']:.0f}"
        if r["worker_peak_mib"]:
            peaks += "; workers " + ", ".join(f"{p:.0f}" for p in r["worker_peak_mib"])
        print(f"| {mode} | {r['rows_per_s']:,.0f} | {r['rows_per_s_wall']:,.0f} | {r['flow_seconds']:.1f} | "
              f"{r['wall_seconds']:.1f} | {r['parts']} | {peaks} |")
    r = results["in_process"]
    print(f"\nrows {r['rows']}, flagged {r['flagged']} ({r['flagged'] / r['rows']:.1%}); "
          f"Dask output identical to in-process: {same}")
    peaks = [r["driver_peak_mib"] for r in results.values()] + results["dask"]["worker_peak_mib"]
    print(f"largest peak RSS: {max(peaks):.0f} MiB (target < 2048 MiB per process: {'met' if max(peaks) < 2048 else 'MISSED'})")
    if holder is not None:
        holder.cleanup()


if __name__ == "__main__":
    main()
