"""The feedback loop on CLINC150, simulated: does a guard that learns from what it missed miss less?

  .venv/bin/python benchmarks/feedback_loop.py [--data-path data_full.json] [--seeds 0,1]
      [--batches 12] [--batch-size 500] [--change-at 2] [--oos-share 0.2] [--feedback-share 0.1]
      [--cooldown 6] [--min-problems 20] [--budget fast] [--home DIR] [--append-docs]

1. The first champion is trained once, WITHOUT any out-of-scope example: `ebmops train --data train.csv
   --label-column intent --ood-test-data oos_eval.csv` (CLINC150 in-scope train; calibration and test
   rows split from it; the selection stage chooses on held-out classes; CLINC150 `oos_val` is the standing
   OOD evaluation set of the reports and gates, never training data); version 1 becomes champion
   through the bootstrap gates.
   Every seed starts from it (`ebmops rollback --to 1`, monitoring state and feedback store emptied).
2. Per seed, a stream of traffic batches (`--batch-size` rows) drawn from queries no training saw:
   in-scope queries of CLINC150 `test` and `val`, and from batch `--change-at` on a `--oos-share` of
   out-of-scope queries (`oos_test`, `oos_train`; each query used once). A random
   `--feedback-share` of each batch's rows carries feedback (1 = out-of-scope = a problem, 0 = fine).
3. Each batch is written into the traffic folder and `ebmops monitor` scores it with the champion
   (exit 1 = alarm); the monitor puts the rows with feedback into the feedback store. The same batch is
   scored in-process with the serving champion to count what it accepted, row by row (the truth never
   reaches ebmops except as the feedback of the sampled rows).
4. On an alarm, when no retrain ran in the last `--cooldown` batches and the store holds at least
   `--min-problems` confirmed problems outside the held-out newest batch (fewer would not change the
   guard), what the Prefect automation does unattended: `ebmops train ... --feedback` (confirmed problems
   -> known outliers and, from 100 on, half of them the selection's OOD validation set; confirmed-fine
   flagged queries -> in-distribution), then `ebmops promote` (the standing gates plus the feedback
   holdout gate on the newest batch's feedback); the challenger serves from the next batch if it passes.

Reported per seed and pooled: the missed-problem rate (out-of-scope queries the serving guard accepted
/ out-of-scope queries) on the batches after the change served by the first champion vs by a guard
retrained with feedback, with 95% Clopper-Pearson intervals; the in-scope flag rate in both phases (a
guard that flags everything would miss nothing); the delay from the change to the first alarm and from
that alarm to the new champion, in batches; the wall time of each retrain.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- feedback_loop.py:begin -->", "<!-- feedback_loop.py:end -->"
MODEL = "ebm-guard"
CHAMPION_URI = f"models:/{MODEL}@champion"


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    if n == 0:
        return (float("nan"), float("nan"))
    a = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def rate(k: int, n: int) -> str:
    if n == 0:
        return "- (0 rows)"
    low, high = clopper_pearson(k, n)
    return f"{k / n:.3f} [{low:.3f}, {high:.3f}] ({k}/{n})"


# --- data -----------------------------------------------------------------------------------------


def write_training_files(data: dict[str, pd.DataFrame], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    paths["train"] = out / "train.csv"
    data["train"].rename(columns={"label": "intent"}).to_csv(paths["train"], index=False)
    # the standing OOD evaluation set of the reports and the promotion gates (evaluation only, never
    # training); the stream draws its out-of-scope queries from oos_test and oos_train instead
    paths["oos_eval"] = out / "oos_eval.csv"
    data["oos_val"][["text"]].to_csv(paths["oos_eval"], index=False)
    return paths


SCENARIOS = ("out-of-scope", "new-intents")
PROBLEMS_SAID = {
    "out-of-scope": "CLINC150's out-of-scope queries (oos_test, oos_train); the champion is trained on all 150 intents.",
    "new-intents": "every query of {n} intents the champion was never trained on ({intents}); "
    "the champion is trained on the other intents.",
}


def scenario_data(data: dict[str, pd.DataFrame], args: argparse.Namespace) -> dict[str, pd.DataFrame]:
    """The splits with `problems`, the queries that are problems for the champion:
    - `out-of-scope`: CLINC150's oos_test and oos_train (diffuse: anything the assistant does not do);
    - `new-intents`: every query of `--new-intents` intents drawn with `--train-seed`, removed from the
      training data and from the in-scope stream (a topic the assistant was not built for, which users
      start asking about from the change on)."""
    data = dict(data)
    if args.scenario == "out-of-scope":
        data["problems"] = pd.concat([data["oos_test"], data["oos_train"]], ignore_index=True)
        return data
    intents = np.sort(data["train"]["label"].unique())
    if not 0 < args.new_intents < len(intents) - 2:
        raise SystemExit(f"--new-intents must be between 1 and {len(intents) - 3}, got {args.new_intents}")
    held = set(np.random.default_rng(args.train_seed).choice(intents, args.new_intents, replace=False).tolist())
    parts = []
    for split in ("train", "val", "test"):
        frame = data[split]
        is_new = frame["label"].isin(held)
        parts.append(frame[is_new])
        data[split] = frame[~is_new].reset_index(drop=True)
    data["problems"] = pd.concat(parts, ignore_index=True)
    data["new_intents"] = pd.DataFrame({"intent": sorted(held)})
    return data


@dataclass
class Batch:
    index: int
    frame: pd.DataFrame  # what the traffic file holds: text, timestamp, feedback (NaN = none)
    is_problem: np.ndarray  # the truth (out-of-scope), never written to the traffic file


def make_stream(data: dict[str, pd.DataFrame], args: argparse.Namespace, seed: int) -> list[Batch]:
    rng = np.random.default_rng(seed)
    pool = pd.concat([data["test"], data["val"]], ignore_index=True)  # in-scope queries no training saw
    in_scope = pool["text"].to_numpy()[rng.permutation(len(pool))]
    oos = data["problems"]["text"].to_numpy()
    oos = oos[rng.permutation(len(oos))]
    n_oos = int(round(args.oos_share * args.batch_size))
    need_oos = n_oos * max(0, args.batches - args.change_at)
    need_in = args.batches * args.batch_size - need_oos
    if need_oos > len(oos) or need_in > len(in_scope):
        raise SystemExit(
            f"the stream needs {need_in} in-scope and {need_oos} out-of-scope queries; CLINC150 has "
            f"{len(in_scope)} and {len(oos)}: fewer batches, smaller batches or a lower --oos-share"
        )
    start = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
    batches, used_in, used_oos = [], 0, 0
    for i in range(args.batches):
        k = n_oos if i >= args.change_at else 0
        texts = np.concatenate([in_scope[used_in : used_in + args.batch_size - k], oos[used_oos : used_oos + k]])
        problem = np.concatenate([np.zeros(args.batch_size - k, bool), np.ones(k, bool)])
        used_in, used_oos = used_in + args.batch_size - k, used_oos + k
        order = rng.permutation(args.batch_size)
        texts, problem = texts[order], problem[order]
        feedback = np.full(args.batch_size, np.nan)
        with_feedback = rng.random(args.batch_size) < args.feedback_share
        feedback[with_feedback] = problem[with_feedback].astype(float)
        stamps = [(start + _dt.timedelta(hours=i, seconds=j)).isoformat() for j in range(args.batch_size)]
        frame = pd.DataFrame({"timestamp": stamps, "text": texts, "feedback": feedback})
        batches.append(Batch(i, frame, problem))
    return batches


# --- running ebmops -------------------------------------------------------------------------------


def ebmops(args: list[str], env: dict, log: Path, ok_codes: tuple[int, ...] = (0,)) -> int:
    command = [str(REPO / ".venv" / "bin" / "ebmops"), *args]
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code not in ok_codes:
        raise SystemExit(f"`ebmops {' '.join(args)}` exited {code}; see {log}")
    return code


def champion_version(env: dict) -> str:
    os.environ.update({k: env[k] for k in ("EBMOPS_HOME",)})
    from flows.guard import registry

    registry.configure_tracking()
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(MODEL, "champion").version)


def training_problems() -> int:
    """Confirmed problems a retrain would learn from now (the newest batch is held out)."""
    from flows.monitoring.feedback_store import FeedbackStore

    return len(FeedbackStore.for_model(MODEL).snapshot(holdout_batches=1).problems)


def flags_of(version: str, frame: pd.DataFrame, cache: dict) -> np.ndarray:
    from flows.guard.guard import Guard

    key = (os.environ["EBMOPS_HOME"], version)  # version numbers repeat across the seeds' registries
    if key not in cache:
        cache.clear()
        cache[key] = Guard.load(f"models:/{MODEL}/{version}")
    scored = cache[key].score(frame[["text"]])
    return scored["is_ood"].to_numpy(dtype=bool)


@dataclass
class SeedResult:
    seed: int
    first_alarm: int | None = None
    first_promotion_batch: int | None = None  # the first batch served by a retrained guard
    retrains: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # per batch: version, problems, missed, in-scope, flagged


def train_champion(files: dict[str, Path], args: argparse.Namespace, home: Path) -> tuple[dict, list[str]]:
    """The first champion, trained once for every seed: CLINC150 in-scope train only (calibration and
    test rows split from it), no out-of-scope example; version 1 becomes champion through the bootstrap gates."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "EBMOPS_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    config = home / "pipeline.yaml"
    config.write_text(f"seed: {args.train_seed}\n")
    train_args = [
        "train", "--data", str(files["train"]), "--label-column", "intent", "--ood-test-data", str(files["oos_eval"]),
        "--config", str(config), "--budget", args.budget, "--no-progress",
    ]
    if champion_or_none(env) is None:
        t0 = time.perf_counter()
        ebmops(train_args, env, home / "commands.log")
        print(f"champion trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return env, train_args


def champion_or_none(env: dict) -> str | None:
    try:
        return champion_version(env)
    except Exception:  # no model or no champion yet
        return None


def reset_to_first_champion(env: dict, home: Path, seed: int) -> None:
    """Each seed starts where the first did: version 1 champion, no monitoring state, no feedback."""
    import shutil

    if champion_version(env) != "1":
        ebmops(["rollback", "--model", MODEL, "--to", "1", "--actor", "feedback-loop-benchmark",
                "--reason", f"benchmark: seed {seed} starts from the first champion"], env, home / "commands.log")
    for folder in ("monitoring", "feedback", f"traffic-{seed}"):
        shutil.rmtree(home / folder, ignore_errors=True)


def run_seed(seed: int, data: dict, env: dict, train_args: list[str], args: argparse.Namespace, home: Path) -> SeedResult:
    reset_to_first_champion(env, home, seed)
    log = home / "commands.log"
    result = SeedResult(seed)
    traffic = home / f"traffic-{seed}"
    traffic.mkdir(exist_ok=True)
    cache: dict = {}
    last_retrain = None
    for batch in make_stream(data, args, seed):
        version = champion_version(env)
        flagged = flags_of(version, batch.frame, cache)
        problem = batch.is_problem
        result.rows.append({
            "batch": batch.index, "version": version,
            "problems": int(problem.sum()), "missed": int((problem & ~flagged).sum()),
            "in_scope": int((~problem).sum()), "in_scope_flagged": int((~problem & flagged).sum()),
        })
        batch.frame.to_csv(traffic / f"batch-{batch.index:03d}.csv", index=False)
        code = ebmops(["monitor", str(traffic), "--model-uri", CHAMPION_URI], env, log, ok_codes=(0, 1))
        alarm = code == 1
        print(f"seed {seed} batch {batch.index:2d}: v{version} missed {result.rows[-1]['missed']}/"
              f"{result.rows[-1]['problems']} flagged in-scope {result.rows[-1]['in_scope_flagged']}/"
              f"{result.rows[-1]['in_scope']}{'  ALARM' if alarm else ''}", flush=True)
        if alarm and result.first_alarm is None and batch.index >= args.change_at:
            result.first_alarm = batch.index
        cooled = last_retrain is None or batch.index - last_retrain >= args.cooldown
        if alarm and cooled and batch.index >= args.change_at and training_problems() >= args.min_problems:
            # what the Prefect automation does unattended: retrain on the data plus the feedback snapshot
            # (the newest batch's feedback held out), then promote on the gates, that holdout included
            t0 = time.perf_counter()
            ebmops([*train_args, "--feedback"], env, log)
            seconds = time.perf_counter() - t0
            from mlflow import MlflowClient

            challenger = MlflowClient().get_model_version_by_alias(MODEL, "challenger")
            code = ebmops(["promote", "--model", MODEL, "--actor", "feedback-loop-benchmark",
                           "--reason", f"retrained on feedback after the alarm at batch {batch.index}"],
                          env, log, ok_codes=(0, 1, 2))
            promoted = champion_version(env) == str(challenger.version)
            entry = {"alarm": batch.index, "version": str(challenger.version), "train_s": round(seconds, 1),
                     "snapshot": challenger.tags.get("ebmops.feedback_snapshot"), "promoted": promoted,
                     "promote_exit": code}
            result.retrains.append(entry)
            last_retrain = batch.index
            if promoted and result.first_promotion_batch is None:
                result.first_promotion_batch = batch.index + 1
            print(f"seed {seed}: retrained with feedback after batch {batch.index}: v{entry['version']} "
                  f"in {seconds:.0f} s, {'promoted' if promoted else 'NOT promoted'}", flush=True)
    return result


# --- summary --------------------------------------------------------------------------------------


def phase_counts(result: SeedResult, args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """After the change: batches served by the first champion (version 1) vs by a retrained guard."""
    phases = {"first champion": {}, "retrained": {}}
    for row in result.rows:
        if row["batch"] < args.change_at:
            continue
        phase = phases["first champion" if row["version"] == "1" else "retrained"]
        for key in ("problems", "missed", "in_scope", "in_scope_flagged"):
            phase[key] = phase.get(key, 0) + row[key]
    return phases


def render(results: list[SeedResult], args: argparse.Namespace, wall_s: float, command: str) -> str:
    lines = [
        f"Date: {_dt.date.today().isoformat()}. 2-core CPU, shared. Command: `{command}`",
        f"Problems: {PROBLEMS_SAID[args.scenario].format(n=args.new_intents, intents=', '.join(args.held_intents))}",
        f"Stream: {args.batches} batches of {args.batch_size} queries; problem share {args.oos_share} from batch "
        f"{args.change_at} on; feedback on {args.feedback_share:.0%} of the rows; retrain cool-down {args.cooldown} "
        f"batches; selection budget `{args.budget}`. Total {wall_s:.0f} s.",
        "",
        "Missed-problem rate = problems the serving guard accepted / problems, on the "
        "batches after the change (95% Clopper-Pearson intervals); in-scope flag rate = other queries "
        "flagged / other queries on the same batches.",
        "",
        "| seed | missed, first champion | missed, retrained on feedback | in-scope flagged, first | in-scope flagged, retrained | change -> alarm | alarm -> new champion | retrains (alarm batch: version, train s, promoted) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    pooled = {"first champion": {}, "retrained": {}}
    for r in results:
        phases = phase_counts(r, args)
        for name, counts in phases.items():
            for key, value in counts.items():
                pooled[name][key] = pooled[name].get(key, 0) + value
        first, later = phases["first champion"], phases["retrained"]
        alarm_delay = "-" if r.first_alarm is None else str(r.first_alarm - args.change_at)
        promo_delay = "-" if r.first_promotion_batch is None or r.first_alarm is None else str(
            r.first_promotion_batch - r.first_alarm)
        retrains = "; ".join(
            f"{e['alarm']}: v{e['version']}, {e['train_s']:.0f} s, {'yes' if e.get('promoted') else 'no'}"
            for e in r.retrains) or "-"
        lines.append(
            f"| {r.seed} | {rate(first.get('missed', 0), first.get('problems', 0))} | "
            f"{rate(later.get('missed', 0), later.get('problems', 0))} | "
            f"{rate(first.get('in_scope_flagged', 0), first.get('in_scope', 0))} | "
            f"{rate(later.get('in_scope_flagged', 0), later.get('in_scope', 0))} | {alarm_delay} | {promo_delay} | {retrains} |"
        )
    first, later = pooled["first champion"], pooled["retrained"]
    lines.append(
        f"| pooled | {rate(first.get('missed', 0), first.get('problems', 0))} | "
        f"{rate(later.get('missed', 0), later.get('problems', 0))} | "
        f"{rate(first.get('in_scope_flagged', 0), first.get('in_scope', 0))} | "
        f"{rate(later.get('in_scope_flagged', 0), later.get('in_scope', 0))} | | | |"
    )
    lines += ["", "Per batch (seed: version serving, missed / problems):", ""]
    for r in results:
        cells = [f"{row['batch']}: v{row['version']} {row['missed']}/{row['problems']}" for row in r.rows]
        lines.append(f"- seed {r.seed}: " + ", ".join(cells))
    return "\n".join(lines)


def write_docs(table: str, scenario: str) -> None:
    begin, end = (BEGIN, END) if scenario == "out-of-scope" else (
        BEGIN.replace(":begin", f"[{scenario}]:begin"), END.replace(":end", f"[{scenario}]:end"))
    text = DOCS.read_text()
    block = f"{begin}\n{table}\n{end}"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    elif BEGIN in text:  # a second scenario's block goes right after the first one's
        head, rest = text.split(END, 1)
        text = head + END + "\n\n" + block + rest
    else:
        text = text.rstrip() + "\n\n## The feedback loop on CLINC150 (benchmarks/feedback_loop.py)\n\n" + block + "\n"
    DOCS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-path", type=Path, default=REPO.parent / "shared/datasets/clinc150/data_full.json")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--change-at", type=int, default=2)
    parser.add_argument("--oos-share", type=float, default=0.2)
    parser.add_argument("--feedback-share", type=float, default=0.1)
    parser.add_argument("--budget", default="fast")
    parser.add_argument("--train-seed", type=int, default=0, help="seed of every training run (the stream's seed varies)")
    parser.add_argument("--cooldown", type=int, default=6)
    parser.add_argument("--min-problems", type=int, default=20,
                        help="retrain on an alarm only once the store holds this many confirmed problems outside the holdout")
    parser.add_argument("--scenario", choices=SCENARIOS, default="out-of-scope",
                        help="what the problems are: CLINC150's out-of-scope queries, or the queries of --new-intents "
                             "intents the champion was never trained on (a new topic users start asking about)")
    parser.add_argument("--new-intents", type=int, default=10, help="how many intents the new-intents scenario holds out")
    parser.add_argument("--home", type=Path, default=None, help="folder for the seeds' homes (default: a new /tmp folder)")
    parser.add_argument("--append-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    import tempfile

    from flows.data.text_data import load_clinc150

    base = args.home or Path(tempfile.mkdtemp(prefix="ebmops-feedback-loop-"))
    base.mkdir(parents=True, exist_ok=True)
    data = scenario_data(load_clinc150(args.data_path), args)
    args.held_intents = data["new_intents"]["intent"].tolist() if "new_intents" in data else []
    files = write_training_files(data, base / "files")
    t0 = time.perf_counter()
    env, train_args = train_champion(files, args, base / "home")
    results = [run_seed(int(s), data, env, train_args, args, base / "home") for s in args.seeds.split(",")]
    (base / "results.json").write_text(json.dumps([r.__dict__ for r in results], indent=1, default=str))
    command = " ".join([".venv/bin/python benchmarks/feedback_loop.py", *sys.argv[1:]])
    table = render(results, args, time.perf_counter() - t0, command)
    print(table)
    if args.append_docs:
        write_docs(table, args.scenario)


if __name__ == "__main__":
    main()
