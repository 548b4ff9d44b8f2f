"""OOD quality of every ebmops detector configuration and every baseline, on one data set.

  .venv/bin/python benchmarks/quality.py --dataset clinc150 [--data-path PATH] [--quick]
  .venv/bin/python benchmarks/quality.py --dataset digits [--quick]

clinc150: all-MiniLM-L6-v2 embeddings (cached under $EBMOPS_HOME/embeddings; the embedding time and
cache hits/misses are printed). Fit on `train` (+ `oos_train` as auxiliary outliers for margin
training only), select on `val` vs `oos_val`, report on `test` (4500) vs `oos_test` (1000).
digits: sklearn's 8x8 digits; in-distribution 0-5 split 60/20/20 into train/val/test, OOD 6-9 split
50/50 into val/test (seed 0). No auxiliary outliers exist there: margin training uses
feature-permuted training rows (the library's default), never OOD digits.

Selection: each configuration has a handful of settings; the one with the best validation AUROC is
kept (test data is never looked at for it), printed, and written to benchmarks/configs/<dataset>.yaml.
Reported per configuration: AUROC, FPR95, AUPR-out with 95% percentile-bootstrap CIs (1000
resamples), in-distribution accuracy where the detector classifies, training seconds (the selected
setting's fit; the whole selection's time is printed too). Sign: score = energy, higher = more OOD;
OOD is the positive class; FPR95 = share of OOD accepted at the threshold accepting 95% of ID.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ebm_core import (  # noqa: E402
    CEConfig,
    ComposedDetector,
    DetectorConfig,
    DSMConfig,
    EnergyDetector,
    JEMConfig,
    KernelDensityDetector,
    LangevinSampler,
    MarginConfig,
    TrainConfig,
)
from evaluation.baselines import default_baselines, run_baselines  # noqa: E402
from evaluation.bootstrap import bootstrap_cis  # noqa: E402
from evaluation.metrics import auroc  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TEMPERATURES = (0.25, 0.5, 1.0, 2.0, 5.0)  # classifier energies are re-read at each (no retraining)


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


def load_clinc(data_path: str | None) -> dict:
    from flows.data.featurize import EmbeddingCache, TextEmbedder, embed_with_cache
    from flows.settings import ebmops_home
    from flows.data.text_data import default_clinc150_path, load_clinc150

    frames = load_clinc150(data_path or default_clinc150_path())
    cache = EmbeddingCache(ebmops_home() / "embeddings")
    embedder = TextEmbedder()
    texts, owner = [], []
    for key, frame in frames.items():
        texts += frame["text"].tolist()
        owner += [key] * len(frame)
    start = time.perf_counter()
    vectors, stats = embed_with_cache(texts, embedder, cache, progress=False)
    seconds = time.perf_counter() - start
    print(
        f"embedding: {len(texts)} texts in {seconds:.2f} s; cache {cache.directory}: "
        f"{stats.n_hits} hits, {stats.n_misses} misses, {stats.n_embedded} embedded"
    )
    owner = np.asarray(owner)
    x = {key: vectors[owner == key].astype(np.float64) for key in frames}
    y = {key: frames[key]["label"].to_numpy().astype(str) for key in frames}
    return {
        "x_train": x["train"], "y_train": y["train"],
        "x_val": x["val"], "y_val": y["val"], "x_ood_val": x["oos_val"],
        "x_test": x["test"], "y_test": y["test"], "x_ood_test": x["oos_test"],
        "outliers": x["oos_train"], "outlier_source": "oos_train",
    }


def load_digits_split(seed: int = 0) -> dict:
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.data.astype(np.float64), data.target
    rng = np.random.default_rng(seed)
    ind = rng.permutation(np.flatnonzero(y <= 5))
    ood = rng.permutation(np.flatnonzero(y >= 6))
    n_train, n_val = int(0.6 * ind.size), int(0.2 * ind.size)
    tr, va, te = ind[:n_train], ind[n_train : n_train + n_val], ind[n_train + n_val :]
    ov, ot = ood[: ood.size // 2], ood[ood.size // 2 :]
    return {
        "x_train": x[tr], "y_train": y[tr], "x_val": x[va], "y_val": y[va], "x_ood_val": x[ov],
        "x_test": x[te], "y_test": y[te], "x_ood_test": x[ot],
        "outliers": None, "outlier_source": "feature-permuted training rows",
    }


# --------------------------------------------------------------------------------------------------
# configurations: each yields (settings, fitted detector, fit seconds) candidates
# --------------------------------------------------------------------------------------------------


def train_cfg(steps: int, quick: bool, batch_size: int = 256, lr: float = 1e-3, wd: float = 0.0) -> TrainConfig:
    return TrainConfig(
        n_steps=max(50, steps // 4) if quick else steps, batch_size=batch_size, learning_rate=lr,
        weight_decay=wd, log_every=50, checkpoint_every=10_000,
    )


def temperature_candidates(settings: dict, detector, seconds: float):
    """One trained classifier energy, read at several temperatures (selection is free)."""
    for t in TEMPERATURES:
        yield {**settings, "temperature": t}, (lambda d=detector, t=t: d.set_score_temperature(t)), seconds


def label_free(data, budget):
    for t in (0.01, 0.02, 0.05, 0.1):
        start = time.perf_counter()
        det = KernelDensityDetector(temperature=t).fit(data["x_train"])
        yield {"kind": "vmf_kernel_density", "temperature": t}, det, time.perf_counter() - start


def label_free_trained(data, budget):
    for sigmas in ((0.5,), (1.0,)):
        cfg = DetectorConfig(objective=DSMConfig(sigmas=sigmas), hidden_dims=(256,), train=train_cfg(budget["dsm"], budget["quick"]))
        start = time.perf_counter()
        det = EnergyDetector(cfg).fit(data["x_train"], seed=0)
        yield {"objective": "dsm", "hidden_dims": [256], "dsm_sigmas": list(sigmas), "n_steps": cfg.train.n_steps}, det, time.perf_counter() - start


def classifier_ce(data, budget):
    for wd in (0.0, 1e-3):
        cfg = DetectorConfig(objective=CEConfig(), hidden_dims=(512,), train=train_cfg(budget["clf"], budget["quick"], wd=wd))
        start = time.perf_counter()
        det = EnergyDetector(cfg).fit(data["x_train"], data["y_train"], seed=0)
        seconds = time.perf_counter() - start
        settings = {"objective": "cross_entropy", "hidden_dims": [512], "weight_decay": wd, "n_steps": cfg.train.n_steps}
        for s, make, sec in temperature_candidates(settings, det, seconds):
            yield s, make, sec


def jem(data, budget):
    sampler = LangevinSampler(step_size=0.01, noise_scale=0.01, n_steps=10, grad_clip=None)
    cfg = DetectorConfig(objective=JEMConfig(energy_l2=0.01), hidden_dims=(512,), sampler=sampler,
                         train=train_cfg(budget["jem"], budget["quick"], batch_size=128))
    start = time.perf_counter()
    det = EnergyDetector(cfg).fit(data["x_train"], data["y_train"], seed=0)
    settings = {"objective": "jem", "hidden_dims": [512], "sgld_steps": 10, "sgld_step_size": 0.01,
                "sgld_noise": 0.01, "n_steps": cfg.train.n_steps}
    yield from temperature_candidates(settings, det, time.perf_counter() - start)


def margin(data, budget):
    for m_in, m_out in ((-8.0, -2.0), (-1.0, 1.0)):
        cfg = DetectorConfig(objective=MarginConfig(m_in=m_in, m_out=m_out), hidden_dims=(512,),
                             train=train_cfg(budget["clf"], budget["quick"]))
        start = time.perf_counter()
        det = EnergyDetector(cfg).fit(data["x_train"], data["y_train"], outliers=data["outliers"], seed=0)
        settings = {"objective": "margin", "hidden_dims": [512], "margin_in": m_in, "margin_out": m_out,
                    "outliers": data["outlier_source"], "n_steps": cfg.train.n_steps}
        yield from temperature_candidates(settings, det, time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------
# selection and evaluation
# --------------------------------------------------------------------------------------------------


def val_auroc(detector, data) -> float:
    return auroc(detector.score(data["x_val"]), detector.score(data["x_ood_val"]))


def select(name, candidates, data):
    """Best validation AUROC over the candidates; returns (settings, detector, fit seconds, val auroc)."""
    best = None
    t0 = time.perf_counter()
    for settings, det, seconds in candidates:
        det = det() if callable(det) and not hasattr(det, "score") else det
        value = val_auroc(det, data)
        print(f"  [{name}] {settings}  val AUROC {value:.4f}  (fit {seconds:.1f} s)", flush=True)
        if best is None or value > best[3]:
            best = (dict(settings), det, seconds, value)
    settings, det, seconds, value = best
    if "temperature" in settings and hasattr(det, "energy_kind_"):
        det.set_score_temperature(settings["temperature"])  # the object may have been re-read since
    print(f"  [{name}] selected {settings} (val AUROC {value:.4f}; selection took {time.perf_counter() - t0:.1f} s)")
    return best


def compose(lf, clf, data):
    """w * E_label_free / sd_lf + (1 - w) * E_classifier / sd_clf, sd on in-distribution val energies."""
    sd_lf = float(np.std(lf.score(data["x_val"])))
    sd_clf = float(np.std(clf.score(data["x_val"])))
    best = None
    for w in (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0):
        det = ComposedDetector([(w / sd_lf, lf), ((1 - w) / sd_clf, clf)])
        value = val_auroc(det, data)
        print(f"  [composition] w_label_free={w}  val AUROC {value:.4f}")
        if best is None or value > best[3]:
            best = ({"w_label_free": w, "weights": [w / sd_lf, (1 - w) / sd_clf]}, det, 0.0, value)
    print(f"  [composition] selected {best[0]} (val AUROC {best[3]:.4f})")
    return best


def accuracy(detector, x, y) -> float | None:
    if getattr(detector, "energy_kind_", None) != "classifier" or detector.classes_ is None:
        return None
    with torch.no_grad():
        xs = torch.as_tensor(detector._standardize(x), dtype=torch.float32)
        pred = detector.energy_.logits(xs).argmax(dim=1).numpy()
    return float(np.mean(np.asarray(detector.classes_, dtype=object)[pred].astype(str) == np.asarray(y).astype(str)))


def row(name, in_scores, ood_scores, acc, seconds):
    cis = bootstrap_cis(in_scores, ood_scores, ("auroc", "fpr95", "aupr_out"), n_resamples=1000, seed=0)
    return {"name": name, **{k: cis[k] for k in cis}, "acc": acc, "seconds": seconds}


def fmt_ci(ci) -> str:
    return f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def print_table(rows, n_in, n_ood):
    print(f"\ntest: {n_in} in-distribution vs {n_ood} OOD; 95% bootstrap CIs (1000 resamples)\n")
    print("| detector | AUROC | FPR95 | AUPR-out | ID accuracy | train s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        acc = f"{r['acc']:.3f}" if r["acc"] is not None else "-"
        print(f"| {r['name']} | {fmt_ci(r['auroc'])} | {fmt_ci(r['fpr95'])} | {fmt_ci(r['aupr_out'])} | {acc} | {r['seconds']:.1f} |")


def write_yaml(path: Path, dataset: str, selected: dict) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "dataset": dataset,
        "selected_on": "validation AUROC (val vs oos_val)" if dataset == "clinc150" else "validation AUROC (digits val split)",
        "written": _dt.date.today().isoformat(),
        "configurations": selected,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    print(f"\nselected settings written to {path}")


def main(argv=None) -> int:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("clinc150", "digits"), default="clinc150")
    parser.add_argument("--data-path", default=None)
    parser.add_argument("--quick", action="store_true", help="a quarter of the training steps (smoke run)")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/configs/<dataset>.yaml")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    print(f"benchmarks/quality.py --dataset {args.dataset}  ({_dt.datetime.now():%Y-%m-%d %H:%M}, torch threads 1)")
    data = load_clinc(args.data_path) if args.dataset == "clinc150" else load_digits_split()
    print(f"train {len(data['x_train'])}, val {len(data['x_val'])} + ood val {len(data['x_ood_val'])}, "
          f"test {len(data['x_test'])} + ood test {len(data['x_ood_test'])}, dim {data['x_train'].shape[1]}")
    budget = {"quick": args.quick, "clf": 1000 if args.dataset == "clinc150" else 600,
              "jem": 300 if args.dataset == "clinc150" else 300, "dsm": 300}

    chosen = {}
    chosen["(a) label-free vMF kernel-density energy"] = select("label-free kde", label_free(data, budget), data)
    chosen["(a') label-free MLP EBM (DSM)"] = select("label-free dsm", label_free_trained(data, budget), data)
    chosen["(b) classifier energy (cross-entropy)"] = select("classifier", classifier_ce(data, budget), data)
    chosen["(c) JEM hybrid"] = select("jem", jem(data, budget), data)
    chosen["(d) energy-margin + outliers"] = select("margin", margin(data, budget), data)
    lf_key = max(("(a) label-free vMF kernel-density energy", "(a') label-free MLP EBM (DSM)"), key=lambda k: chosen[k][3])
    clf_key = max(("(b) classifier energy (cross-entropy)", "(c) JEM hybrid", "(d) energy-margin + outliers"),
                  key=lambda k: chosen[k][3])
    comp = compose(chosen[lf_key][1], chosen[clf_key][1], data)
    comp[0].update({"label_free": lf_key, "classifier": clf_key})
    comp = (comp[0], comp[1], chosen[lf_key][2] + chosen[clf_key][2], comp[3])
    chosen["(e) composition label-free + classifier"] = comp

    rows = []
    for name, (settings, det, seconds, _) in chosen.items():
        rows.append(row(name, det.score(data["x_test"]), det.score(data["x_ood_test"]),
                        accuracy(det, data["x_test"], data["y_test"]), seconds))

    splits = {"test": data["x_test"], "ood_test": data["x_ood_test"]}
    baselines = default_baselines()
    result = run_baselines(data["x_train"], data["y_train"], splits, "test", ["ood_test"], baselines)
    for name, baseline in baselines.items():
        if name in result.skipped:
            continue
        acc = None
        if hasattr(baseline, "classifier_"):
            acc = float(np.mean(baseline.classifier_.predict(data["x_test"]).astype(str) == data["y_test"].astype(str)))
        rows.append(row(f"baseline: {name}", result.scores[name]["test"], result.scores[name]["ood_test"], acc,
                        result.seconds[name]))

    print_table(rows, len(data["x_test"]), len(data["x_ood_test"]))
    selected = {name: {**settings, "val_auroc": round(value, 4)} for name, (settings, _, _, value) in chosen.items()}
    print("\nselected settings (validation only):")
    for name, settings in selected.items():
        print(f"  {name}: {settings}")
    if not args.no_write and not args.quick:
        write_yaml(CONFIG_DIR / f"{args.dataset}.yaml", args.dataset, selected)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
