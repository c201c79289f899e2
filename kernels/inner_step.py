"""Fused per-task inner-loop update ``theta_t = theta - lr * g_t`` for T tasks at once.

Why a kernel: in batched MAML every task starts from the same initial parameters, so the update
reads ``theta`` once per column block and writes the T adapted copies in one pass; its backward
reduces the incoming gradient over tasks (for a shared ``theta``) and over tasks for ``lr``
(Meta-SGD) in the same pass that writes the gradient w.r.t. the task gradients.

Shapes (P = number of parameters flattened, T = tasks):
  theta  [P] (shared initialisation) or [T, P] (already task-specific, e.g. inner step 2+)
  grads  [T, P]
  lr     Python float, 0-d tensor (learnable scalar step) or [P] tensor (Meta-SGD)
  out    [T, P]

Differentiability: ``out`` is differentiable to any order w.r.t. ``theta``, ``grads`` and a tensor
``lr``. The backward is itself an autograd Function built from the two kernels here, and its
backward again uses those kernels, so ``create_graph=True`` works at every level (second-order
MAML and ``gradgradcheck`` are tested). A Python-float ``lr`` is a constant.

Precision: bf16/fp16 inputs are computed and reduced in fp32 and stored in the input dtype;
fp64 stays fp64 (which is what ``gradcheck`` uses).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from metalab.kernels._dispatch import (
    acc_dtype,
    check_float,
    check_same_device,
    check_same_dtype,
    check_tensor,
    triton_chosen,
    use_triton,
)
from metalab.kernels._tl import pow2_at_least, tl_acc

OP = "inner_update"
DEFAULT_BLOCK = 1024


# ---------------------------------------------------------------------------------------------
# torch reference
# ---------------------------------------------------------------------------------------------


def inner_update_reference(theta: torch.Tensor, grads: torch.Tensor, lr: float | torch.Tensor) -> torch.Tensor:
    """``theta - lr * grads`` in plain torch (autograd by torch); the math the kernels must match.

    Computed in the accumulation dtype (fp32 for half types) and cast back, like the kernel.
    """
    acc = acc_dtype(grads.dtype)
    if isinstance(lr, torch.Tensor):
        out = theta.to(acc) - lr.to(acc) * grads.to(acc)  # [T, P] (theta [P] broadcasts over tasks)
    else:  # one op, and one op in its backward, instead of two each
        out = torch.add(theta.to(acc), grads.to(acc), alpha=-lr)
    return out.to(grads.dtype).contiguous()


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _inner_update_fwd_kernel(
    theta_ptr,  # [P] or [T, P]
    grads_ptr,  # [T, P]
    lr_ptr,  # [] or [P]
    out_ptr,  # [T, P]
    P,
    n_blocks,  # cdiv(P, BLOCK): programs per task
    THETA_PER_TASK: tl.constexpr,
    LR_PER_PARAM: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # 1-D grid of T * n_blocks programs (a 2-D grid would cap T at 65535 on CUDA).
    pid = tl.program_id(0)
    t = pid // n_blocks
    offs = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < P
    row = t.to(tl.int64) * P
    if THETA_PER_TASK:
        theta = tl.load(theta_ptr + row + offs, mask=mask, other=0.0).to(ACC)
    else:
        theta = tl.load(theta_ptr + offs, mask=mask, other=0.0).to(ACC)
    g = tl.load(grads_ptr + row + offs, mask=mask, other=0.0).to(ACC)
    if LR_PER_PARAM:
        lr = tl.load(lr_ptr + offs, mask=mask, other=0.0).to(ACC)
    else:
        lr = tl.load(lr_ptr).to(ACC)
    out = theta - lr * g
    tl.store(out_ptr + row + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _inner_update_bwd_kernel(
    go_ptr,  # [T, P] gradient w.r.t. out
    grads_ptr,  # [T, P]
    lr_ptr,  # [] or [P]
    dsum_ptr,  # [P]  sum_t go            (gradient of a shared theta)
    dgrads_ptr,  # [T, P] -lr * go         (gradient of grads)
    dlr_ptr,  # [P]  -sum_t go * grads   (per-column gradient of lr, fp32/fp64)
    T,
    P,
    LR_PER_PARAM: tl.constexpr,
    NEED_SUM: tl.constexpr,
    NEED_DGRADS: tl.constexpr,
    NEED_DLR: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program per column block walks all T tasks, so both reductions over tasks stay in
    # registers and every element of go / grads is read exactly once.
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < P
    if LR_PER_PARAM:
        lr = tl.load(lr_ptr + offs, mask=mask, other=0.0).to(ACC)
    else:
        lr = tl.load(lr_ptr).to(ACC)
    acc_sum = tl.zeros([BLOCK], dtype=ACC)
    acc_lr = tl.zeros([BLOCK], dtype=ACC)
    # Row pointers advance by P per task (64-bit pointer arithmetic: no int32 overflow of t * P).
    go_ptrs = go_ptr + offs
    g_ptrs = grads_ptr + offs
    dg_ptrs = dgrads_ptr + offs
    for _t in range(T):
        go = tl.load(go_ptrs, mask=mask, other=0.0).to(ACC)
        if NEED_SUM:
            acc_sum += go
        if NEED_DGRADS:
            tl.store(dg_ptrs, (-lr * go).to(dgrads_ptr.dtype.element_ty), mask=mask)
        if NEED_DLR:
            g = tl.load(g_ptrs, mask=mask, other=0.0).to(ACC)
            acc_lr += go * g
        go_ptrs += P
        g_ptrs += P
        dg_ptrs += P
    if NEED_SUM:
        tl.store(dsum_ptr + offs, acc_sum.to(dsum_ptr.dtype.element_ty), mask=mask)
    if NEED_DLR:
        tl.store(dlr_ptr + offs, (-acc_lr).to(dlr_ptr.dtype.element_ty), mask=mask)


def _block(P: int, block_size: int | None) -> int:
    return block_size if block_size is not None else min(DEFAULT_BLOCK, pow2_at_least(P, 16))


def _launch_fwd(theta: torch.Tensor, grads: torch.Tensor, lr: torch.Tensor, block: int | None) -> torch.Tensor:
    T, P = grads.shape
    out = torch.empty((T, P), dtype=grads.dtype, device=grads.device)  # [T, P]
    BLOCK = _block(P, block)
    n_blocks = triton.cdiv(P, BLOCK)
    _inner_update_fwd_kernel[(T * n_blocks,)](
        theta,
        grads,
        lr,
        out,
        P,
        n_blocks,
        THETA_PER_TASK=theta.dim() == 2,
        LR_PER_PARAM=lr.dim() == 1,
        ACC=tl_acc(grads.dtype),
        BLOCK=BLOCK,
    )
    return out


def _launch_bwd(
    go: torch.Tensor,
    grads: torch.Tensor,
    lr: torch.Tensor,
    need_sum: bool,
    need_dgrads: bool,
    need_dlr: bool,
    block: int | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    T, P = go.shape
    acc = acc_dtype(grads.dtype)
    dsum = torch.empty(P, dtype=go.dtype, device=go.device) if need_sum else None  # [P]
    dgrads = torch.empty_like(grads) if need_dgrads else None  # [T, P]
    dlr = torch.empty(P, dtype=acc, device=go.device) if need_dlr else None  # [P], accumulator dtype
    BLOCK = _block(P, block)
    dummy = go  # never dereferenced when the matching NEED_* flag is off
    _inner_update_bwd_kernel[(triton.cdiv(P, BLOCK),)](
        go,
        grads,
        lr,
        dsum if dsum is not None else dummy,
        dgrads if dgrads is not None else dummy,
        dlr if dlr is not None else dummy,
        T,
        P,
        LR_PER_PARAM=lr.dim() == 1,
        NEED_SUM=need_sum,
        NEED_DGRADS=need_dgrads,
        NEED_DLR=need_dlr,
        ACC=tl_acc(grads.dtype),
        BLOCK=BLOCK,
    )
    return dsum, dgrads, dlr


# ---------------------------------------------------------------------------------------------
# autograd
# ---------------------------------------------------------------------------------------------


class _InnerUpdateFn(torch.autograd.Function):
    """out = theta - lr * grads; backward via :class:`_InnerUpdateBackwardFn` (differentiable)."""

    @staticmethod
    def forward(ctx, theta, grads, lr, block):  # type: ignore[override]
        ctx.save_for_backward(grads, lr)
        ctx.theta_shared = theta.dim() == 1
        ctx.block = block
        return _launch_fwd(theta, grads, lr, block)

    @staticmethod
    def backward(ctx, go):  # type: ignore[override]
        grads, lr = ctx.saved_tensors
        need_theta, need_grads, need_lr = ctx.needs_input_grad[:3]
        go = go.contiguous()  # [T, P]
        d_theta = go if (need_theta and not ctx.theta_shared) else None
        need_sum = need_theta and ctx.theta_shared
        d_grads = d_lr = None
        if need_sum or need_grads or need_lr:
            dsum, d_grads, dlr_cols = _InnerUpdateBackwardFn.apply(
                go, grads, lr, need_sum, need_grads, need_lr, ctx.block
            )
            if need_sum:
                d_theta = dsum
            if need_lr:
                d_lr = (dlr_cols.sum() if lr.dim() == 0 else dlr_cols).to(lr.dtype)
        return d_theta, d_grads, d_lr, None


class _InnerUpdateBackwardFn(torch.autograd.Function):
    """(sum_t go, -lr*go, -sum_t go*grads) from one kernel; its own backward reuses both kernels.

    With A = sum_t go [P], B = -lr*go [T,P], C = -sum_t go*grads [P] and incoming gradients
    gA, gB, gC:  d go = gA - lr*gB - gC*grads,  d grads = -gC*go,  d lr = -sum_t gB*go.
    Each of these is again an ``inner_update`` or a column of this backward, so the chain is
    differentiable to any order.
    """

    @staticmethod
    def forward(ctx, go, grads, lr, need_sum, need_dgrads, need_dlr, block):  # type: ignore[override]
        ctx.save_for_backward(go, grads, lr)
        ctx.block = block
        return _launch_bwd(go, grads, lr, need_sum, need_dgrads, need_dlr, block)

    @staticmethod
    def backward(ctx, g_sum, g_dgrads, g_dlr):  # type: ignore[override]
        go, grads, lr = ctx.saved_tensors
        T, P = go.shape
        dtype = grads.dtype
        need_go, need_grads, need_lr = ctx.needs_input_grad[:3]
        d_go = d_grads = d_lr = None
        if g_dlr is not None:
            g_dlr = g_dlr.to(dtype).contiguous()  # [P]
        if g_dgrads is not None:
            g_dgrads = g_dgrads.contiguous()  # [T, P]
        if need_go:
            x = g_sum.contiguous() if g_sum is not None else go.new_zeros(P)  # [P]
            if g_dgrads is not None:
                x = _InnerUpdateFn.apply(x, g_dgrads, lr, ctx.block)  # x - lr * gB
            if g_dlr is not None:
                x = _InnerUpdateFn.apply(x, grads, g_dlr, ctx.block)  # x - gC * grads
            d_go = x.expand(T, P).contiguous() if x.dim() == 1 else x
        if need_grads and g_dlr is not None:
            d_grads = _InnerUpdateFn.apply(go.new_zeros(P), go, g_dlr, ctx.block)  # -gC * go
        if need_lr and g_dgrads is not None:
            _, _, cols = _InnerUpdateBackwardFn.apply(
                g_dgrads, go, lr, False, False, True, ctx.block
            )  # -sum_t gB * go, per column
            d_lr = (cols.sum() if lr.dim() == 0 else cols).to(lr.dtype)
        return d_go, d_grads, d_lr, None, None, None, None


# ---------------------------------------------------------------------------------------------
# public op
# ---------------------------------------------------------------------------------------------


def inner_update(
    theta: torch.Tensor,
    grads: torch.Tensor,
    lr: float | torch.Tensor,
    *,
    block_size: int | None = None,
) -> torch.Tensor:
    """Adapted parameters ``theta - lr * grads`` for every task, shape ``[T, P]``.

    Args:
      theta: ``[P]`` shared initial parameters or ``[T, P]`` per-task parameters.
      grads: ``[T, P]`` inner-loop gradients, same dtype and device as ``theta``.
      lr: Python float (constant), 0-d tensor or ``[P]`` tensor (Meta-SGD); a tensor ``lr`` must
        have the dtype of ``theta`` and receives a gradient.
      block_size: Triton block (power of two); ``None`` picks one. For tests and tuning only.

    Dispatch follows :func:`kernels.get_backend`; the torch path is :func:`inner_update_reference`
    itself, and the arguments are validated where the kernel runs (``_dispatch`` says why).
    """
    if not triton_chosen({"theta": theta, "grads": grads, "lr": lr}):
        return inner_update_reference(theta, grads, lr)
    check_tensor(OP, "grads", grads, ndims=(2,), shape_doc="[T, P]")
    T, P = grads.shape
    if T < 1 or P < 1:
        raise ValueError(f"{OP}: `grads` must have T >= 1 tasks and P >= 1 parameters, got {(T, P)}")
    check_tensor(OP, "theta", theta, ndims=(1, 2), shape_doc=f"[P] or [T, P] = [{P}] or [{T}, {P}]")
    if tuple(theta.shape) not in ((P,), (T, P)):
        raise ValueError(
            f"{OP}: `theta` has shape {tuple(theta.shape)} but `grads` is {(T, P)}; expected [{P}] or [{T}, {P}]"
        )
    tensors = {"theta": theta, "grads": grads}
    if isinstance(lr, torch.Tensor):
        check_tensor(OP, "lr", lr, ndims=(0, 1), shape_doc=f"[] or [P] = [{P}]")
        if lr.dim() == 1 and lr.shape[0] != P:
            raise ValueError(f"{OP}: `lr` has shape {tuple(lr.shape)}; a per-parameter lr must be [{P}]")
        tensors["lr"] = lr
    else:
        check_float(OP, "lr", lr)
    check_same_device(OP, tensors)
    check_same_dtype(OP, tensors)
    if block_size is not None and (block_size < 1 or block_size & (block_size - 1)):
        raise ValueError(f"{OP}: `block_size` must be a power of two, got {block_size}")

    use_triton(OP, tensors)  # a forced Triton backend on CPU tensors without the interpreter is an error
    if not isinstance(lr, torch.Tensor):
        # A constant step becomes a 0-d tensor in the accumulation dtype: Triton passes Python
        # floats as fp32, which would silently lose precision for fp64 (gradcheck) inputs.
        lr = torch.full((), lr, dtype=acc_dtype(grads.dtype), device=grads.device)
    return _InnerUpdateFn.apply(theta, grads, lr, block_size)


def inner_update_params(
    params: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    lr: float | torch.Tensor | dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """:func:`inner_update` over a dict of parameters, the form the MAML engine holds them in.

    Args:
      params: ``{name: [*S]}`` shared initial parameters or ``{name: [T, *S]}`` per-task ones.
      grads: ``{name: [T, *S]}`` inner-loop gradients (same keys).
      lr: a float or 0-d tensor for all, or ``{name: [*S]}`` per-parameter (Meta-SGD).
    Returns ``{name: [T, *S]}``. Where Triton does not run this is the update as written,
    ``theta - lr * g`` per tensor (broadcasting a shared ``theta [*S]`` over tasks). Where it runs,
    one kernel launch per tensor through flat views (no concatenation copy), every call validated
    like :func:`inner_update`, and errors name the parameter.
    """
    if not triton_chosen({"params": next(iter(params.values()), None), "grads": next(iter(grads.values()), None)}):
        return {
            name: inner_update_reference(p, grads[name], lr[name] if isinstance(lr, dict) else lr)
            for name, p in params.items()
        }
    if params.keys() != grads.keys():
        raise ValueError(f"{OP}: `params` and `grads` have different keys: {sorted(params.keys() ^ grads.keys())}")
    if isinstance(lr, dict) and lr.keys() != params.keys():
        raise ValueError(f"{OP}: `lr` has different keys from `params`: {sorted(lr.keys() ^ params.keys())}")
    out = {}
    for name, p in params.items():
        g = grads[name]
        if not isinstance(g, torch.Tensor) or g.dim() < 1:
            raise ValueError(f"{OP}: grads[{name!r}] must be a [T, ...] tensor")
        T = g.shape[0]
        shared = p.dim() == g.dim() - 1
        lr_n = lr[name] if isinstance(lr, dict) else lr
        try:
            theta = p.reshape(-1) if shared else p.reshape(T, -1)
            lr_flat = lr_n.reshape(-1) if isinstance(lr_n, torch.Tensor) and lr_n.dim() > 0 else lr_n
            adapted = inner_update(theta, g.reshape(T, -1), lr_flat)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise type(exc)(f"parameter {name!r}: {exc}") from exc
        out[name] = adapted.view(g.shape)
    return out
