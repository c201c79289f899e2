"""Diagonal Fisher information: fused square-and-accumulate, and the exact linear-layer identity.

The Fisher diagonal used by EWC is E_n[g_n^2], the mean of *per-sample* squared gradients; the
square of a mini-batch mean gradient is a different (and wrong) quantity. Two kernels:

``fisher_accumulate(F, G, gamma)``  F_new = gamma * F + mean_n G[n]^2 for stacked per-sample
    gradients G [N, P]; the online-EWC decay and the new estimate in one read of G.

``linear_fisher(a, delta)``  for a linear layer z_n = W a_n + b the per-sample weight gradient is
    the outer product delta_n a_n^T, so sum_n (delta_n a_n^T)^2 = (delta^2)^T (a^2) elementwise:
    a matmul of squared inputs. The kernel squares tiles as it loads them, so neither the squared
    inputs nor the N per-sample gradients [N, Dout, Din] are ever written to memory.
    ``linear_fisher_bias(delta)`` is the bias part, sum_n delta_n^2.

Conventions for callers (the continual learner):
  * ``delta`` must be the per-sample output gradients dL_n/dz_n, i.e. from a *sum*-reduced loss
    (a mean-reduced loss scales every delta_n by 1/N and the result by 1/N^2).
  * The identity holds when each sample contributes one (a_n, delta_n) pair. For layers applied
    at several positions per sample (convolutions, sequences) the per-sample gradient is a sum of
    outer products and its square does not factor; use per-sample gradients + fisher_accumulate.
  * ``linear_fisher`` returns a *sum* over samples; divide by N for the mean (E[g^2]).

Results are statistics, not differentiable (computed under ``no_grad``); accumulation is fp32
(fp64 if an input is fp64) whatever the input dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from metalab.kernels._dispatch import (
    check_float,
    check_same_device,
    check_tensor,
    triton_chosen,
    use_triton,
)
from metalab.kernels._tl import pow2_at_least, tl_acc


def _acc(*dtypes: torch.dtype) -> torch.dtype:
    return torch.float64 if torch.float64 in dtypes else torch.float32


# ---------------------------------------------------------------------------------------------
# torch references
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def fisher_accumulate_reference(fisher: torch.Tensor, per_sample_grads: torch.Tensor, gamma: float) -> torch.Tensor:
    """``gamma * fisher + mean_n per_sample_grads[n]^2`` -> [P] in ``fisher``'s dtype."""
    acc = _acc(fisher.dtype, per_sample_grads.dtype)
    out = gamma * fisher.to(acc) + per_sample_grads.to(acc).square().mean(dim=0)  # [P]
    return out.to(fisher.dtype)


@torch.no_grad()
def linear_fisher_reference(activations: torch.Tensor, output_grads: torch.Tensor) -> torch.Tensor:
    """``(delta^2)^T @ (a^2)`` -> [Dout, Din]: the sum over samples of squared weight gradients."""
    acc = _acc(activations.dtype, output_grads.dtype)
    a2 = activations.to(acc).square()  # [N, Din]
    d2 = output_grads.to(acc).square()  # [N, Dout]
    return d2.T @ a2  # [Dout, Din]


@torch.no_grad()
def linear_fisher_bias_reference(output_grads: torch.Tensor) -> torch.Tensor:
    """``sum_n delta_n^2`` -> [Dout]: the sum over samples of squared bias gradients."""
    acc = _acc(output_grads.dtype)
    return output_grads.to(acc).square().sum(dim=0)


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _square_accumulate_kernel(
    f_ptr,  # [P] previous Fisher (read only if HAS_F)
    g_ptr,  # [N, P] per-sample gradients
    coef_ptr,  # [2] (gamma, scale) in the accumulation dtype
    out_ptr,  # [P]
    N,
    P,
    HAS_F: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    # out = gamma * F + scale * sum_n g[n]^2. One program per column block; [BLOCK_N, BLOCK_P]
    # tiles give each program several rows in flight, and the column sum stays in registers.
    cols = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    col_mask = cols < P
    rows = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_P], dtype=ACC)
    ptrs = g_ptr + rows[:, None].to(tl.int64) * P + cols[None, :]
    for n0 in range(0, N, BLOCK_N):
        m = ((n0 + rows) < N)[:, None] & col_mask[None, :]
        g = tl.load(ptrs, mask=m, other=0.0).to(ACC)
        acc += g * g
        ptrs += BLOCK_N * P
    scale = tl.load(coef_ptr + 1)
    out = tl.sum(acc, axis=0) * scale  # [BLOCK_P]
    if HAS_F:
        gamma = tl.load(coef_ptr)
        out += gamma * tl.load(f_ptr + cols, mask=col_mask, other=0.0).to(ACC)
    tl.store(out_ptr + cols, out.to(out_ptr.dtype.element_ty), mask=col_mask)


@triton.jit
def _linear_fisher_kernel(
    a_ptr,  # [N, Din] activations
    d_ptr,  # [N, Dout] output gradients
    out_ptr,  # [Dout, Din]
    N,
    Din,
    Dout,
    ACC: tl.constexpr,
    BLOCK_M: tl.constexpr,  # rows of the output (Dout)
    BLOCK_N: tl.constexpr,  # columns of the output (Din)
    BLOCK_K: tl.constexpr,  # samples per step
):
    # out[m, n] = sum_k d[k, m]^2 * a[k, n]^2: a tiled matmul over the sample axis whose operands
    # are squared in registers right after loading.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    om = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    on = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ok = tl.arange(0, BLOCK_K)
    m_mask = om < Dout
    n_mask = on < Din
    d_ptrs = d_ptr + ok[:, None].to(tl.int64) * Dout + om[None, :]  # [BLOCK_K, BLOCK_M]
    a_ptrs = a_ptr + ok[:, None].to(tl.int64) * Din + on[None, :]  # [BLOCK_K, BLOCK_N]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for k0 in range(0, N, BLOCK_K):
        k_mask = (k0 + ok) < N
        d = tl.load(d_ptrs, mask=k_mask[:, None] & m_mask[None, :], other=0.0).to(ACC)
        a = tl.load(a_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0).to(ACC)
        # "ieee": a TF32 product would lose ~3 decimal digits, beyond the fp32 contract.
        acc = tl.dot(tl.trans(d * d), a * a, acc, input_precision="ieee")
        d_ptrs += BLOCK_K * Dout
        a_ptrs += BLOCK_K * Din
    out_ptrs = out_ptr + om[:, None].to(tl.int64) * Din + on[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def _launch_square_accumulate(
    fisher: torch.Tensor | None,
    grads: torch.Tensor,
    gamma: float,
    scale: float,
    out_dtype: torch.dtype,
    block_p: int | None,
) -> torch.Tensor:
    N, P = grads.shape
    acc = _acc(grads.dtype, *(() if fisher is None else (fisher.dtype,)))
    out = torch.empty(P, dtype=out_dtype, device=grads.device)  # [P]
    # gamma and 1/N travel as a device tensor: Triton passes Python floats as fp32, which would
    # round them for fp64 inputs.
    coef = torch.tensor([gamma, scale], dtype=acc, device=grads.device)
    BLOCK_P = block_p if block_p is not None else min(256, pow2_at_least(P, 16))
    BLOCK_N = min(16, pow2_at_least(N))
    _square_accumulate_kernel[(triton.cdiv(P, BLOCK_P),)](
        fisher if fisher is not None else grads,
        grads,
        coef,
        out,
        N,
        P,
        HAS_F=fisher is not None,
        ACC=tl_acc(acc),
        BLOCK_N=BLOCK_N,
        BLOCK_P=BLOCK_P,
    )
    return out


def _launch_linear_fisher(a: torch.Tensor, d: torch.Tensor, blocks: tuple[int, int, int] | None) -> torch.Tensor:
    N, Din = a.shape
    Dout = d.shape[1]
    acc = _acc(a.dtype, d.dtype)
    out = torch.empty((Dout, Din), dtype=acc, device=a.device)  # [Dout, Din]
    if blocks is None:
        # tl.dot needs every block dimension >= 16. 64 x 64 x 16 with 8 warps compiles without
        # register spills on sm_80/sm_90 (64 x 64 x 32 with 4 warps spills: compile_check.py).
        blocks = (min(64, pow2_at_least(Dout, 16)), min(64, pow2_at_least(Din, 16)), 16)
    BM, BN, BK = blocks
    grid = (triton.cdiv(Dout, BM), triton.cdiv(Din, BN))
    _linear_fisher_kernel[grid](
        a,
        d,
        out,
        N,
        Din,
        Dout,
        ACC=tl_acc(acc),
        BLOCK_M=BM,
        BLOCK_N=BN,
        BLOCK_K=BK,
        num_warps=8 if BM * BN >= 4096 else 4,
    )
    return out


def _check_block(op: str, arg: str, b: int, floor: int = 1) -> None:
    if b < floor or b & (b - 1):
        raise ValueError(f"{op}: `{arg}` must be a power of two >= {floor}, got {b}")


# ---------------------------------------------------------------------------------------------
# public ops
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def fisher_accumulate(
    fisher: torch.Tensor,
    per_sample_grads: torch.Tensor,
    gamma: float,
    *,
    block_size: int | None = None,
) -> torch.Tensor:
    """Online-EWC Fisher update ``gamma * fisher + mean_n per_sample_grads[n]^2``.

    Args:
      fisher: [P] running Fisher diagonal (any float dtype; the result has this dtype).
      per_sample_grads: [N, P] one gradient row per sample (any float dtype, N >= 1).
      gamma: decay of the old estimate, >= 0 (0 replaces it, 1 sums as in plain multi-task EWC).
      block_size: Triton column block (power of two); tests and tuning only.
    Returns a new [P] tensor (not differentiable).
    """
    op = "fisher_accumulate"
    if not triton_chosen({"fisher": fisher, "per_sample_grads": per_sample_grads}):
        return fisher_accumulate_reference(fisher, per_sample_grads, gamma)
    check_tensor(op, "fisher", fisher, ndims=(1,), shape_doc="[P]")
    check_tensor(op, "per_sample_grads", per_sample_grads, ndims=(2,), shape_doc="[N, P]")
    N, P = per_sample_grads.shape
    if N < 1 or P < 1:
        raise ValueError(f"{op}: `per_sample_grads` must be [N, P] with N, P >= 1, got {(N, P)}")
    if fisher.shape[0] != P:
        raise ValueError(
            f"{op}: `fisher` has shape {tuple(fisher.shape)} but `per_sample_grads` has P = {P} columns; expected [{P}]"
        )
    gamma = check_float(op, "gamma", gamma, low=0.0)
    if block_size is not None:
        _check_block(op, "block_size", block_size)
    tensors = {"fisher": fisher, "per_sample_grads": per_sample_grads}
    check_same_device(op, tensors)
    use_triton(op, tensors)
    return _launch_square_accumulate(fisher, per_sample_grads, gamma, 1.0 / N, fisher.dtype, block_size)


@torch.no_grad()
def linear_fisher(
    activations: torch.Tensor,
    output_grads: torch.Tensor,
    *,
    blocks: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Sum over samples of squared per-sample weight gradients of a linear layer, [Dout, Din].

    Args:
      activations: [N, Din] the layer's inputs a_n.
      output_grads: [N, Dout] per-sample gradients of the loss w.r.t. the layer's outputs
        (sum-reduced loss, see the module docstring).
      blocks: (BLOCK_M over Dout, BLOCK_N over Din, BLOCK_K over samples), powers of two >= 16;
        tests and tuning only.
    Returns ``sum_n (delta_n^2)^T (a_n^2)`` in fp32 (fp64 if an input is fp64); divide by N
    for E[g^2]. Matches ``W.grad``'s layout ([out_features, in_features]).
    """
    op = "linear_fisher"
    if not triton_chosen({"activations": activations, "output_grads": output_grads}):
        return linear_fisher_reference(activations, output_grads)
    check_tensor(op, "activations", activations, ndims=(2,), shape_doc="[N, Din]")
    check_tensor(op, "output_grads", output_grads, ndims=(2,), shape_doc="[N, Dout]")
    N, Din = activations.shape
    if output_grads.shape[0] != N:
        raise ValueError(f"{op}: `output_grads` has {output_grads.shape[0]} samples but `activations` has {N}")
    if N < 1 or Din < 1 or output_grads.shape[1] < 1:
        raise ValueError(
            f"{op}: need N, Din, Dout >= 1, got activations {tuple(activations.shape)}, "
            f"output_grads {tuple(output_grads.shape)}"
        )
    if blocks is not None:
        if len(blocks) != 3:
            raise ValueError(f"{op}: `blocks` must be (BLOCK_M, BLOCK_N, BLOCK_K), got {blocks}")
        for name, b in zip(("BLOCK_M", "BLOCK_N", "BLOCK_K"), blocks):
            _check_block(op, f"blocks.{name}", b, floor=16)
    tensors = {"activations": activations, "output_grads": output_grads}
    check_same_device(op, tensors)
    use_triton(op, tensors)
    return _launch_linear_fisher(activations, output_grads, blocks)


@torch.no_grad()
def linear_fisher_bias(output_grads: torch.Tensor, *, block_size: int | None = None) -> torch.Tensor:
    """Sum over samples of squared per-sample bias gradients, ``sum_n delta_n^2`` -> [Dout].

    Separate from :func:`linear_fisher` because layers without bias should not pay for it and
    because it is a column reduction, not a matmul (it reuses the square-accumulate kernel).
    """
    op = "linear_fisher_bias"
    if not triton_chosen({"output_grads": output_grads}):
        return linear_fisher_bias_reference(output_grads)
    check_tensor(op, "output_grads", output_grads, ndims=(2,), shape_doc="[N, Dout]")
    N, Dout = output_grads.shape
    if N < 1 or Dout < 1:
        raise ValueError(f"{op}: `output_grads` must be [N, Dout] with N, Dout >= 1, got {(N, Dout)}")
    if block_size is not None:
        _check_block(op, "block_size", block_size)
    tensors = {"output_grads": output_grads}
    use_triton(op, tensors)
    return _launch_square_accumulate(None, output_grads, 0.0, 1.0, _acc(output_grads.dtype), block_size)
