"""Batched ANIL head adaptation: K gradient steps of a linear softmax head, one program per task.

In ANIL only the head is adapted in the inner loop, on features that do not change during
adaptation. Each task's problem is tiny (N support samples x D features x W ways), so launching
several small torch ops per step is pure overhead on a GPU. The kernel keeps the task's head in
registers for all K steps and writes only the adapted head; the support features and labels are
loaded once and kept in registers too when they fit one tile (e.g. 5-way 5-shot on 64-d
features), otherwise each step streams them in chunks (re-read from L2; e.g. 20-way 5-shot).

Math (identical in the torch reference and the kernel), per task t, starting from W, b:
    logits = X_t W + b                    [N, W]
    G      = (softmax(logits) - onehot(y_t)) / N      d(mean CE)/d logits
    W     <- W - lr * X_t^T G             [D, W]
    b     <- b - lr * sum_n G             [W]

Gradient (first order, as in first-order MAML): the adapted head is treated as
``weight + (constant)`` and ``bias + (constant)``, so the gradient w.r.t. the initial ``weight``
and ``bias`` is the incoming gradient summed over tasks, and ``features`` receive no gradient
through the adaptation (they still receive one through the caller's query loss). Both backends
implement exactly this, so switching backends never changes a training run; double backward
raises. Exact second-order ANIL must differentiate the torch inner loop instead.

Size limit of the kernel: the head ([D, W] padded to powers of two >= 16) must fit
``MAX_HEAD_TILE`` elements: D <= 128 for up to 16 ways, D <= 64 for up to 32 ways (Conv4 on
Omniglot: D = 64). Any N works (features resident up to ``MAX_X_TILE`` padded elements, else
streamed in chunks of ``MAX_STREAM_TILE``). Larger heads (e.g. 1600-d
miniImageNet Conv4 features) run the torch reference under backend "auto" and raise
``ValueError`` under a forced "triton".
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from metalab.kernels._dispatch import (
    acc_dtype,
    check_float,
    check_same_device,
    check_same_dtype,
    check_tensor,
    get_backend,
    triton_chosen,
    use_triton,
)
from metalab.kernels._tl import pow2_at_least, tl_acc

OP = "anil_head_adapt"
# Register budget per program (8 warps), chosen so that sm_80/sm_90 builds do not spill
# (benchmarks/kernels/compile_check.py prints registers and stack per variant):
MAX_X_TILE = 2048  # resident features [BLOCK_N, BLOCK_D] (else streamed)
MAX_STREAM_TILE = 1024  # streamed features chunk (the head's gradient is in registers as well)
MAX_HEAD_TILE = 2048  # head [BLOCK_D, BLOCK_W]


# ---------------------------------------------------------------------------------------------
# torch reference
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def anil_head_adapt_reference(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lr: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The module docstring's K steps in batched torch; returns ([T, D, W], [T, W])."""
    T, N, D = features.shape
    Wn = weight.shape[1]
    acc = acc_dtype(weight.dtype)
    x = features.to(acc)  # [T, N, D]
    y = torch.nn.functional.one_hot(labels, Wn).to(acc)  # [T, N, W]
    w = weight.to(acc).expand(T, D, Wn).clone()  # [T, D, W]
    b = bias.to(acc).expand(T, Wn).clone()  # [T, W]
    for _ in range(steps):
        logits = torch.baddbmm(b[:, None, :], x, w)  # [T, N, W]
        g = (logits.softmax(dim=-1) - y) / N  # [T, N, W]
        w = w - lr * (x.transpose(1, 2) @ g)  # [T, D, W]
        b = b - lr * g.sum(dim=1)  # [T, W]
    return w.to(weight.dtype), b.to(bias.dtype)


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------


@triton.jit
def _anil_kernel(
    x_ptr,  # [T, N, D] features
    y_ptr,  # [T, N] int64 labels
    w0_ptr,  # [D, W] initial weight
    b0_ptr,  # [W] initial bias
    coef_ptr,  # [2] (lr, 1/N) in the accumulation dtype
    w_out_ptr,  # [T, D, W]
    b_out_ptr,  # [T, W]
    N,
    D,
    W,
    steps,
    ACC: tl.constexpr,
    X_RESIDENT: tl.constexpr,  # the whole support set fits one [BLOCK_N, BLOCK_D] tile
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    rn = tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    rw = tl.arange(0, BLOCK_W)
    d_mask = rd < D
    w_mask = rw < W
    x_task = x_ptr + t * N * D
    y_task = y_ptr + t * N
    hw_mask = d_mask[:, None] & w_mask[None, :]
    # The head and its gradient live in registers for all steps.
    w = tl.load(w0_ptr + rd[:, None] * W + rw[None, :], mask=hw_mask, other=0.0).to(ACC)  # [BD, BW]
    b = tl.load(b0_ptr + rw, mask=w_mask, other=0.0).to(ACC)  # [BLOCK_W]
    lr = tl.load(coef_ptr)
    inv_n = tl.load(coef_ptr + 1)
    if X_RESIDENT:
        # Small support set: features and one-hot labels are loaded once, kept in registers.
        n_mask = rn < N
        x = tl.load(x_task + rn[:, None] * D + rd[None, :], mask=n_mask[:, None] & d_mask[None, :], other=0.0).to(
            ACC
        )  # [BN, BD], zero padded
        y = tl.load(y_task + rn, mask=n_mask, other=-1)  # [BLOCK_N]
        onehot = (y[:, None] == rw[None, :]).to(ACC)  # [BLOCK_N, BLOCK_W]
        for _k in range(steps):
            logits = tl.dot(x, w, input_precision="ieee") + b[None, :]  # [BLOCK_N, BLOCK_W]
            logits = tl.where(w_mask[None, :], logits, float("-inf"))  # padded classes: p = 0
            e = tl.exp(logits - tl.max(logits, axis=1)[:, None])
            p = e / tl.sum(e, axis=1)[:, None]
            g = tl.where(n_mask[:, None], (p - onehot) * inv_n, 0.0)  # padded samples: no gradient
            w -= lr * tl.dot(tl.trans(x), g, input_precision="ieee")  # [BLOCK_D, BLOCK_W]
            b -= lr * tl.sum(g, axis=0)
    else:
        # Large support set: each step streams the task's features in [BLOCK_N, BLOCK_D] chunks
        # (re-read from L2, they are small) and accumulates the head's gradient in registers.
        for _k in range(steps):
            gw = tl.zeros([BLOCK_D, BLOCK_W], dtype=ACC)
            gb = tl.zeros([BLOCK_W], dtype=ACC)
            for n0 in range(0, N, BLOCK_N):
                rows = n0 + rn
                n_mask = rows < N
                x = tl.load(
                    x_task + rows[:, None] * D + rd[None, :], mask=n_mask[:, None] & d_mask[None, :], other=0.0
                ).to(ACC)
                y = tl.load(y_task + rows, mask=n_mask, other=-1)
                onehot = (y[:, None] == rw[None, :]).to(ACC)
                logits = tl.dot(x, w, input_precision="ieee") + b[None, :]
                logits = tl.where(w_mask[None, :], logits, float("-inf"))
                e = tl.exp(logits - tl.max(logits, axis=1)[:, None])
                p = e / tl.sum(e, axis=1)[:, None]
                g = tl.where(n_mask[:, None], (p - onehot) * inv_n, 0.0)
                gw += tl.dot(tl.trans(x), g, input_precision="ieee")
                gb += tl.sum(g, axis=0)
            w -= lr * gw
            b -= lr * gb
    tl.store(w_out_ptr + t * D * W + rd[:, None] * W + rw[None, :], w.to(w_out_ptr.dtype.element_ty), mask=hw_mask)
    tl.store(b_out_ptr + t * W + rw, b.to(b_out_ptr.dtype.element_ty), mask=w_mask)


def _tiles(N: int, D: int, W: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_D, BLOCK_W) as launched; ``N <= BLOCK_N`` means features stay resident.

    tl.dot requires every dimension >= 16. The limits were measured spill-free with 8 warps on
    sm_80/sm_90 (benchmarks/kernels/compile_check.py).
    """
    BD, BW = pow2_at_least(D, 16), pow2_at_least(W, 16)
    BN = pow2_at_least(N, 16)
    if BN * BD > MAX_X_TILE:
        BN = max(16, MAX_STREAM_TILE // BD)  # stream the support set in chunks of BN rows
    return BN, BD, BW


def fits_kernel(N: int, D: int, W: int) -> bool:
    """Whether the head (and its gradient) of one task fit in registers (see ``MAX_HEAD_TILE``).

    N is unbounded: support sets larger than one resident tile are streamed.
    """
    BN, BD, BW = _tiles(N, D, W)
    return BD * BW <= MAX_HEAD_TILE and BN * BD <= MAX_X_TILE


def _launch(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lr: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    T, N, D = features.shape
    Wn = weight.shape[1]
    acc = acc_dtype(weight.dtype)
    w_out = torch.empty((T, D, Wn), dtype=weight.dtype, device=weight.device)  # [T, D, W]
    b_out = torch.empty((T, Wn), dtype=bias.dtype, device=bias.device)  # [T, W]
    coef = torch.tensor([lr, 1.0 / N], dtype=acc, device=weight.device)
    BN, BD, BW = _tiles(N, D, Wn)
    _anil_kernel[(T,)](
        features,
        labels,
        weight,
        bias,
        coef,
        w_out,
        b_out,
        N,
        D,
        Wn,
        steps,
        ACC=tl_acc(acc),
        X_RESIDENT=N <= BN,
        BLOCK_N=BN,
        BLOCK_D=BD,
        BLOCK_W=BW,
        num_warps=8,  # measured spill-free up to the tile limits (benchmarks/kernels/compile_check.py)
    )
    return w_out, b_out


class _AnilHeadFn(torch.autograd.Function):
    """Adapted heads with the first-order (identity) gradient to the initial head."""

    @staticmethod
    def forward(ctx, features, labels, weight, bias, lr, steps, triton_path):  # type: ignore[override]
        fn = _launch if triton_path else anil_head_adapt_reference
        w, b = fn(features, labels, weight, bias, lr, steps)
        return w, b

    @staticmethod
    @once_differentiable
    def backward(ctx, g_w, g_b):  # type: ignore[override]
        # Sum over tasks in the accumulation dtype (bf16 heads: fp32), returned in the head's dtype.
        d_weight = d_bias = None
        if ctx.needs_input_grad[2] and g_w is not None:
            d_weight = g_w.sum(dim=0, dtype=acc_dtype(g_w.dtype)).to(g_w.dtype)
        if ctx.needs_input_grad[3] and g_b is not None:
            d_bias = g_b.sum(dim=0, dtype=acc_dtype(g_b.dtype)).to(g_b.dtype)
        return None, None, d_weight, d_bias, None, None, None


def anil_head_adapt(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lr: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt a linear softmax head to every task with ``steps`` steps of gradient descent.

    Args:
      features: [T, N, D] support features (any float dtype; computed in fp32, fp64 for fp64 head).
      labels: [T, N] int64 support labels in ``0..W-1``.
      weight: [D, W] initial head weight (note: ``x @ weight``, i.e. ``nn.Linear.weight.T``).
      bias: [W] initial head bias, same dtype as ``weight``.
      lr: inner learning rate (Python float). steps: number of steps K >= 0.
    Returns (weight [T, D, W], bias [T, W]) in ``weight``'s dtype; first-order gradients (module
    docstring). Where the kernel does not run this is the same first-order math in torch,
    unvalidated; where it runs, the arguments are checked first (the label range costs one host sync).
    """
    if not triton_chosen({"features": features, "labels": labels, "weight": weight, "bias": bias}):
        return _AnilHeadFn.apply(features, labels, weight, bias, lr, steps, False)
    check_tensor(OP, "features", features, ndims=(3,), shape_doc="[T, N, D]")
    T, N, D = features.shape
    check_tensor(OP, "labels", labels, ndims=(2,), shape_doc=f"[T, N] = [{T}, {N}]", dtypes=(torch.int64,))
    check_tensor(OP, "weight", weight, ndims=(2,), shape_doc=f"[D, W] with D = {D}")
    Wn = weight.shape[1]
    check_tensor(OP, "bias", bias, ndims=(1,), shape_doc=f"[W] = [{Wn}]")
    if T < 1 or N < 1 or D < 1 or Wn < 1:
        raise ValueError(f"{OP}: need T, N, D, W >= 1, got features {(T, N, D)}, weight {(D, Wn)}")
    if tuple(labels.shape) != (T, N):
        raise ValueError(f"{OP}: `labels` has shape {tuple(labels.shape)}, expected [{T}, {N}]")
    if weight.shape[0] != D:
        raise ValueError(f"{OP}: `weight` has shape {tuple(weight.shape)}, expected [{D}, W]")
    if tuple(bias.shape) != (Wn,):
        raise ValueError(f"{OP}: `bias` has shape {tuple(bias.shape)}, expected [{Wn}]")
    lr = check_float(OP, "lr", lr)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"{OP}: `steps` must be an int >= 0, got {steps!r}")
    tensors = {"features": features, "labels": labels, "weight": weight, "bias": bias}
    check_same_device(OP, tensors)
    check_same_dtype(OP, {"weight": weight, "bias": bias})
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= Wn:
        raise ValueError(f"{OP}: `labels` must lie in [0, {Wn - 1}] (W = {Wn} ways), got [{lo}, {hi}]")

    triton_path = use_triton(OP, tensors)
    if triton_path and not fits_kernel(N, D, Wn):
        if get_backend() == "triton":
            raise ValueError(
                f"{OP}: a task of N={N} samples, D={D} features, W={Wn} ways exceeds the kernel's "
                f"register tile limit (padded head <= {MAX_HEAD_TILE} elements, features chunk <= "
                f"{MAX_X_TILE}); use backend 'auto' or "
                "'torch' for this size"
            )
        triton_path = False  # same math in torch
    return _AnilHeadFn.apply(features, labels, weight, bias, lr, steps, triton_path)
