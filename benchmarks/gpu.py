"""GPU figures in one short call: training-step throughput and scoring rows/s, fp32 vs bf16 autocast,
torch.compile off/on, each checked against the CPU fp32 result for the same seed.

  .venv/bin/python benchmarks/gpu.py            # --quick (the default): a minute or two
  .venv/bin/python benchmarks/gpu.py --full     # more batch sizes and steps

Without CUDA it runs on the CPU and says so in its first line (those are CPU figures, not GPU ones);
on the CPU, --quick also leaves torch.compile out (inductor's C++ build takes minutes on a small
machine; --full includes it).

Energy: the library's MLP energy (384 inputs, the all-MiniLM-L6-v2 embedding width; 256x256 hidden),
built from seed 0. Training step: one persistent-CD step (20 Langevin steps on the batch, then the
loss, backward and Adam), the library's objective and sampler; the noise comes from a CPU generator,
so the device run draws the very noise the CPU reference draws. Checks ("max |dE|"): scoring, the
max absolute difference between the device's energies and the CPU fp32 energies of 2048 rows;
training, the same after the timed steps, between the device-trained and the CPU-trained energy.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ebm_core import LangevinSampler, MLPEnergy  # noqa: E402
from ebm_core.energies.mlp import MLPEnergyConfig  # noqa: E402
from ebm_core.objectives.contrastive_divergence import (  # noqa: E402
    PersistentContrastiveDivergence,
    replay_buffer_for,
)

DIM, HIDDEN, SEED, N_CHECK = 384, (256, 256), 0, 2048


def build_energy() -> MLPEnergy:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return MLPEnergy(MLPEnergyConfig(DIM, HIDDEN))


def rows(n: int) -> torch.Tensor:
    return torch.randn((n, DIM), generator=torch.Generator().manual_seed(SEED + 1))


def autocast_for(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def energies(model, x: torch.Tensor, device: torch.device, bf16: bool, batch: int = 4096) -> torch.Tensor:
    out = []
    with torch.no_grad(), autocast_for(device, bf16):
        for chunk in x.split(batch):
            out.append(model(chunk.to(device)).float().cpu())
    return torch.cat(out)


def scoring(device, batch_sizes, repeats: int, use_compile: bool, bf16: bool, reference: torch.Tensor) -> list[str]:
    energy = build_energy().to(device).eval()
    model = torch.compile(energy) if use_compile else energy
    check = rows(N_CHECK)
    diff = float((energies(model, check, device, bf16) - reference).abs().max())  # also the warm-up
    lines = []
    for batch in batch_sizes:
        x = rows(batch).to(device)
        with torch.no_grad(), autocast_for(device, bf16):
            model(x)  # warm-up (and compile) at this shape
            sync(device)
            started = time.perf_counter()
            for _ in range(repeats):
                model(x)
            sync(device)
        rate = batch * repeats / (time.perf_counter() - started)
        lines.append(f"score  batch {batch:>6}  {'bf16' if bf16 else 'fp32'}  compile {'on ' if use_compile else 'off'}"
                     f"  {rate:>12,.0f} rows/s  max|dE| vs CPU fp32 {diff:.2e}")
    return lines


def train_steps(device, batch: int, n_steps: int, use_compile: bool, bf16: bool):
    """Time n_steps PCD steps (after 2 warm-up steps); return (steps/s, trained energy on CPU)."""
    energy = build_energy().to(device)
    data = rows(max(4 * batch, 1024))
    generator = torch.Generator().manual_seed(SEED)
    buffer = replay_buffer_for(data, 4 * batch, 0.05, 0.25, generator)
    objective = PersistentContrastiveDivergence(LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=20), buffer, 0.01)
    model = torch.compile(energy) if use_compile else energy
    optimizer = torch.optim.Adam(energy.parameters(), lr=1e-4)
    data = data.to(device)

    def step():
        index = torch.randint(0, data.shape[0], (batch,), generator=generator).to(device)
        with autocast_for(device, bf16):
            output = objective(model, data[index], generator)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(n_steps):
        step()
    sync(device)
    rate = n_steps / (time.perf_counter() - started)
    return rate, copy.deepcopy(energy).cpu().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", default=True, help="short run (default)")
    mode.add_argument("--full", action="store_true", help="more batch sizes and steps")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else torch.device("cpu")
    if cuda:
        print(f"device: cuda ({torch.cuda.get_device_name(0)}), torch {torch.__version__}")
    else:
        torch.set_num_threads(1)
        print(f"device: cpu (NO CUDA DEVICE: these are CPU figures, not GPU figures), torch {torch.__version__}, "
              "1 thread")
    full = args.full
    score_batches = (256, 4096, 65536) if (full or cuda) else (256, 4096)
    train_batches = (128, 1024, 8192) if full else ((128, 1024) if cuda else (128,))
    n_steps = 20 if full else (10 if cuda else 3)
    repeats = 20 if cuda else 3
    compiles = (False, True) if (cuda or full) else (False,)
    if not compiles[-1]:
        print("torch.compile: left out on the CPU in --quick (use --full)")

    reference = energies(build_energy(), rows(N_CHECK), torch.device("cpu"), bf16=False)
    for use_compile in compiles:
        for bf16 in (False, True):
            try:
                for line in scoring(device, score_batches, repeats, use_compile, bf16, reference):
                    print(line, flush=True)
            except Exception as error:  # noqa: BLE001 - one line per failed configuration
                print(f"score  {'bf16' if bf16 else 'fp32'} compile {use_compile}: failed: {type(error).__name__}: {error}")

    check = rows(N_CHECK)
    for batch in train_batches:
        _, cpu_energy = train_steps(torch.device("cpu"), batch, n_steps, False, False)
        cpu_reference = energies(cpu_energy, check, torch.device("cpu"), bf16=False)
        for use_compile in compiles:
            for bf16 in (False, True):
                try:
                    rate, trained = train_steps(device, batch, n_steps, use_compile, bf16)
                    diff = float((energies(trained, check, torch.device("cpu"), False) - cpu_reference).abs().max())
                    print(f"train  batch {batch:>6}  {'bf16' if bf16 else 'fp32'}  compile {'on ' if use_compile else 'off'}"
                          f"  {rate:>10,.2f} steps/s  ({rate * batch:>10,.0f} rows/s)  "
                          f"max|dE| vs CPU fp32 after {n_steps + 2} steps {diff:.2e}", flush=True)
                except Exception as error:  # noqa: BLE001
                    print(f"train  batch {batch} {'bf16' if bf16 else 'fp32'} compile {use_compile}: failed: "
                          f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
