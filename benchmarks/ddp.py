"""Data-parallel training (torchrun, gloo on CPU) with 2 processes vs 1, on the digits demo config.

  .venv/bin/python benchmarks/ddp.py [--objective cd] [--steps 1000] [--nproc 2] [--quick]

Data: scikit-learn's 8x8 digits; in-distribution 0-5 split 60/20/20 (train / validation / unused),
OOD 6-9 split 50/50 (validation / unused), seed 0. Detector: the demo's `--objective` detector
(MLP energy 256x256, persistent CD with 20 Langevin steps for cd), global batch 128, same seed.
Runs: one process; `--nproc` processes under torchrun (each rank B/nproc rows of every global batch,
gradients averaged, per-rank Langevin noise); one process with seed + 1 (the seed-to-seed spread the
DDP difference should be read against: DDP draws other negatives, as another seed does).
Reported: validation AUROC (ID val vs OOD 6-9 val; score = energy, higher = more OOD) and training
steps/s (the training loop only: `history.seconds`, not process start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def digits_splits(seed: int = 0) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    in_rows, out_rows = rng.permutation(np.flatnonzero(y <= 5)), rng.permutation(np.flatnonzero(y > 5))
    n_train, n_val = int(0.6 * len(in_rows)), int(0.2 * len(in_rows))
    return {
        "train": x[in_rows[:n_train]], "train_y": y[in_rows[:n_train]],
        "val_in": x[in_rows[n_train : n_train + n_val]], "val_out": x[out_rows[: len(out_rows) // 2]],
    }


def detector_config(objective: str, steps: int):
    from flows.pipeline.config import demo_config

    config = demo_config().with_objective(objective).detector
    return replace(config, train=replace(config.train, n_steps=steps, batch_size=128, log_every=max(1, steps // 10)))


def fit_and_measure(objective: str, steps: int, seed: int, distributed=None) -> dict:
    from ebm_core import EnergyDetector
    from evaluation.metrics import auroc

    data = digits_splits()
    labels = data["train_y"] if objective in ("ce", "jem", "margin") else None
    detector = EnergyDetector(detector_config(objective, steps)).fit(
        data["train"], labels, seed=seed, distributed=distributed
    )
    scores_in, scores_out = detector.score(data["val_in"]), detector.score(data["val_out"])
    seconds = detector.history_.seconds
    return {"auroc": float(auroc(scores_in, scores_out)), "seconds": seconds, "steps_per_s": steps / seconds}


def worker(args) -> None:
    """One rank under torchrun; rank 0 writes the result."""
    import torch

    from ebm_core.distributed import context_from_env, init_from_env

    torch.set_num_threads(1)
    init_from_env("cpu")
    context = context_from_env(args.seed)
    result = fit_and_measure(args.objective, args.steps, args.seed, distributed=context)
    if context.is_main:
        Path(args.out).write_text(json.dumps(result))
    import torch.distributed as dist

    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="cd")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 1000; --quick 200)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (200 if args.quick else 1000)
    if args.worker:
        return worker(args)

    import torch

    torch.set_num_threads(1)
    print(f"digits 0-5 vs 6-9, objective {args.objective}, {args.steps} steps, global batch 128, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}")
    rows = [("1 process", args.seed, fit_and_measure(args.objective, args.steps, args.seed))]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
            str(Path(__file__).resolve()), "--worker", "--objective", args.objective, "--steps", str(args.steps),
            "--seed", str(args.seed), "--out", str(out),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        completed = subprocess.run(command, env=env, capture_output=True, text=True)
        if completed.returncode != 0:
            sys.exit(f"torchrun failed ({completed.returncode}): {completed.stderr.strip().splitlines()[-1:]}")
        rows.append((f"{args.nproc} processes (gloo)", args.seed, json.loads(out.read_text())))
    rows.append(("1 process, next seed", args.seed + 1, fit_and_measure(args.objective, args.steps, args.seed + 1)))

    print(f"{'run':<22} {'seed':>4} {'val AUROC':>9} {'train s':>8} {'steps/s':>8}")
    for name, seed, r in rows:
        print(f"{name:<22} {seed:>4} {r['auroc']:>9.4f} {r['seconds']:>8.1f} {r['steps_per_s']:>8.1f}")
    single, ddp, other = (r for _, _, r in rows)
    print(f"|AUROC(DDP) - AUROC(1 process)| = {abs(ddp['auroc'] - single['auroc']):.4f}; "
          f"seed-to-seed |AUROC(seed) - AUROC(seed+1)| = {abs(other['auroc'] - single['auroc']):.4f}; "
          f"speed-up {ddp['steps_per_s'] / single['steps_per_s']:.2f}x")


if __name__ == "__main__":
    main()
