"""fisher_accumulate, linear_fisher and linear_fisher_bias: kernels against references, and the
linear-layer identity against the per-sample-gradient definition of the Fisher diagonal."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalab import kernels
from metalab.kernels.fisher import (
    fisher_accumulate_reference,
    linear_fisher_bias_reference,
    linear_fisher_reference,
)

DTYPES = [torch.float32, torch.bfloat16, torch.float64]


# ----------------------------------------------------------------------------- fisher_accumulate


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.9, 1.0])
@pytest.mark.parametrize("N,P,block", [(5, 37, 16), (1, 37, 16), (33, 5003, 1024), (16, 32, 16)])
def test_fisher_accumulate_matches_reference(N, P, block, gamma, dtype, close):
    fisher = torch.rand(P).to(dtype)
    grads = torch.randn(N, P).to(dtype)
    with kernels.backend("triton"):
        out = kernels.fisher_accumulate(fisher, grads, gamma, block_size=block)
    expected = fisher_accumulate_reference(fisher, grads, gamma)
    assert out.shape == (P,) and out.dtype == dtype
    close(out, expected, dtype, "fisher")


def test_fisher_accumulate_reference_definition():
    fisher, grads = torch.rand(7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    expected = 0.5 * fisher + sum(g * g for g in grads) / 4
    torch.testing.assert_close(fisher_accumulate_reference(fisher, grads, 0.5), expected)


def test_fisher_accumulate_bf16_grads_into_fp32_fisher(close):
    # Mixed precision: bf16 per-sample gradients, fp32 running Fisher; squares summed in fp32.
    fisher = torch.rand(40)
    grads = torch.randn(300, 40).bfloat16()
    with kernels.backend("triton"):
        out = kernels.fisher_accumulate(fisher, grads, 0.9, block_size=16)
    assert out.dtype == torch.float32
    close(out, 0.9 * fisher + grads.float().square().mean(0), torch.float32, "fp32 accumulation")


def test_fisher_accumulate_is_not_differentiable():
    grads = torch.randn(3, 5, requires_grad=True)
    with kernels.backend("triton"):
        out = kernels.fisher_accumulate(torch.zeros(5), grads, 1.0)
    assert not out.requires_grad


# ----------------------------------------------------------------------------- linear_fisher


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "N,Din,Dout,blocks",
    [
        (7, 20, 19, (16, 16, 16)),  # odd sizes, partial tiles on every axis
        (1, 5, 3, None),  # single sample, tiles larger than the problem
        (40, 33, 47, (16, 32, 16)),  # several tiles and several k-steps
        (20, 75, 70, None),  # "large": 5250 weights, default blocks
    ],
)
def test_linear_fisher_matches_reference(N, Din, Dout, blocks, dtype, close):
    a = torch.randn(N, Din).to(dtype)
    delta = torch.randn(N, Dout).to(dtype)
    with kernels.backend("triton"):
        out = kernels.linear_fisher(a, delta, blocks=blocks)
        bias = kernels.linear_fisher_bias(delta, block_size=16)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.shape == (Dout, Din) and out.dtype == acc and bias.dtype == acc
    # bf16 inputs are accumulated in fp32, so even they meet the fp32 tolerance.
    close(out, linear_fisher_reference(a, delta), acc, "weight Fisher")
    close(bias, linear_fisher_bias_reference(delta), acc, "bias Fisher")


class _TinyNet(nn.Module):
    def __init__(self, din: int = 6, hidden: int = 5, classes: int = 4) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(din, hidden), nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def _activations_and_output_grads(net: _TinyNet, x: torch.Tensor, y: torch.Tensor):
    """Inputs a and output gradients delta of both layers from ONE forward/backward (sum loss)."""
    saved = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: saved.__setitem__(name, (inp[0], out)))
        for name, m in (("fc1", net.fc1), ("fc2", net.fc2))
    ]
    loss = F.cross_entropy(net(x), y, reduction="sum")  # sum: delta_n is sample n's own gradient
    for h in hooks:
        h.remove()
    deltas = torch.autograd.grad(loss, [saved["fc1"][1], saved["fc2"][1]])
    return {"fc1": (saved["fc1"][0].detach(), deltas[0]), "fc2": (saved["fc2"][0].detach(), deltas[1])}


def _per_sample_squared_grads_vmap(net: _TinyNet, x: torch.Tensor, y: torch.Tensor):
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss_one(p, xi, yi):
        logits = torch.func.functional_call(net, p, (xi[None],))
        return F.cross_entropy(logits, yi[None])

    per_sample = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    return {k: v.square().sum(0) for k, v in per_sample.items()}  # sum_n g_n^2


def _per_sample_squared_grads_loop(net: _TinyNet, x: torch.Tensor, y: torch.Tensor):
    total = {k: torch.zeros_like(v) for k, v in net.named_parameters()}
    for i in range(len(y)):
        net.zero_grad()
        F.cross_entropy(net(x[i : i + 1]), y[i : i + 1]).backward()
        for k, v in net.named_parameters():
            total[k] += v.grad.square()
    return total


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("N", [1, 9])
def test_linear_fisher_equals_per_sample_gradient_definition(backend, N):
    torch.manual_seed(5)
    net = _TinyNet().double()
    x, y = torch.randn(N, 6, dtype=torch.float64), torch.randint(0, 4, (N,))
    layers = _activations_and_output_grads(net, x, y)
    with kernels.backend(backend):
        got = {}
        for name, (a, delta) in layers.items():
            got[f"{name}.weight"] = kernels.linear_fisher(a, delta)
            got[f"{name}.bias"] = kernels.linear_fisher_bias(delta)
    for definition in (_per_sample_squared_grads_vmap(net, x, y), _per_sample_squared_grads_loop(net, x, y)):
        assert definition.keys() == got.keys()
        for k in got:
            assert definition[k].abs().max() > 0, k
            torch.testing.assert_close(got[k], definition[k], rtol=1e-10, atol=1e-14, msg=k)


def test_linear_fisher_is_not_the_squared_mean_gradient():
    # Guard against the common bug the identity replaces: (mean_n g_n)^2 != mean_n g_n^2.
    torch.manual_seed(6)
    net = _TinyNet().double()
    x, y = torch.randn(9, 6, dtype=torch.float64), torch.randint(0, 4, (9,))
    a, delta = _activations_and_output_grads(net, x, y)["fc1"]
    with kernels.backend("triton"):
        fisher = kernels.linear_fisher(a, delta) / 9
    mean_grad = (delta.T @ a) / 9
    assert (fisher - mean_grad.square()).abs().max() > 1e-3 * fisher.abs().max()


def test_drop_in_for_the_continual_learners_linear_fisher():
    # The continual learner's exact Fisher (metalab.learners.continual.fisher) computes the same
    # identity in torch; the Triton kernels must give the same numbers for its Linear layers, so
    # that it can call kernels.linear_fisher / linear_fisher_bias there (see kernels/README.md).
    fisher_mod = pytest.importorskip("metalab.learners.continual.fisher")
    torch.manual_seed(7)
    net = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 4)).eval()
    x, y = torch.randn(11, 6), torch.randint(0, 4, (11,))
    theirs = fisher_mod.per_sample_squared_grads(net, x, y)
    saved = {}
    hooks = [net[i].register_forward_hook(lambda m, inp, out, i=i: saved.__setitem__(i, (inp[0], out))) for i in (0, 2)]
    loss = F.cross_entropy(net(x), y, reduction="sum")
    for h in hooks:
        h.remove()
    deltas = torch.autograd.grad(loss, [saved[0][1], saved[2][1]])
    with kernels.backend("triton"):
        for i, delta in zip((0, 2), deltas):
            a = saved[i][0].detach()
            torch.testing.assert_close(kernels.linear_fisher(a, delta), theirs[f"{i}.weight"], rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(kernels.linear_fisher_bias(delta), theirs[f"{i}.bias"], rtol=1e-5, atol=1e-7)
