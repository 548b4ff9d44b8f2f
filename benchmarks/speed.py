"""Speed benchmark: CD training step vs torchebm, the Langevin chain vs a hand-written loop, scoring vs a
raw forward pass; side by side in one run, one torch thread.

Every row times two things that do the same work, in interleaved pairs (A then B, then B then A, ...),
and reports the median of the per-pair ratios with its min and max, so a busy shared machine moves
both halves of a pair alike.

- train: one contrastive-divergence step (CD-k chains from the data batch, K Langevin steps, loss with
  the energy L2 penalty, backward, Adam step) of the same MLP 64-128-128-1 (SiLU), same batch, same K,
  step size, noise and generator seed, ebmops (`ContrastiveDivergence` + `LangevinSampler`) vs torchebm
  0.8.9 (`losses.ContrastiveDivergence` + `samplers.LangevinDynamics`). The script first checks both
  draw the same negatives from the same start (max |difference| printed). Skipped if torchebm is not
  installed (`pip install torchebm==0.8.9 --no-deps`; the `speed` extra).
- langevin: `LangevinSampler` run as CD runs it (`sample_negatives`: parameters frozen) vs the floor,
  a hand-written loop (forward, autograd of the input, update) on the same network, batch and noise.
- score: `EnergyDetector.score` on N float64 rows vs the floor, a raw forward pass of the network on the
  already standardised float32 rows under `torch.inference_mode`.
- serve (optional): `benchmarks/serving.py`'s `tensor_serving_figures()` (starts its own server on loopback);
  `--no-serve` skips it. demo (optional): `benchmarks/demo_overhead.py`'s `demo_overhead()` (runs
  `ebmops demo`); `--no-demo` skips it. Either prints nan and a note when its function is not there.

Times are the process's CPU time by default (`--clock cpu`: one torch thread, so CPU time is the time the
work took, without the time the process waited for a core on a busy machine); `--clock wall` for wall time.

    .venv/bin/python benchmarks/speed.py              # prints the table, writes it into docs/benchmarks.md
    .venv/bin/python benchmarks/speed.py --no-docs    # prints only
    .venv/bin/python benchmarks/speed.py --no-docs --no-serve --no-demo --quick   # ~1 minute
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ebm_core.energies.mlp import MLPEnergy, MLPEnergyConfig  # noqa: E402
from ebm_core.objectives.contrastive_divergence import ContrastiveDivergence, sample_negatives  # noqa: E402
from ebm_core.samplers.langevin import LangevinSampler  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- speed.py:begin -->", "<!-- speed.py:end -->"
STEP_SIZE, NOISE_SCALE, ENERGY_L2, LR = 0.01, 0.1, 0.01, 1e-4
HIDDEN = (128, 128)


def mlp(input_dim: int, seed: int = 0) -> MLPEnergy:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLPEnergy(MLPEnergyConfig(input_dim, HIDDEN))


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]  # set by main() from --clock


def timed(fn, n: int) -> float:
    t0 = clock()
    for _ in range(n):
        fn()
    return (clock() - t0) / n


def calibrate_reps(fn, target_s: float) -> int:
    fn()
    one = timed(fn, 1)
    return max(1, int(target_s / max(one, 1e-6)))


def pairs(fn_a, fn_b, n_pairs: int, target_s: float) -> list[tuple[float, float]]:
    """(seconds per call of a, of b) for n_pairs interleaved pairs; the order alternates each pair."""
    reps = max(calibrate_reps(fn_a, target_s), 1)
    calibrate_reps(fn_b, target_s)
    out = []
    for i in range(n_pairs):
        if i % 2 == 0:
            ta = timed(fn_a, reps)
            tb = timed(fn_b, reps)
        else:
            tb = timed(fn_b, reps)
            ta = timed(fn_a, reps)
        out.append((ta, tb))
    return out


def summary(ratios: list[float]) -> tuple[float, float, float]:
    return statistics.median(ratios), min(ratios), max(ratios)


# ---- train: ebmops vs torchebm ------------------------------------------------------------------------
def torchebm_side(energy: MLPEnergy, k: int):
    """torchebm's CD-k on a copy of the same network (None when torchebm is not installed)."""
    try:
        import torchebm  # noqa: F401
        from torchebm.core import BaseModel
        from torchebm.losses import ContrastiveDivergence as TebmCD
        from torchebm.samplers import LangevinDynamics
    except ImportError:
        return None

    class Wrapped(BaseModel):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x).squeeze(-1)

    model = Wrapped(copy.deepcopy(energy.net))
    sampler = LangevinDynamics(model, step_size=STEP_SIZE, noise_scale=NOISE_SCALE)
    loss = TebmCD(model, sampler, k_steps=k, energy_reg_weight=ENERGY_L2)
    return model, sampler, loss


def train_row(batch: int, k: int, n_pairs: int, target_s: float):
    energy = mlp(64)
    x = torch.randn(batch, 64, generator=torch.Generator().manual_seed(1))
    sampler = LangevinSampler(step_size=STEP_SIZE, noise_scale=NOISE_SCALE, n_steps=k)
    objective = ContrastiveDivergence(sampler, k=k, energy_l2=ENERGY_L2)
    side = torchebm_side(energy, k)
    if side is None:
        return None
    model, tebm_sampler, tebm_loss = side

    # Same work: same start, same noise stream -> the same negatives and the same loss.
    ours = sample_negatives(sampler, energy, x, torch.Generator().manual_seed(7), n_steps=k).samples
    theirs = tebm_sampler.sample(x=x, n_steps=k, generator=torch.Generator().manual_seed(7))
    same_samples = float((ours - theirs).abs().max())
    loss_ours = objective(energy, x, torch.Generator().manual_seed(7)).loss
    loss_theirs, _ = tebm_loss(x, generator=torch.Generator().manual_seed(7))
    same_loss = abs(float(loss_ours.detach()) - float(loss_theirs.detach()))

    opt_a = torch.optim.Adam(energy.parameters(), lr=LR)
    opt_b = torch.optim.Adam(model.parameters(), lr=LR)
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)

    def step_ebmops():
        opt_a.zero_grad(set_to_none=True)
        objective(energy, x, gen_a).loss.backward()
        opt_a.step()

    def step_torchebm():
        opt_b.zero_grad(set_to_none=True)
        loss, _ = tebm_loss(x, generator=gen_b)
        loss.backward()
        opt_b.step()

    result = pairs(step_ebmops, step_torchebm, n_pairs, target_s)
    ratios = [tb / ta for ta, tb in result]  # samples/s ebmops / samples/s torchebm
    ta = statistics.median(a for a, _ in result)
    tb = statistics.median(b for _, b in result)
    return {
        "what": f"train CD-{k} step, B={batch}",
        "a": f"{batch / ta:,.0f} samples/s",
        "b": f"{batch / tb:,.0f} samples/s (torchebm)",
        "ratio": summary(ratios),
        "note": f"same negatives max|diff| {same_samples:.1e}, loss |diff| {same_loss:.1e}",
    }


# ---- langevin: sampler vs a hand-written loop -----------------------------------------------------------
def langevin_row(batch: int, k: int, n_pairs: int, target_s: float):
    energy = mlp(64)
    x0 = torch.randn(batch, 64, generator=torch.Generator().manual_seed(1))
    sampler = LangevinSampler(step_size=STEP_SIZE, noise_scale=NOISE_SCALE, n_steps=k)
    noise_std = NOISE_SCALE * math.sqrt(2.0 * STEP_SIZE)
    net = energy.net

    def floor(generator):
        x = x0.clone()
        for _ in range(k):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(net(x).sum(), x)
            x = x.detach() - STEP_SIZE * grad + noise_std * torch.randn(x.shape, generator=generator)
        return x

    def floor_frozen(generator):
        flags = [p.requires_grad for p in net.parameters()]
        for p in net.parameters():
            p.requires_grad_(False)
        try:
            return floor(generator)
        finally:
            for p, flag in zip(net.parameters(), flags):
                p.requires_grad_(flag)

    ours = sample_negatives(sampler, energy, x0, torch.Generator().manual_seed(7)).samples
    same = float((ours - floor_frozen(torch.Generator().manual_seed(7))).abs().max())
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    result = pairs(
        lambda: sample_negatives(sampler, energy, x0, gen_a), lambda: floor_frozen(gen_b), n_pairs, target_s
    )
    ratios = [ta / tb for ta, tb in result]  # time ebmops / time floor (lower is better)
    ta = statistics.median(a for a, _ in result)
    tb = statistics.median(b for _, b in result)
    return {
        "what": f"Langevin chain K={k}, B={batch}",
        "a": f"{ta * 1e3:.2f} ms",
        "b": f"{tb * 1e3:.2f} ms (hand-written loop)",
        "ratio": summary(ratios),
        "note": f"time ratio, lower is better; same samples max|diff| {same:.1e}",
    }


# ---- score: EnergyDetector.score vs a raw forward pass --------------------------------------------------
def fitted_detector(n_features: int):
    from ebm_core.detectors.energy import EnergyDetector
    from ebm_core.detectors.energy_config import DetectorConfig
    from ebm_core.objectives.denoising_score_matching import DSMConfig
    from ebm_core.training import TrainConfig

    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(512, n_features)) * rng.uniform(0.5, 3.0, n_features) + rng.normal(size=n_features)
    config = DetectorConfig(
        hidden_dims=HIDDEN, objective=DSMConfig(), train=TrainConfig(n_steps=3, batch_size=64, log_every=1)
    )
    return EnergyDetector(config).fit(x_train, seed=0), rng


def score_row(n_features: int, n_rows: int, n_pairs: int, target_s: float):
    detector, rng = fitted_detector(n_features)
    x = rng.normal(size=(n_rows, n_features)) * 2.0  # float64, what a caller hands score()
    xs = torch.as_tensor((x - detector.mean_) / detector.scale_, dtype=torch.float32)
    net = detector.energy_.net

    def floor():
        with torch.inference_mode():
            return net(xs).squeeze(-1)

    same = float(np.abs(detector.score(x) - floor().double().numpy()).max())
    result = pairs(lambda: detector.score(x), floor, n_pairs, target_s)
    ratios = [tb / ta for ta, tb in result]  # rows/s score / rows/s forward
    ta = statistics.median(a for a, _ in result)
    tb = statistics.median(b for _, b in result)
    return {
        "what": f"score {n_rows // 1000}k x {n_features}",
        "a": f"{n_rows / ta / 1e6:.2f}M rows/s",
        "b": f"{n_rows / tb / 1e6:.2f}M rows/s (raw forward)",
        "ratio": summary(ratios),
        "note": f"rows/s ratio; vs raw forward max|diff| {same:.1e}",
    }


# ---- optional rows: served guard latency, demo overhead (their own scripts) -----------------------------
def optional_figures(module: str, function: str, quick: bool) -> tuple[dict | None, str]:
    """`benchmarks/<module>.py`'s `function(quick=...)` -> (its dict, ""), or (None, why not)."""
    import importlib

    try:
        fn = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as error:
        return None, f"benchmarks/{module}.py has no {function}() here ({type(error).__name__})"
    try:
        return fn(quick=quick), ""
    except Exception as error:  # a failed optional row is reported, the speed rows still print
        return None, f"benchmarks/{module}.py {function}() failed: {type(error).__name__}: {error}"[:200]


def serve_row(figures: dict | None, note: str) -> tuple[str, float]:
    if figures is None:
        return f"| serving p50 (one row, reused connection) | - | - | nan | {note} |", math.nan
    p50 = float(figures["p50_ms"])
    text = figures.get("text_p50_ms")
    cells = (
        f"p50 {p50:.2f} ms, p99 {float(figures['p99_ms']):.2f} ms, "
        f"{float(figures['batch_rows_per_s']):,.0f} rows/s in 1000-row batches"
    )
    extra = f"; text guard one-query p50 {float(text):.2f} ms" if text is not None else ""
    line = f"| serving p50 (one row, reused connection) | {cells} | target p50 <= 4 ms, p99 <= 10 ms | {p50:.2f} |"
    return f"{line} benchmarks/serving.py{extra} |", p50


def demo_row(figures: dict | None, note: str) -> tuple[str, float]:
    if figures is None:
        return f"| demo overhead share | - | - | nan | {note} |", math.nan
    share = float(figures["overhead_share"])
    cells = f"wall {float(figures['wall_s']):.1f} s, training {float(figures['training_s']):.1f} s"
    note = "share of `ebmops demo` wall time outside training (benchmarks/demo_overhead.py)"
    return f"| demo overhead share | {cells} | - | {share:.2f} | {note} |", share


def render(rows: list[dict], skipped: list[str], final: str, command: str, extra_rows: list[str]) -> str:
    lines = [
        f"Date: {date.today().isoformat()}. {platform.machine()} CPU, {torch.get_num_threads()} torch thread, "
        f"torch {torch.__version__}, {'CPU time of the process' if clock is time.process_time else 'wall time'}; "
        "the machine was shared with other jobs (ratios of interleaved pairs).",
        f"Command: `{command}`",
        "",
        "| what | ebmops | reference | ratio median [min, max] | note |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        med, lo, hi = row["ratio"]
        lines.append(f"| {row['what']} | {row['a']} | {row['b']} | {med:.2f} [{lo:.2f}, {hi:.2f}] | {row['note']} |")
    for line in skipped:
        lines.append(f"| {line} | - | - | - | skipped |")
    lines += [
        *extra_rows,
        "",
        "train: samples/s ebmops / torchebm (higher is better, target >= 1.5); langevin: time ebmops / hand-written "
        "loop (lower is better, target <= 1.2); score: rows/s score() / raw forward (target >= 0.85). The final "
        "line gives the worst case of each.",
        "",
        f"`{final}`",
    ]
    return "\n".join(lines)


def write_docs(table: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Speed (benchmarks/speed.py)\n\n" + block + "\n"
    DOCS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="interleaved pairs per row")
    parser.add_argument("--target-s", type=float, default=0.25, help="seconds per half of a pair")
    parser.add_argument("--rows", type=int, default=100_000, help="rows scored")
    parser.add_argument("--no-docs", action="store_true", help="do not write the table into docs/benchmarks.md")
    parser.add_argument("--no-serve", action="store_true", help="skip the served-guard row (benchmarks/serving.py)")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo row (benchmarks/demo_overhead.py)")
    parser.add_argument("--quick", action="store_true", help="3 pairs of 0.1 s per row; quick serve/demo figures")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="what a time is (default: cpu)")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.target_s = min(args.pairs, 3), min(args.target_s, 0.1)
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(1)
    command = ".venv/bin/python benchmarks/speed.py" + "".join(f" {a}" for a in sys.argv[1:])

    rows, skipped = [], []
    train_ratios, langevin_ratios, score_ratios = [], [], []
    for batch in (256, 1024):
        for k in (10, 30):
            row = train_row(batch, k, args.pairs, args.target_s)
            if row is None:
                note = "torchebm is not installed (pip install torchebm==0.8.9 --no-deps)"
                skipped.append(f"train CD-{k} B={batch}: {note}")
                continue
            rows.append(row)
            train_ratios.append(row["ratio"][0])
            print(row, flush=True)
    for batch in (256, 1024):
        row = langevin_row(batch, 20, args.pairs, args.target_s)
        rows.append(row)
        langevin_ratios.append(row["ratio"][0])
        print(row, flush=True)
    for n_features in (64, 384):
        row = score_row(n_features, args.rows, args.pairs, args.target_s)
        rows.append(row)
        score_ratios.append(row["ratio"][0])
        print(row, flush=True)

    sys.path.insert(0, str(ROOT / "benchmarks"))
    serve, serve_note = (None, "skipped (--no-serve)") if args.no_serve else optional_figures(
        "serving", "tensor_serving_figures", args.quick
    )
    demo, demo_note = (None, "skipped (--no-demo)") if args.no_demo else optional_figures(
        "demo_overhead", "demo_overhead", args.quick
    )
    serve_line, serve_p50 = serve_row(serve, serve_note)
    demo_line, demo_share = demo_row(demo, demo_note)
    for line in (serve_line, demo_line):
        print(line, flush=True)

    def worst(values, pick):
        return f"{pick(values):.2f}" if values else "nan"

    def figure(value: float) -> str:
        return "nan" if math.isnan(value) else f"{value:.2f}"

    final = (
        f"train_vs_torchebm={worst(train_ratios, min)} langevin_vs_floor={worst(langevin_ratios, max)} "
        f"score_vs_forward={worst(score_ratios, min)} serve_p50_ms={figure(serve_p50)} "
        f"demo_overhead_share={figure(demo_share)}"
    )
    table = render(rows, skipped, final, command, [serve_line, demo_line])
    print()
    print(table)
    if not args.no_docs:
        write_docs(table)
        print(f"\nwrote the table into {DOCS.relative_to(ROOT)}")
    print(final)


if __name__ == "__main__":
    main()
