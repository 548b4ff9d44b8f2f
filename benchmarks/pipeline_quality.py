"""Quality of the guard a user actually gets: CLINC150 through the plain CSV commands of the README.

  .venv/bin/python benchmarks/pipeline_quality.py [--data-path data_full.json] [--scenarios ood_val,labels,unlabelled]
      [--budget default] [--append-docs]

For each scenario it writes CSV files from CLINC150 (the files a team would have), runs
`ebmops train ...` (a fresh challenger is registered; the selection stage chooses on validation data
only), then `ebmops evaluate --model models:/ebm-guard/<version> --data test.csv --ood-data
oos_test.csv` on data the training never saw, and prints one table:

- ood_val:    train.csv + val.csv with an `intent` column, oos_val.csv as --ood-val-data;
- labels:     train.csv + val.csv with `intent`, no OOD file (held-out classes choose);
- unlabelled: train.csv + val.csv without labels, no OOD file (held-out k-means clusters choose).

Every scenario shares one $EBMOPS_HOME (default: a fresh folder under /tmp), so the embeddings are
computed once (cold time printed by the first run) and each scenario registers its own version.
Score = energy, higher = more OOD; OOD is the positive class.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCENARIOS = ("ood_val", "labels", "unlabelled")
TARGETS = {"ood_val": (0.98, 0.10), "labels": (0.975, None), "unlabelled": (0.96, None)}


def write_csvs(data_path: Path, out: Path) -> dict[str, Path]:
    from flows.data.text_data import load_clinc150

    data = load_clinc150(data_path)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key in ("train", "val", "test"):
        frame = data[key].rename(columns={"label": "intent"})
        paths[key] = out / f"{key}.csv"
        frame.to_csv(paths[key], index=False)
        paths[f"{key}_unlabelled"] = out / f"{key}_unlabelled.csv"
        frame[["text"]].to_csv(paths[f"{key}_unlabelled"], index=False)
    for key in ("oos_val", "oos_test"):
        paths[key] = out / f"{key}.csv"
        data[key][["text"]].to_csv(paths[key], index=False)
    return paths


def ebmops(args: list[str], env: dict, log: Path) -> str:
    command = [str(REPO / ".venv" / "bin" / "ebmops"), *args]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    log.write_text(result.stdout + "\n" + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed (exit {result.returncode}); log: {log}\n{result.stdout[-3000:]}")
    print(f"  ebmops {args[0]}: {time.perf_counter() - started:.0f} s", flush=True)
    return result.stdout


def run_scenario(name: str, paths: dict[str, Path], env: dict, work: Path, budget: str) -> dict:
    train_args = ["train", "--text-column", "text", "--no-progress", "--budget", budget]
    if name == "unlabelled":
        train_args += ["--data", str(paths["train_unlabelled"]), "--val-data", str(paths["val_unlabelled"])]
    else:
        train_args += ["--data", str(paths["train"]), "--val-data", str(paths["val"]), "--label-column", "intent"]
    if name == "ood_val":
        train_args += ["--ood-val-data", str(paths["oos_val"])]
    started = time.perf_counter()
    out = ebmops(train_args, env, work / f"{name}.train.log")
    train_seconds = time.perf_counter() - started
    version = re.search(r"version (\d+)", out).group(1)
    report_path = work / f"{name}.report.json"
    ebmops(
        ["evaluate", "--model", f"models:/ebm-guard/{version}", "--data", str(paths["test"]),
         "--ood-data", str(paths["oos_test"]), "--text-column", "text", "--report", str(report_path)],
        env, work / f"{name}.evaluate.log",
    )
    report = json.loads(report_path.read_text())
    metrics = report["ood_metrics"]["ood_oos_test"]
    cis = report["metric_cis"]["ood_oos_test"]
    run_dirs = sorted((Path(env["EBMOPS_HOME"]) / "runs").glob("*/selection.json"), key=lambda p: p.stat().st_mtime)
    selection = json.loads(run_dirs[-1].read_text())
    return {
        "scenario": name,
        "version": version,
        "auroc": metrics["auroc"],
        "auroc_ci": (cis["auroc"]["low"], cis["auroc"]["high"]),
        "fpr95": metrics["fpr95"],
        "fpr95_ci": (cis["fpr95"]["low"], cis["fpr95"]["high"]),
        "realised_fpr": report["realised_fpr"],
        "train_seconds": train_seconds,
        "selection": selection,
        "train_log": str(work / f"{name}.train.log"),
    }


def markdown(rows: list[dict], budget: str, total: float) -> str:
    lines = [
        "## Pipeline quality on CLINC150 (benchmarks/pipeline_quality.py)",
        "",
        f"Date: {_dt.date.today()}. 2-core CPU, shared; one torch thread. Budget `{budget}`. Total {total:.0f} s.",
        "Each row: `ebmops train` on CSV files (what a team has), then `ebmops evaluate` of the registered",
        "version on CLINC150 `test` (4500 in-scope) vs `oos_test` (1000 out-of-scope), never seen in training",
        "or selection. 95% bootstrap CIs.",
        "",
        "| scenario | chosen by | winner | test AUROC | test FPR95 | realised FPR | train s | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        target_auroc, target_fpr = TARGETS[r["scenario"]]
        met = r["auroc"] >= target_auroc and (target_fpr is None or r["fpr95"] <= target_fpr)
        target = f"AUROC >= {target_auroc}" + (f", FPR95 <= {target_fpr}" if target_fpr else "")
        lines.append(
            f"| {r['scenario']} | {r['selection']['scheme']} | {r['selection']['winner']} | "
            f"{r['auroc']:.4f} [{r['auroc_ci'][0]:.3f}, {r['auroc_ci'][1]:.3f}] | "
            f"{r['fpr95']:.3f} [{r['fpr95_ci'][0]:.3f}, {r['fpr95_ci'][1]:.3f}] | {r['realised_fpr']:.3f} | "
            f"{r['train_seconds']:.0f} | {target}: {'met' if met else 'missed'} |"
        )
    for r in rows:
        lines += ["", f"Selection, scenario `{r['scenario']}` ({r['selection']['scheme']}, "
                  f"{r['selection']['n_folds']} fold(s), {r['selection']['seconds']:.0f} s):", "",
                  "| candidate | validation AUROC | validation FPR95 | fit s (all folds) |", "| --- | --- | --- | --- |"]
        for c in r["selection"]["candidates"][:12]:
            mark = " (chosen)" if c["name"] == r["selection"]["winner"] else ""
            lines.append(f"| {c['name']}{mark} | {c['val_auroc']} | {c['val_fpr95']} | {c['fit_seconds']} |")
        if r["selection"].get("warning"):
            lines.append(f"\nWarning printed: {r['selection']['warning']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    from flows.data.text_data import default_clinc150_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path", type=Path, default=None)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--budget", default="default")
    parser.add_argument("--home", type=Path, default=None, help="EBMOPS_HOME to use (default: a new temporary folder)")
    parser.add_argument("--append-docs", action="store_true", help="append the table to docs/benchmarks.md")
    args = parser.parse_args()
    started = time.perf_counter()
    home = args.home or Path(tempfile.mkdtemp(prefix="ebmops-bench-"))
    work = home / "benchmark"
    paths = write_csvs(args.data_path or default_clinc150_path(), work / "csv")
    env = {**os.environ, "EBMOPS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    rows = []
    for name in args.scenarios.split(","):
        print(f"scenario {name}", flush=True)
        row = run_scenario(name, paths, env, work, args.budget)
        print(f"  winner {row['selection']['winner']}: test AUROC {row['auroc']:.4f}, FPR95 {row['fpr95']:.3f}", flush=True)
        rows.append(row)
    table = markdown(rows, args.budget, time.perf_counter() - started)
    print(table)
    if args.append_docs:
        with open(REPO / "docs" / "benchmarks.md", "a") as handle:
            handle.write("\n" + table)


if __name__ == "__main__":
    main()
