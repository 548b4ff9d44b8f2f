"""Does the monitor's sequential detector cry wolf, and how fast does it see out-of-scope traffic?

  .venv/bin/python benchmarks/monitoring.py                       # ~2 minutes on one core
  .venv/bin/python benchmarks/monitoring.py --seeds 50 --null-seeds 100 --append-docs

Guard: the logistic-regression logit energy (evaluation.baselines.LogitEnergyBaseline, Liu et al.
2020: E(x) = -logsumexp of a 150-intent logistic regression) on frozen all-MiniLM-L6-v2 embeddings of
CLINC150's in-scope train queries (cached embeddings, no model run when the cache holds them);
calibrated conformally on the 3000 in-scope val queries (alpha 0.05). Sequential detector:
evaluation.monitoring.SequentialDetector (CUSUM of mixture likelihood ratios of the conformal
p-values, alarm at log(ARL)), at the configured expected run length (default 150).

Streams: batches of 100 queries drawn with replacement from the held-out test queries (4500
in-scope, 1000 out-of-scope), each seed its own stream.
- no shift: in-scope only, until the first alarm or the cap (1000 batches). A run without alarm
  counts as 1000 (censored), so the reported mean is a lower bound of the true mean run length.
- step shifts: in-scope only for batches 0..t-1 (t = 20), then each query is out-of-scope with
  probability 5%, 10% or 20%. Delay = batches from the change point to the first alarm at or after
  it, the change batch counting as 1. A false alarm before t is counted and the detector restarts.
  Runs without alarm within 500 batches after t count as 500.
- gradual drift: the out-of-scope probability rises linearly from 0 at batch t by 0.4 points per
  batch (20% after 50 batches), delay counted the same way.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ebm_core.calibration import conformal_p_values  # noqa: E402
from evaluation.monitoring import SequentialDetector  # noqa: E402


def load_embeddings(cache_dir: Path, clinc_path: Path | None):
    from flows.data.featurize import EmbeddingCache, TextEmbedder, embed_with_cache
    from flows.data.text_data import default_clinc150_path, load_clinc150

    frames = load_clinc150(clinc_path or default_clinc150_path())
    cache = EmbeddingCache(cache_dir)
    embedder = TextEmbedder()  # loaded only if the cache misses a text
    out = {}
    for key in ("train", "val", "test", "oos_test"):
        vectors, stats = embed_with_cache(frames[key]["text"].tolist(), embedder, cache=cache, progress=False)
        out[key] = (vectors.astype(np.float64), frames[key]["label"].to_numpy())
        print(f"  {key}: {vectors.shape[0]} rows ({stats.n_hits} cached)")
    return out


def first_alarm(detector: SequentialDetector, batches) -> int | None:
    for i, batch in enumerate(batches):
        if detector.update(batch):
            return i
    return None


def stream(rng, p_in, p_oos, share_of_batch, n_batches, batch_size):
    """Yields batches of p-values; share_of_batch(b) is the out-of-scope probability of batch b."""
    for b in range(n_batches):
        is_oos = rng.uniform(size=batch_size) < share_of_batch(b)
        batch = p_in[rng.integers(0, p_in.size, batch_size)]
        if is_oos.any():
            batch[is_oos] = p_oos[rng.integers(0, p_oos.size, int(is_oos.sum()))]
        yield batch


def null_run_lengths(p_in, p_oos, arl, seeds, cap, batch_size):
    lengths = []
    for seed in range(seeds):
        rng = np.random.default_rng(10_000 + seed)
        alarm = first_alarm(SequentialDetector(arl), stream(rng, p_in, p_oos, lambda b: 0.0, cap, batch_size))
        lengths.append(cap if alarm is None else alarm + 1)
    return np.asarray(lengths)


def delays(p_in, p_oos, arl, seeds, change, share_fn, horizon, batch_size):
    out, false_alarms = [], 0
    for seed in range(seeds):
        rng = np.random.default_rng(20_000 + seed)
        detector = SequentialDetector(arl)
        batches = stream(rng, p_in, p_oos, share_fn, change + horizon, batch_size)
        delay = horizon
        for b, batch in enumerate(batches):
            if detector.update(batch):
                if b < change:
                    false_alarms += 1
                    continue
                delay = b - change + 1
                break
        out.append(delay)
    return np.asarray(out), false_alarms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".ebmops" / "embeddings")
    parser.add_argument("--clinc", type=Path, default=None)
    parser.add_argument("--arl", type=float, default=150.0)
    parser.add_argument("--seeds", type=int, default=100, help="seeds per shift (>= 50)")
    parser.add_argument("--null-seeds", type=int, default=200)
    parser.add_argument("--cap", type=int, default=1000)
    parser.add_argument("--change", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--append-docs", action="store_true", help="append the table to docs/benchmarks.md")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from sklearn.metrics import roc_auc_score

    from ebm_core.calibration import conformal_threshold
    from evaluation.baselines import LogitEnergyBaseline

    started = time.perf_counter()
    print("CLINC150 embeddings (all-MiniLM-L6-v2, cached):")
    data = load_embeddings(args.cache_dir, args.clinc)
    t0 = time.perf_counter()
    guard = LogitEnergyBaseline().fit(*data["train"])
    fit_seconds = time.perf_counter() - t0
    cal = guard.score(data["val"][0])
    e_in, e_oos = guard.score(data["test"][0]), guard.score(data["oos_test"][0])
    threshold = conformal_threshold(cal, args.alpha)
    p_in, p_oos = conformal_p_values(cal, e_in), conformal_p_values(cal, e_oos)
    auroc = roc_auc_score(np.r_[np.zeros(e_in.size), np.ones(e_oos.size)], np.r_[e_in, e_oos])
    test_fpr, tpr = float((e_in > threshold).mean()), float((e_oos > threshold).mean())
    print(
        f"guard: logit energy, fit {fit_seconds:.0f} s; test AUROC {auroc:.3f}; at alpha {args.alpha}: "
        f"in-scope test flag rate {test_fpr:.3f}, out-of-scope flag rate {tpr:.3f}"
    )

    rows = []
    lengths = null_run_lengths(p_in, p_oos, args.arl, args.null_seeds, args.cap, args.batch_size)
    censored = int((lengths >= args.cap).sum())
    rows.append(
        ("no shift: run length", f"{lengths.mean():.0f}", f"{np.percentile(lengths, 10):.0f} (p10)",
         f"{censored}/{lengths.size} censored at {args.cap}; min {lengths.min()}, median {np.median(lengths):.0f}",
         args.null_seeds)
    )  # fmt: skip
    shifts = [
        (f"step {int(s * 100)}% oos from batch {args.change}", (lambda s: lambda b: s if b >= args.change else 0.0)(s))
        for s in (0.05, 0.10, 0.20)
    ]
    shifts.append(
        (f"drift +0.4 pt/batch from batch {args.change}", lambda b: min(1.0, max(0.0, (b - args.change + 1) * 0.004)))
    )
    for label, share_fn in shifts:
        d, false_alarms = delays(p_in, p_oos, args.arl, args.seeds, args.change, share_fn, args.horizon, args.batch_size)
        rows.append(
            (f"{label}: delay", f"{d.mean():.2f}", f"{np.percentile(d, 90):.0f}",
             f"max {d.max()}; {false_alarms} false alarm(s) before the change", args.seeds)
        )  # fmt: skip

    header = ("stream", "mean (batches)", "p90", "notes", "seeds")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    table = "\n".join(lines)
    print()
    print(f"Sequential detector at expected run length {args.arl:g}, batches of {args.batch_size}:")
    print(table)
    seconds = time.perf_counter() - started
    print(f"\n({seconds:.0f} s)")
    if args.append_docs:
        command = "python benchmarks/monitoring.py " + " ".join(sys.argv[1:])
        section = f"""
## Monitoring (benchmarks/monitoring.py)

{datetime.now(timezone.utc).strftime('%Y-%m-%d')}, {platform.machine()} {platform.system()}, {platform.python_version()},
one torch/BLAS thread; `{command.strip()}` ({seconds:.0f} s).

Guard: logistic-regression logit energy on frozen all-MiniLM-L6-v2 embeddings of CLINC150 in-scope train
queries, conformally calibrated on the 3000 in-scope val queries at alpha {args.alpha} (test AUROC
{auroc:.3f}; in-scope test flag rate {test_fpr:.3f}; out-of-scope test flag rate {tpr:.3f}).
Detector: `evaluation.monitoring.SequentialDetector` (CUSUM of mixture likelihood ratios of the
conformal p-values, eps in {{1, 2, 5, 10, 20, 50}}%, kappa 0.2), alarm at log({args.arl:g}): theory
gives mean run length >= {args.arl:g} batches for i.i.d. uniform p-values. Batches of {args.batch_size}
queries drawn with replacement from the test split (4500 in-scope, 1000 out-of-scope). Run lengths
without alarm count as {args.cap} (censored), so the mean is a lower bound. Delay: batches from the
change point (batch {args.change}) to the first alarm, the change batch counting as 1; false alarms
before the change restart the detector and are counted.

{table}

Targets: mean run length without shift >= {args.arl:g} (met: {'yes' if lengths.mean() >= args.arl else 'NO'});
mean delay at 10% out-of-scope <= 10 batches (see the row "step 10%").
"""
        docs = ROOT / "docs" / "benchmarks.md"
        docs.parent.mkdir(parents=True, exist_ok=True)
        if not docs.exists():
            docs.write_text("# Benchmarks\n")
        with open(docs, "a") as handle:
            handle.write(section)
        print(f"appended to {docs}")


if __name__ == "__main__":
    main()
