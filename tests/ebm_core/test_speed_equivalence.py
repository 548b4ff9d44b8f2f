"""The fast paths (Langevin chain, CD loss, chunked scoring) give what the previous code gave.

The references below are copies of the code before the speed change: the per-step autograd Langevin
loop with its checks, the two-forward CD loss, and score's whole-array float64 standardisation.

Tolerances: the Langevin update is now fused (x + alpha * g in one kernel, which may use a fused
multiply-add: one rounding instead of two) and the CD loss runs one forward over both batches (the
matrix products may block differently), so values can differ in the last float32 bits; over 20
chain steps of a smooth network that stays far below 1e-5. The input gradient itself is the same
operations autograd runs and the scoring chunk standardises in float64 as before, so those are
compared to float32 rounding (1e-6); with the BLAS products `nn.Linear` runs (oneDNN switched off) the
input gradient is autograd's to the bit. The MLP's hidden-layer products in the chain, in the CD loss
(`first_order_forward`, a hand-written backward) and in scoring (`unchecked_forward` without autograd) go
through oneDNN where torch has it: the same sums by another kernel, so equal up to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ebm_core.detectors.energy import EnergyDetector
from ebm_core.detectors.energy_config import DetectorConfig
from ebm_core.detectors.trained import SCORE_BATCH_SIZE
from ebm_core.energies.gaussian import GaussianEnergy
from ebm_core.energies.mlp import MLPEnergy, MLPEnergyConfig
from ebm_core.errors import NonFiniteError
from ebm_core.objectives.contrastive_divergence import ContrastiveDivergence, sample_negatives
from ebm_core.objectives.denoising_score_matching import DSMConfig
from ebm_core.samplers.base import chain_energy_and_grad, energy_and_grad
from ebm_core.samplers.langevin import LangevinSampler
from ebm_core.training import TrainConfig


# ---- references: the code before the change -------------------------------------------------------------
def reference_langevin(sampler: LangevinSampler, energy_fn, x_init, generator, n_steps=None):
    x = x_init.detach().clone()
    noise_std = sampler.noise_scale * math.sqrt(2.0 * sampler.step_size)
    energy_trace, grad_norm_trace = [], []
    for _ in range(n_steps or sampler.n_steps):
        energy, grad = energy_and_grad(energy_fn, x)
        grad_norm = grad.norm(dim=1, keepdim=True)
        if not torch.isfinite(grad_norm).all():
            raise NonFiniteError("Langevin sampler: energy gradient became non-finite")
        if sampler.grad_clip is not None:
            grad = grad * torch.clamp(sampler.grad_clip / (grad_norm + 1e-12), max=1.0)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x - sampler.step_size * grad + noise_std * noise
        if sampler.clamp is not None:
            x = x.clamp(*sampler.clamp)
        energy_trace.append(float(energy.mean()))
        grad_norm_trace.append(float(grad_norm.mean()))
    return x.detach(), energy_trace, grad_norm_trace


def reference_cd_loss(energy_fn, x_data, samples, energy_l2):
    e_pos, e_neg = energy_fn(x_data), energy_fn(samples)
    return e_pos.mean() - e_neg.mean() + energy_l2 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())


def reference_score(detector, x):
    rows = torch.as_tensor((np.asarray(x, dtype=np.float64) - detector.mean_) / detector.scale_, dtype=torch.float32)
    with torch.no_grad():
        chunks = [detector.energy_(rows[s : s + SCORE_BATCH_SIZE]) for s in range(0, rows.shape[0], SCORE_BATCH_SIZE)]
    return torch.cat(chunks).double().numpy()


def mlp(input_dim=8, hidden=(32, 32), seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLPEnergy(MLPEnergyConfig(input_dim, hidden))


# ---- Langevin -----------------------------------------------------------------------------------------
def test_mlp_input_gradient_equals_autograd():
    energy = mlp()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    fast = energy.input_gradient_fn()
    assert callable(fast), "a plain MLP (no spectral norm, no hooks) must offer the hand-written input gradient"
    e_fast, g_fast = fast(x)
    assert e_fast.shape == (64,) and g_fast.shape == (64, 8)
    e_ref, g_ref = energy_and_grad(energy, x)
    torch.testing.assert_close(e_fast, e_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-6, atol=1e-7)


def test_mlp_input_gradient_with_blas_products_equals_autograd_to_the_bit(monkeypatch):
    energy = mlp()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # the products nn.Linear runs
    assert energy.first_order_forward() is None
    e_fast, g_fast = energy.input_gradient_fn()(x)
    monkeypatch.undo()
    e_ref, g_ref = energy_and_grad(energy, x)
    torch.testing.assert_close(e_fast, e_ref, rtol=0, atol=0)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("x_requires_grad", [False, True])
def test_mlp_first_order_forward_gives_autograd_loss_and_gradients(x_requires_grad):
    energy = mlp(8, (32, 16))
    x = torch.randn(96, 8, generator=torch.Generator().manual_seed(6))
    forward = energy.first_order_forward()
    assert callable(forward), "a plain float32 MLP on CPU must offer the hand-written backward"

    def loss_and_grads(fn):
        energy.zero_grad()
        inputs = x.clone().requires_grad_(x_requires_grad)
        e = fn(inputs)  # (B,)
        loss = e[:40].mean() - e[40:].mean() + 0.01 * e.pow(2).mean()  # weights differ per row
        loss.backward()
        return e.detach(), [p.grad.clone() for p in energy.parameters()], inputs.grad

    e_fast, g_fast, x_fast = loss_and_grads(forward)
    e_ref, g_ref, x_ref = loss_and_grads(energy)
    torch.testing.assert_close(e_fast, e_ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    if x_requires_grad:
        torch.testing.assert_close(x_fast, x_ref, rtol=1e-5, atol=1e-8)
    else:
        assert x_fast is None
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(NonFiniteError):  # the checked forward's input check is kept
        forward(bad)


def test_mlp_unchecked_forward_without_autograd_equals_energy():
    energy = mlp(12, (32, 32))
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(8))
    forward = energy.unchecked_forward()
    with torch.inference_mode():
        got, want = forward(x), energy.energy(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    e = forward(x.clone().requires_grad_(True))  # with autograd on: the module's own forward, differentiable
    assert e.requires_grad and e.shape == (300,)


def test_spectral_norm_mlp_keeps_autograd_everywhere():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        energy = MLPEnergy(MLPEnergyConfig(8, (16,), spectral_norm=True))
    assert energy.input_gradient_fn() is None  # its weights change at every forward in training mode
    assert energy.first_order_forward() is None
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(9))
    energy.eval()  # spectral norm updates its weights at every forward in training mode
    with torch.inference_mode():  # the module's own layers, to the bit
        torch.testing.assert_close(energy.unchecked_forward()(x), energy.energy(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "sampler",
    [
        LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=20),
        LangevinSampler(step_size=0.05, noise_scale=1.0, n_steps=20, grad_clip=0.5, clamp=(-3.0, 3.0)),
    ],
    ids=["plain", "clip-and-clamp"],
)
@pytest.mark.parametrize("energy_kind", ["mlp", "gaussian"])
def test_langevin_samples_and_traces_match_the_previous_loop(sampler, energy_kind):
    energy = mlp() if energy_kind == "mlp" else GaussianEnergy(torch.zeros(8), torch.eye(8) * 0.5)
    x0 = torch.randn(128, 8, generator=torch.Generator().manual_seed(2))
    new = sample_negatives(sampler, energy, x0, torch.Generator().manual_seed(3))
    ref_x, ref_energy, ref_norm = reference_langevin(sampler, energy, x0, torch.Generator().manual_seed(3))
    torch.testing.assert_close(new.samples, ref_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new.energy_trace, ref_energy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.grad_norm_trace, ref_norm, rtol=1e-5, atol=1e-6)
    assert len(new.energy_trace) == sampler.n_steps
    assert all(p.requires_grad for p in energy.parameters())  # restored after the chain


def test_langevin_non_finite_gradient_still_raises_and_names_the_step():
    class Explodes(torch.nn.Module):  # finite until x leaves the unit box, then NaN
        def forward(self, x):
            return torch.where(x.abs().amax(dim=1) < 1.0, (x**2).sum(1), x.sum(1) * float("nan"))

    x0 = torch.full((4, 2), 0.5)
    sampler = LangevinSampler(step_size=0.01, noise_scale=0.0, n_steps=10)
    with pytest.raises(NonFiniteError, match="energy gradient became non-finite at step 1 of 10"):
        sampler.sample(Explodes(), x0 * 4, torch.Generator().manual_seed(0))


def test_chain_keeps_the_width_check_of_the_energy():
    from ebm_core.errors import ShapeError

    with pytest.raises(ShapeError, match=r"\(B, 8\)"):
        chain_energy_and_grad(mlp(), torch.zeros(3, 5))


def test_cd_loss_and_stats_match_two_forwards():
    energy = mlp()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(4))
    objective = ContrastiveDivergence(LangevinSampler(step_size=0.01, noise_scale=0.1, n_steps=5), energy_l2=0.01)
    output = objective(energy, x, torch.Generator().manual_seed(5))
    chain = sample_negatives(objective.sampler, energy, x, torch.Generator().manual_seed(5))
    expected = reference_cd_loss(energy, x, chain.samples, 0.01)
    torch.testing.assert_close(output.loss, expected, rtol=1e-5, atol=1e-6)
    output.loss.backward()
    grads = [p.grad.clone() for p in energy.parameters()]
    energy.zero_grad()
    expected.backward()
    for got, want in zip(grads, [p.grad for p in energy.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        e_pos, e_neg = float(energy(x).mean()), float(energy(chain.samples).mean())
    assert output.stats["e_pos"] == pytest.approx(e_pos, rel=1e-5, abs=1e-6)
    assert output.stats["e_neg"] == pytest.approx(e_neg, rel=1e-5, abs=1e-6)
    assert output.stats["sampler_grad_norm"] == chain.grad_norm_trace[-1]


# ---- scoring ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detector():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) * rng.uniform(0.5, 3.0, 12) + rng.normal(size=12) * 5
    config = DetectorConfig(hidden_dims=(16, 16), objective=DSMConfig(), train=TrainConfig(n_steps=20, batch_size=64))
    return EnergyDetector(config).fit(x, seed=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chunked_score_equals_the_previous_score(detector, dtype):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(SCORE_BATCH_SIZE * 2 + 17, 12)) * 3).astype(dtype)
    got = detector.score(x)
    assert got.dtype == np.float64 and got.shape == (x.shape[0],)
    np.testing.assert_allclose(got, reference_score(detector, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(detector.score(np.asfortranarray(x)[::1]), got, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(detector.score(x[:0]), np.zeros(0))


def test_chunked_score_keeps_the_errors(detector):
    x = np.zeros((10, 12))
    x[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"rows \[7\], columns \[3\]"):
        detector.score(x)
    with pytest.raises(NonFiniteError):  # finite input whose standardised value overflows float32
        detector.score(np.full((2, 12), 1e300))
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        detector.score(np.zeros((3, 5)))
