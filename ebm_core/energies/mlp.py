from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ebm_core.energies.base import EnergyFunction
from ebm_core.shapes import check_batch, check_energy_output


@dataclass(frozen=True)
class MLPEnergyConfig:
    input_dim: int
    hidden_dims: tuple[int, ...] = (256, 256)
    spectral_norm: bool = False

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden_dims": list(self.hidden_dims)}

    @classmethod
    def from_dict(cls, data: dict) -> "MLPEnergyConfig":
        return cls(
            input_dim=int(data["input_dim"]),
            hidden_dims=tuple(int(h) for h in data["hidden_dims"]),
            spectral_norm=bool(data.get("spectral_norm", False)),
        )


class MLPEnergy(EnergyFunction):
    """E(x) = MLP(x): SiLU hidden layers and a scalar head."""

    def __init__(self, config: MLPEnergyConfig):
        super().__init__()
        self.config = config
        self.input_dim = config.input_dim
        layers: list[nn.Module] = []
        width_in = config.input_dim
        for width in config.hidden_dims:
            layers += [self._linear(width_in, width), nn.SiLU()]
            width_in = width
        layers.append(self._linear(width_in, 1))
        self.net = nn.Sequential(*layers)

    def _linear(self, n_in: int, n_out: int) -> nn.Module:
        layer = nn.Linear(n_in, n_out)
        return nn.utils.parametrizations.spectral_norm(layer) if self.config.spectral_norm else layer

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # (B, 1) -> (B,)

    def _plain_layers(self) -> list[tuple[nn.Linear, ...]] | None:
        """The linear layers when the network is what the hand-written passes below assume (Linear with
        bias, SiLU between, no spectral norm, no hooks), else None. Spectral norm recomputes its weights at
        every forward, and hooks or other layers could change what a forward does."""
        layers = list(self.net)
        linears, activations = layers[0::2], layers[1::2]
        if (
            self.config.spectral_norm
            or not all(type(m) is nn.Linear and m.bias is not None for m in linears)
            or not all(type(m) is nn.SiLU for m in activations)
            or any(m._forward_hooks or m._forward_pre_hooks for m in [self, self.net, *layers])
        ):
            return None
        return linears

    def input_gradient_fn(self):
        """x (B, D) -> (E(x) (B,), dE/dx (B, D)) without autograd, for a sampling chain: the weights are
        read once, so they must not change while it is used. The operations are those autograd runs for
        `energy(x).sum()` (each layer's product and bias forward; silu_backward and the input-gradient
        product back), with the hidden layers' products by `dense_linear` (oneDNN for float32 on CPU):
        equal to autograd's values up to float rounding. None when the network is not a plain MLP.
        """
        linears = self._plain_layers()
        if linears is None:
            return None
        weights = [(m.weight.detach(), m.bias.detach()) for m in linears]  # (out, in), (out,)
        hidden, (w_out, b_out) = weights[:-1], weights[-1]
        linear = dense_linear(w_out)
        backward_weights = [w.t().contiguous() for w, _ in hidden]  # (in, out): grad (B, out) -> (B, in)
        silu, silu_backward = nn.functional.silu, torch.ops.aten.silu_backward

        def energy_and_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pre_activations = []
            h = x
            for w, b in hidden:
                z = linear(h, w, b)  # (B, width)
                pre_activations.append(z)
                h = silu(z)
            energy = torch.addmm(b_out, h, w_out.t()).squeeze(-1)  # (B,); one output column: BLAS is faster
            grad = w_out.expand(x.shape[0], -1)  # d sum(E) / dh, (B, width)
            for w_back, z in zip(reversed(backward_weights), reversed(pre_activations)):
                grad = linear(silu_backward(grad, z), w_back, None)  # (B, width_in)
            return energy, grad.contiguous()

        return energy_and_grad

    def unchecked_forward(self):
        """`EnergyFunction.unchecked_forward`; for a plain float32 MLP on CPU, calls made without autograd
        (scoring under inference_mode) run the hidden layers' products by `dense_linear` (oneDNN), equal to
        `energy(x)` up to float rounding. Calls with grad enabled or under autocast run `energy(x)`."""
        base = super().unchecked_forward()
        linears = self._plain_layers()
        if base is self or linears is None:
            return base
        w_out = linears[-1].weight
        if w_out.device.type != "cpu" or w_out.dtype != torch.float32 or not _onednn_linear_works():
            return base
        linear = dense_linear(w_out)
        hidden, out = linears[:-1], linears[-1]
        silu = nn.functional.silu

        def forward(x: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled() or torch.is_autocast_enabled("cpu") or x.dtype != torch.float32:
                return base(x)
            h = x
            for m in hidden:
                h = silu(linear(h, m.weight, m.bias))  # (B, width)
            return check_energy_output(torch.addmm(out.bias, h, out.weight.t()).squeeze(-1), x.shape[0])

        return forward

    def first_order_forward(self):
        """x (B, D) -> E(x) (B,), the checked forward, whose backward (to the parameters, and to x when it
        requires grad) is hand-written with `dense_linear` products instead of autograd's `nn.Linear`
        backward; first order only (a loss's `backward()`, not `create_graph`). For a loss that needs one
        gradient (contrastive divergence). None when it would not be the energy's forward: not a plain MLP,
        not float32 on CPU, or under autocast."""
        linears = self._plain_layers()
        if linears is None or torch.is_autocast_enabled("cpu"):
            return None
        w_out = linears[-1].weight
        if w_out.device.type != "cpu" or w_out.dtype != torch.float32 or not _onednn_linear_works():
            return None
        params = [p for m in linears for p in (m.weight, m.bias)]

        def forward(x: torch.Tensor) -> torch.Tensor:
            if x.dtype != torch.float32 or x.device.type != "cpu":
                return self(x)  # the module says what is wrong, or runs what it runs
            check_batch(x, self.input_dim)
            return check_energy_output(_MLPEnergyFunction.apply(x, *params), x.shape[0])

        return forward


class _MLPEnergyFunction(torch.autograd.Function):
    """E(x) of a plain SiLU MLP from its (weight, bias) pairs, with a hand-written first-order backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        weights, biases = params[0::2], params[1::2]
        linear = dense_linear(weights[-1])
        inputs, pre_activations = [x], []  # each layer's input (B, in); hidden pre-activations (B, width)
        h = x
        for w, b in zip(weights[:-1], biases[:-1]):
            z = linear(h, w, b)
            pre_activations.append(z)
            h = nn.functional.silu(z)
            inputs.append(h)
        energy = torch.addmm(biases[-1], h, weights[-1].t()).squeeze(-1)  # (B,)
        ctx.save_for_backward(*inputs, *pre_activations, *weights)
        ctx.n_layers = len(weights)
        return energy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_energy: torch.Tensor):
        n = ctx.n_layers
        saved = ctx.saved_tensors
        inputs, pre_activations, weights = saved[:n], saved[n : 2 * n - 1], saved[2 * n - 1 :]
        linear = dense_linear(weights[-1])
        needs = ctx.needs_input_grad  # (x, w0, b0, w1, b1, ...)
        grads: list[torch.Tensor | None] = [None] * (1 + 2 * n)
        grad_z = grad_energy.unsqueeze(1)  # d loss / d (layer output), (B, out)
        for layer in reversed(range(n)):
            if needs[1 + 2 * layer]:  # d loss / d W = grad_z.T @ input, (out, in); one output row: BLAS
                grads[1 + 2 * layer] = grad_z.t().mm(inputs[layer])
            if needs[2 + 2 * layer]:
                grads[2 + 2 * layer] = grad_z.sum(0)  # (out,)
            if layer == 0 and not needs[0]:
                break
            if layer == n - 1:  # one output column: the product is an outer product, (B, 1) * (1, in)
                grad_h = grad_z * weights[layer]
            else:
                grad_h = linear(grad_z, weights[layer].t().contiguous(), None)  # (B, in)
            if layer == 0:
                grads[0] = grad_h
            else:
                grad_z = torch.ops.aten.silu_backward(grad_h, pre_activations[layer - 1])
        return tuple(grads)


def dense_linear(like: torch.Tensor):
    """(x (B, in), w (out, in), b (out,) or None) -> x @ w.T + b, by oneDNN when torch has it for `like`'s
    device and dtype (float32 on CPU: about twice as fast as the BLAS `addmm` `nn.Linear` calls for these
    small products on the machines measured, see benchmarks/speed.py), else by `addmm` / `mm`."""
    if like.device.type == "cpu" and like.dtype == torch.float32 and _onednn_linear_works():
        linear_pointwise = torch.ops.mkldnn._linear_pointwise

        def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
            return linear_pointwise(x, w, b, "none", [], "")

        return linear

    def blas_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return x.mm(w.t()) if b is None else torch.addmm(b, x, w.t())

    return blas_linear


_ONEDNN_LINEAR: bool | None = None  # found out on first use


def _onednn_linear_works() -> bool:
    """Whether torch's oneDNN linear is built in, enabled, and gives x @ w.T + b on a small case."""
    global _ONEDNN_LINEAR
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    if _ONEDNN_LINEAR is None:
        try:
            x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
            w = torch.arange(12, dtype=torch.float32).reshape(4, 3)
            b = torch.ones(4)
            with torch.no_grad():
                got = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
            _ONEDNN_LINEAR = bool(torch.equal(got, torch.addmm(b, x, w.t())))
        except (AttributeError, RuntimeError, NotImplementedError):
            _ONEDNN_LINEAR = False
    return _ONEDNN_LINEAR
