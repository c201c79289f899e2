"""EWC penalty ``sum_i F_i (theta_i - theta*_i)^2`` with its gradient from the same pass.

Why fused: the penalty is evaluated every training step for every parameter, and its gradient
``2 F (theta - theta*)`` needs the same three reads. The forward kernel reads F, theta and theta*
once, writes per-block partial sums of the value and (when theta needs a gradient) the gradient
itself; the backward is then a scalar rescale of that saved gradient.

Determinism: partial sums are reduced by torch in a fixed order (no atomics), so the value is
bitwise reproducible run to run.

Differentiability: first order only w.r.t. theta and theta_star (and fisher, via a torch fallback
``(theta - theta*)^2``). Double backward raises (``once_differentiable``) rather than silently
returning zero: the gradient is a saved buffer, not a graph. EWC needs first order only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from metalab.kernels._dispatch import (
    acc_dtype,
    check_same_device,
    check_same_dtype,
    check_tensor,
    triton_chosen,
    use_triton,
)
from metalab.kernels._tl import pow2_at_least, tl_acc

OP = "ewc_penalty"
DEFAULT_BLOCK = 1024


def ewc_penalty_reference(fisher: torch.Tensor, theta: torch.Tensor, theta_star: torch.Tensor) -> torch.Tensor:
    """``sum F * (theta - theta_star)^2`` in torch (autograd by torch), accumulated in fp32/fp64."""
    acc = torch.float64 if torch.float64 in (fisher.dtype, theta.dtype) else torch.float32
    diff = theta.to(acc) - theta_star.to(acc)
    return (fisher.to(acc) * diff.square()).sum()


@triton.jit
def _ewc_fwd_kernel(
    f_ptr,  # [P]
    theta_ptr,  # [P]
    star_ptr,  # [P]
    partial_ptr,  # [n_blocks] per-program partial sums of the value
    grad_ptr,  # [P] 2 F (theta - theta*) (written only if NEED_GRAD)
    P,
    NEED_GRAD: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < P
    f = tl.load(f_ptr + offs, mask=mask, other=0.0).to(ACC)
    d = tl.load(theta_ptr + offs, mask=mask, other=0.0).to(ACC) - tl.load(star_ptr + offs, mask=mask, other=0.0).to(ACC)
    fd = f * d
    tl.store(partial_ptr + pid, tl.sum(fd * d, axis=0))
    if NEED_GRAD:
        tl.store(grad_ptr + offs, (2.0 * fd).to(grad_ptr.dtype.element_ty), mask=mask)


def _launch(
    fisher: torch.Tensor,
    theta: torch.Tensor,
    theta_star: torch.Tensor,
    need_grad: bool,
    block: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    P = theta.numel()
    acc = torch.float64 if torch.float64 in (fisher.dtype, theta.dtype) else torch.float32
    BLOCK = block if block is not None else min(DEFAULT_BLOCK, pow2_at_least(P, 16))
    n_blocks = triton.cdiv(P, BLOCK)
    partial = torch.empty(n_blocks, dtype=acc, device=theta.device)  # [n_blocks]
    grad = torch.empty_like(theta) if need_grad else None  # [P] in theta's dtype
    _ewc_fwd_kernel[(n_blocks,)](
        fisher,
        theta,
        theta_star,
        partial,
        grad if grad is not None else partial,
        P,
        NEED_GRAD=need_grad,
        ACC=tl_acc(acc),
        BLOCK=BLOCK,
    )
    return partial.sum(), grad


class _EwcPenaltyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fisher, theta, theta_star, block):  # type: ignore[override]
        need_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        value, grad = _launch(fisher, theta, theta_star, need_grad, block)
        ctx.save_for_backward(grad, fisher, theta, theta_star)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, go):  # type: ignore[override]
        grad, fisher, theta, theta_star = ctx.saved_tensors
        d_fisher = d_theta = d_star = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            g = grad * go.to(grad.dtype)  # [P]: d value / d theta, scaled by the incoming grad
            d_theta = g if ctx.needs_input_grad[1] else None
            d_star = -g if ctx.needs_input_grad[2] else None
        if ctx.needs_input_grad[0]:  # rare (learned Fisher); plain torch
            acc = acc_dtype(theta.dtype)
            d_fisher = ((theta.to(acc) - theta_star.to(acc)).square() * go).to(fisher.dtype)
        return d_fisher, d_theta, d_star, None


def ewc_penalty(
    fisher: torch.Tensor,
    theta: torch.Tensor,
    theta_star: torch.Tensor,
    *,
    block_size: int | None = None,
) -> torch.Tensor:
    """EWC quadratic penalty ``sum F * (theta - theta_star)^2`` as a 0-d tensor with autograd.

    Args:
      fisher: Fisher diagonal, same shape as ``theta`` (any float dtype; usually fp32).
      theta: current parameters (any shape, contiguous).
      theta_star: anchor parameters of the previous task(s), same shape and dtype as ``theta``.
      block_size: Triton block (power of two); tests and tuning only.
    The value is fp32 (fp64 if ``theta`` or ``fisher`` is fp64); the caller applies lambda / 2.
    Arguments are validated where the kernel runs; elsewhere this is :func:`ewc_penalty_reference`.
    """
    if not triton_chosen({"fisher": fisher, "theta": theta, "theta_star": theta_star}):
        return ewc_penalty_reference(fisher, theta, theta_star)
    check_tensor(OP, "theta", theta, ndims=tuple(range(0, 9)), shape_doc="[...]")
    shape_doc = f"{list(theta.shape)} (the shape of `theta`)"
    check_tensor(OP, "fisher", fisher, ndims=(theta.dim(),), shape_doc=shape_doc)
    check_tensor(OP, "theta_star", theta_star, ndims=(theta.dim(),), shape_doc=shape_doc)
    for arg, t in (("fisher", fisher), ("theta_star", theta_star)):
        if t.shape != theta.shape:
            raise ValueError(f"{OP}: `{arg}` has shape {tuple(t.shape)}, expected {shape_doc}")
    if theta.numel() < 1:
        raise ValueError(f"{OP}: `theta` is empty")
    if block_size is not None and (block_size < 1 or block_size & (block_size - 1)):
        raise ValueError(f"{OP}: `block_size` must be a power of two, got {block_size}")
    tensors = {"fisher": fisher, "theta": theta, "theta_star": theta_star}
    check_same_device(OP, tensors)
    check_same_dtype(OP, {"theta": theta, "theta_star": theta_star})
    use_triton(OP, tensors)  # a forced Triton backend on CPU tensors without the interpreter is an error
    return _EwcPenaltyFn.apply(fisher, theta, theta_star, block_size)
