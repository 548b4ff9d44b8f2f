"""Where `ebmops demo`'s wall time goes: training vs everything else (issue 14).

Runs the installed `ebmops demo` (`.venv/bin/ebmops`) as a subprocess in a temporary EBMOPS_HOME
(sqlite MLflow, Prefect's temporary server: no server of ours), times the whole process, and reads
how long the pipeline spent training from the run folder:

- `stage_timings.json` (written by the pipeline for every run: seconds per stage, when the flow
  body started and ended; the CLI adds when it called the flow), or, for a run folder without it,
- `report.json`'s timings (`selection_seconds` + `train_seconds`) and the arrival time of Prefect's
  "Task run ... Finished" lines for the other stages.

Training is the fit itself: the selection stage's candidate fits (`selection_seconds`) plus the refit
of the winner (`train_seconds`), or the one detector's training when selection is off.

    .venv/bin/python benchmarks/demo_overhead.py            # one demo run, a table
    .venv/bin/python benchmarks/demo_overhead.py --runs 2   # two runs, one table each
    .venv/bin/python benchmarks/demo_overhead.py --quick    # `--objective dsm --steps 50`: seconds, not minutes

`demo_overhead(quick=False) -> dict` (used by benchmarks/speed.py) returns `wall_s`, `training_s`,
`overhead_share` = 1 - training_s / wall_s, `stages` (seconds per stage, in order), `cpu_s` (user +
system of the process and its children) and, for runs that record CPU per stage, `training_cpu_s`
and `cpu_overhead_share` (the same split in CPU seconds, steadier on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EBMOPS = ROOT / ".venv" / "bin" / "ebmops"
QUICK_ARGS = ("--objective", "dsm", "--steps", "50")
# Prefect's task names (flows/pipeline/train_and_register.py) -> the stage each belongs to, for run
# folders written before stage_timings.json existed.
_TASK_STAGE = {
    "load text": "load", "text checks": "validate", "embed": "embed", "load": "load", "validate": "validate",
    "plan selection": "selection", "candidate": "selection", "validation baselines": "selection",
    "choose": "selection", "train": "training", "refit winner": "refit", "calibrate": "calibrate",
    "evaluate": "evaluate", "register": "register",
}
_FINISHED = re.compile(r"Task run '(?P<name>[^']+?)(?:-[0-9a-f]{3})?' - Finished")
_FLOW_BEGINS = re.compile(r"Beginning flow run")


def demo_overhead(quick: bool = False, ebmops: str | os.PathLike | None = None,
                  extra_env: dict[str, str] | None = None) -> dict:
    """Run `ebmops demo` once in a fresh EBMOPS_HOME and split its wall time (see the module doc).

    ebmops: the command to run (default: this checkout's .venv/bin/ebmops); extra_env: added to the
    environment (e.g. PYTHONPATH of another checkout, to measure it with the same venv)."""
    command = [str(ebmops or DEFAULT_EBMOPS), "demo", "--no-progress", *(QUICK_ARGS if quick else ())]
    with tempfile.TemporaryDirectory(prefix="ebmops-demo-overhead-") as home:
        env = {**os.environ, "EBMOPS_HOME": home, **(extra_env or {})}
        for name in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "EBMOPS_DASK_ADDRESS"):
            env.pop(name, None)  # the embedded default: no server
        lines: list[tuple[float, str]] = []
        before = os.times()
        launched_at = time.time()
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=env, cwd=home, bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
        process.wait()
        wall = time.perf_counter() - start
        after = os.times()
        if process.returncode != 0:
            tail = "\n".join(line for _, line in lines[-20:])
            raise RuntimeError(f"`{' '.join(command)}` exited with status {process.returncode}:\n{tail}")
        runs = sorted((Path(home) / "runs").glob("*/report.json"))
        if len(runs) != 1:
            raise RuntimeError(f"expected one run folder with a report under {home}/runs, found {len(runs)}")
        run_dir = runs[0].parent
        result = _split(run_dir, lines, wall, launched_at)
    result["cpu_s"] = round((after.children_user - before.children_user) + (after.children_system - before.children_system), 3)
    # The same split in CPU seconds (the process, its threads and Prefect's server process): less
    # sensitive than wall time to other work on a shared machine. Needs the run's cpu_seconds.
    result["cpu_overhead_share"] = (
        None if result["training_cpu_s"] is None else round(1.0 - result["training_cpu_s"] / result["cpu_s"], 4)
    )
    result["command"] = " ".join(command)
    return result


def _split(run_dir: Path, lines: list[tuple[float, str]], wall: float, launched_at: float) -> dict:
    timings_path = run_dir / "stage_timings.json"
    if timings_path.exists():
        recorded = json.loads(timings_path.read_text())
        training = float(recorded["training_seconds"])
        flow_started = recorded["flow_started_at"] - launched_at
        flow_finished = recorded["flow_finished_at"] - launched_at
        stages: dict[str, float] = {}
        if "preloaded_at" in recorded:
            stages["start, imports, config"] = recorded["preloaded_at"] - launched_at
            stages["waiting for prefect's server"] = recorded["flow_called_at"] - recorded["preloaded_at"]
            stages["prefect start (flow call -> flow body)"] = recorded["flow_started_at"] - recorded["flow_called_at"]
        elif "flow_called_at" in recorded:
            stages["start, imports, config"] = recorded["flow_called_at"] - launched_at
            stages["prefect start (flow call -> flow body)"] = recorded["flow_started_at"] - recorded["flow_called_at"]
        else:
            stages["start, imports, prefect start"] = flow_started
        stages.update({name: float(s) for name, s in recorded["stages"].items()})
        stages["after the flow (summary, exit)"] = wall - flow_finished
        source = "stage_timings.json"
        cpu = recorded.get("cpu_seconds", {})
        training_cpu = sum(cpu.get(name, 0.0) for name in recorded.get("training_stages", [])) if cpu else None
    else:
        report = json.loads((run_dir / "report.json").read_text())
        timings = report["timings"]
        training = float(timings.get("selection_seconds", 0.0)) + float(timings.get("train_seconds", 0.0))
        stages = _stages_from_log(lines, wall)
        source = "report.json + log lines"
        training_cpu = None
    stages = {name: round(seconds, 3) for name, seconds in stages.items()}
    return {
        "wall_s": round(wall, 3),
        "training_s": round(training, 3),
        "overhead_s": round(wall - training, 3),
        "overhead_share": round(1.0 - training / wall, 4),
        "stages": stages,
        "source": source,
        "training_cpu_s": None if training_cpu is None else round(training_cpu, 3),
    }


def _stages_from_log(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Stage seconds from when Prefect's lines arrived (older run folders): each task's time is from the
    previous task's end to its own; the first runs from the flow's first line."""
    stages: dict[str, float] = {}
    flow_began = next((t for t, line in lines if _FLOW_BEGINS.search(line)), None)
    if flow_began is None:
        return {"whole process": wall}
    stages["start, imports, prefect start"] = flow_began
    previous = flow_began
    for t, line in lines:
        match = _FINISHED.search(line)
        if not match or t < flow_began:
            continue
        name = match.group("name")
        stage = _TASK_STAGE.get(name) or _TASK_STAGE.get(name.split(" ")[0], name)
        stages[stage] = stages.get(stage, 0.0) + (t - previous)
        previous = t
    stages["after the last task (summary, exit)"] = wall - previous
    return stages


def format_table(result: dict) -> str:
    wall = result["wall_s"]
    rows = [("stage", "seconds", "share")]
    rows += [(name, f"{s:.2f}", f"{s / wall:.1%}") for name, s in result["stages"].items()]
    rows += [("whole process (wall)", f"{wall:.2f}", "100.0%"),
             ("training (selection fits + refit)", f"{result['training_s']:.2f}", f"{result['training_s'] / wall:.1%}"),
             ("outside training", f"{result['overhead_s']:.2f}", f"{result['overhead_share']:.1%}")]
    width = max(len(r[0]) for r in rows)
    out = [f"{a:<{width}}  {b:>8}  {c:>6}" for a, b, c in rows]
    out.insert(1, "-" * len(out[0]))
    cpu_line = f"cpu (user+sys, the process and its children): {result['cpu_s']:.1f} s"
    if result.get("training_cpu_s") is not None:
        cpu_line += (f", of which training {result['training_cpu_s']:.1f} s: "
                     f"{result['cpu_overhead_share']:.1%} outside training")
    out.append(f"{cpu_line}; stages from {result['source']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="train one small detector (--objective dsm --steps 50)")
    parser.add_argument("--runs", type=int, default=1, help="how many demo runs (one table each)")
    parser.add_argument("--ebmops", default=None, help="the ebmops command (default: .venv/bin/ebmops)")
    parser.add_argument("--pythonpath", default=None, help="PYTHONPATH for the run (measure another checkout)")
    parser.add_argument("--json", action="store_true", help="print each result as one JSON line too")
    args = parser.parse_args(argv)
    extra_env = {"PYTHONPATH": args.pythonpath} if args.pythonpath else None
    for i in range(args.runs):
        result = demo_overhead(args.quick, args.ebmops, extra_env)
        print(f"run {i + 1}/{args.runs}: {result['command']}")
        print(format_table(result))
        if args.json:
            print(json.dumps(result))
        print(f"demo_overhead_share={result['overhead_share']:.3f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
