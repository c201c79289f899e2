"""inner_update: Triton (interpreted) forward and backward against the torch reference."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from metalab import kernels
from metalab.kernels.inner_step import inner_update_reference

# (T, P, block): odd P with several partial blocks, a single task, a single parameter,
# an exact multiple of the block, and a "large P" that is still quick interpreted.
SIZES = [(3, 37, 16), (1, 37, 16), (4, 1, 16), (2, 64, 16), (2, 5003, 1024)]


def _make(T: int, P: int, shared: bool, lr_mode: str, dtype: torch.dtype):
    theta = torch.randn(P if shared else (T, P)).to(dtype).requires_grad_()
    grads = torch.randn(T, P).to(dtype).requires_grad_()
    if lr_mode == "float":
        lr = 0.37
    elif lr_mode == "scalar":
        lr = torch.tensor(0.37).to(dtype).requires_grad_()
    else:
        lr = (torch.rand(P) + 0.1).to(dtype).requires_grad_()
    return theta, grads, lr


def _tensors(theta, grads, lr):
    return [t for t in (theta, grads, lr) if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lr_mode", ["float", "scalar", "vector"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("T,P,block", SIZES)
def test_forward_backward_match_reference(T, P, block, shared, lr_mode, dtype, close):
    theta, grads, lr = _make(T, P, shared, lr_mode, dtype)
    upstream = torch.randn(T, P).to(dtype)  # [T, P] an arbitrary cotangent
    inputs = _tensors(theta, grads, lr)

    with kernels.backend("triton"):
        out = kernels.inner_update(theta, grads, lr, block_size=block)
    expected = inner_update_reference(theta, grads, lr)
    assert out.shape == (T, P) and out.dtype == dtype
    close(out, expected, dtype, "forward")

    got = torch.autograd.grad(out, inputs, upstream)
    want = torch.autograd.grad(expected, inputs, upstream)
    for name, g, w in zip(["theta", "grads", "lr"], got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        close(g, w, dtype, f"d/d{name}")


def test_reference_is_the_update_rule():
    # The reference itself against the definition, with hand-computed gradients (shared theta,
    # Meta-SGD lr): d theta = sum_t go, d lr = -sum_t go * g, d g = -lr * go.
    theta, grads, lr = _make(3, 7, True, "vector", torch.float64)
    out = inner_update_reference(theta, grads, lr)
    torch.testing.assert_close(out, theta[None] - lr[None] * grads)
    go = torch.randn(3, 7, dtype=torch.float64)
    d_theta, d_grads, d_lr = torch.autograd.grad(out, (theta, grads, lr), go)
    torch.testing.assert_close(d_theta, go.sum(0))
    torch.testing.assert_close(d_grads, -lr[None] * go)
    torch.testing.assert_close(d_lr, -(go * grads).sum(0))


@pytest.mark.parametrize("lr_mode", ["float", "scalar", "vector"])
@pytest.mark.parametrize("shared", [True, False])
def test_gradcheck_float64(shared, lr_mode):
    theta, grads, lr = _make(2, 5, shared, lr_mode, torch.float64)
    inputs = tuple(_tensors(theta, grads, lr))

    def f(*args):
        return kernels.inner_update(args[0], args[1], args[2] if len(args) > 2 else lr, block_size=4)

    with kernels.backend("triton"):
        assert gradcheck(f, inputs)


@pytest.mark.parametrize("shared,lr_mode", [(True, "vector"), (False, "scalar")])
def test_gradgradcheck_float64(shared, lr_mode):
    # The backward is itself differentiable (built from the same kernels): second order is exact.
    theta, grads, lr = _make(2, 5, shared, lr_mode, torch.float64)

    def f(*args):
        return kernels.inner_update(*args, block_size=4)

    with kernels.backend("triton"):
        assert gradgradcheck(f, (theta, grads, lr))


def _maml_meta_grads(backend: str, order: int):
    """A tiny second-order MAML step on linear regression; returns d(query loss)/d(theta, lr).

    ``order=2`` also differentiates the meta-gradient once more (a Hessian-vector product of the
    meta-objective), which runs the kernels' double backward.
    """
    torch.manual_seed(1)
    T, n, d = 3, 6, 4
    xs, xq = torch.randn(T, n, d, dtype=torch.float64), torch.randn(T, n, d, dtype=torch.float64)
    w_true = torch.randn(T, d, 1, dtype=torch.float64)
    ys, yq = xs @ w_true, xq @ w_true
    theta = torch.randn(d, dtype=torch.float64, requires_grad=True)  # [P], P = d
    lr = torch.full((d,), 0.1, dtype=torch.float64, requires_grad=True)  # Meta-SGD

    def loss(params, x, y):  # params [T, P]
        return ((x @ params[:, :, None] - y) ** 2).mean()

    with kernels.backend(backend):
        fast = theta.expand(T, d)
        for _ in range(2):  # two inner steps: the second starts from per-task parameters
            g = torch.autograd.grad(loss(fast, xs, ys) * T, fast, create_graph=True)[0]  # [T, P]
            fast = kernels.inner_update(fast if fast.is_contiguous() else theta, g.contiguous(), lr)
        meta = loss(fast, xq, yq)
        g_theta, g_lr = torch.autograd.grad(meta, (theta, lr), create_graph=order == 2)
        if order == 1:
            return g_theta, g_lr
        v = torch.randn(d, dtype=torch.float64)
        return torch.autograd.grad((g_theta * v).sum() + (g_lr * v).sum(), (theta, lr))


@pytest.mark.parametrize("order", [1, 2])
def test_second_order_maml_matches_torch(order):
    got = _maml_meta_grads("triton", order)
    want = _maml_meta_grads("torch", order)
    for g, w in zip(got, want):
        assert w.abs().max() > 0
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_bf16_reductions_accumulate_in_fp32(close):
    # Many tasks summed into a shared theta: a bf16 accumulator would be visibly off here.
    T, P = 64, 33
    theta = torch.randn(P).bfloat16().requires_grad_()
    grads = torch.randn(T, P).bfloat16()
    lr = torch.tensor(0.5).bfloat16().requires_grad_()
    grads.requires_grad_()
    with kernels.backend("triton"):
        out = kernels.inner_update(theta, grads, lr, block_size=16)
    go = torch.randn(T, P).bfloat16()
    d_theta, d_lr = torch.autograd.grad(out, (theta, lr), go)
    close(d_theta, go.float().sum(0), torch.bfloat16, "d theta (fp32 sum)")
    close(d_lr, -(go.float() * grads.detach().float()).sum(), torch.bfloat16, "d lr (fp32 sum)")


@pytest.mark.parametrize("lr_kind", ["float", "dict"])
def test_inner_update_params_dict(lr_kind):
    # Shared conv-like parameters, per-task linear ones, Meta-SGD lrs: shapes restored, values and
    # gradients equal to the per-tensor reference.
    T = 3
    params = {
        "conv.weight": torch.randn(4, 2, 3, 3, requires_grad=True),
        "fc.bias": torch.randn(T, 5, requires_grad=True),
    }
    grads = {"conv.weight": torch.randn(T, 4, 2, 3, 3), "fc.bias": torch.randn(T, 5)}
    lr = (
        0.2
        if lr_kind == "float"
        else {"conv.weight": torch.rand(4, 2, 3, 3, requires_grad=True), "fc.bias": torch.rand(5, requires_grad=True)}
    )
    with kernels.backend("triton"):
        out = kernels.inner_update_params(params, grads, lr)
    leaves = list(params.values()) + (list(lr.values()) if isinstance(lr, dict) else [])
    got = torch.autograd.grad(sum((o * o).sum() for o in out.values()), leaves)
    want_out = {n: params[n] - (lr[n] if isinstance(lr, dict) else lr) * grads[n] for n in params}
    want = torch.autograd.grad(sum((o * o).sum() for o in want_out.values()), leaves)
    for n in params:
        assert out[n].shape == grads[n].shape
        torch.testing.assert_close(out[n], want_out[n])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_inner_update_params_errors_name_the_parameter():
    # checked where the kernel runs (forced and interpreted here); elsewhere the update is plain torch
    with kernels.backend("triton"), pytest.raises(ValueError, match="parameter 'w'.*`theta`"):
        kernels.inner_update_params({"w": torch.randn(4)}, {"w": torch.randn(2, 5)}, 0.1)
    with kernels.backend("triton"), pytest.raises(ValueError, match="different keys"):
        kernels.inner_update_params({"w": torch.randn(4)}, {"v": torch.randn(2, 4)}, 0.1)
