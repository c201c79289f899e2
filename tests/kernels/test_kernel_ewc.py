"""ewc_penalty: value and gradient from one kernel pass against the torch reference."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from metalab import kernels
from metalab.kernels.ewc import ewc_penalty_reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape,block", [((37,), 16), ((3, 11), 16), ((1,), 16), ((5003,), 1024), ((64,), 16)])
def test_value_and_gradients_match_reference(shape, block, dtype, close):
    fisher = torch.rand(shape).to(dtype).requires_grad_()
    theta = torch.randn(shape).to(dtype).requires_grad_()
    star = torch.randn(shape).to(dtype).requires_grad_()
    with kernels.backend("triton"):
        value = kernels.ewc_penalty(fisher, theta, star, block_size=block)
    expected = ewc_penalty_reference(fisher, theta, star)
    assert value.shape == () and value.dtype == expected.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    close(value, expected, acc, "value")  # accumulated in fp32 even for bf16 inputs
    scale = torch.tensor(1.7, dtype=value.dtype)  # a non-unit upstream gradient (e.g. lambda/2)
    got = torch.autograd.grad(value * scale, (fisher, theta, star))
    want = torch.autograd.grad(expected * scale, (fisher, theta, star))
    for name, g, w in zip(("fisher", "theta", "theta_star"), got, want):
        assert g.dtype == w.dtype == dtype
        close(g, w, dtype, f"d/d{name}")


def test_gradient_is_2F_times_difference():
    fisher, theta, star = torch.rand(9), torch.randn(9, requires_grad=True), torch.randn(9)
    with kernels.backend("triton"):
        kernels.ewc_penalty(fisher, theta, star, block_size=16).backward()
    torch.testing.assert_close(theta.grad, 2 * fisher * (theta.detach() - star))


def test_gradcheck_float64():
    args = (
        torch.rand(13, dtype=torch.float64, requires_grad=True),
        torch.randn(13, dtype=torch.float64, requires_grad=True),
        torch.randn(13, dtype=torch.float64, requires_grad=True),
    )
    with kernels.backend("triton"):
        assert gradcheck(lambda f, t, s: kernels.ewc_penalty(f, t, s, block_size=4), args)


def test_double_backward_raises_instead_of_silent_zero():
    fisher, star = torch.rand(5), torch.randn(5)
    theta = torch.randn(5, requires_grad=True)
    with kernels.backend("triton"):
        (g,) = torch.autograd.grad(kernels.ewc_penalty(fisher, theta, star), theta, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), theta)


def test_backends_identical_on_tiny_online_ewc_run():
    """Two tasks of logistic regression with online EWC: Fisher from linear_fisher, penalty from
    ewc_penalty, Fisher decay from fisher_accumulate; the final weights must not depend on the
    backend."""

    def run(backend: str) -> torch.Tensor:
        torch.manual_seed(4)
        lin = torch.nn.Linear(8, 3)
        opt = torch.optim.SGD(lin.parameters(), lr=0.1)
        fisher = {n: torch.zeros_like(p) for n, p in lin.named_parameters()}
        anchor: dict[str, torch.Tensor] = {}
        with kernels.backend(backend):
            for task in range(2):
                x, y = torch.randn(32, 8) + task, torch.randint(0, 3, (32,))
                for _ in range(10):
                    loss = torch.nn.functional.cross_entropy(lin(x), y)
                    for n, p in lin.named_parameters():
                        if anchor:
                            loss = loss + 50.0 * kernels.ewc_penalty(fisher[n], p, anchor[n])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                out = lin(x)
                delta = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y, reduction="sum"), out)[
                    0
                ]  # [N, 3] per-sample output gradients
                # Per-sample gradients of a linear layer: g_n = delta_n a_n^T (weight), delta_n (bias).
                rows = {
                    "weight": torch.einsum("no,ni->noi", delta, x).reshape(len(y), -1),  # [N, 3*8]
                    "bias": delta,  # [N, 3]
                }
                identity = {"weight": kernels.linear_fisher(x, delta), "bias": kernels.linear_fisher_bias(delta)}
                for n in fisher:  # online EWC: F <- 0.9 F + mean_n g_n^2
                    fisher[n] = kernels.fisher_accumulate(fisher[n].flatten(), rows[n].contiguous(), 0.9).view_as(
                        fisher[n]
                    )
                    # the layer identity gives the same new term without per-sample gradients
                    fresh = kernels.fisher_accumulate(torch.zeros(rows[n].shape[1]), rows[n].contiguous(), 0.0)
                    torch.testing.assert_close(fresh.view_as(identity[n]), identity[n] / len(y))
                anchor = {n: p.detach().clone() for n, p in lin.named_parameters()}
        return torch.cat([p.detach().flatten() for p in lin.parameters()])

    got, want = run("triton"), run("torch")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
