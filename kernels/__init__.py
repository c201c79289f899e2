"""Triton kernels for metalab's two hot paths, each beside its torch reference and a dispatcher.

Inner loop (meta-learning):
  :func:`inner_update`      theta_t = theta - lr * g_t for T tasks (Meta-SGD lr), any-order autograd
  :func:`inner_update_params`  the same over a dict {name: tensor} of parameters
  :func:`anil_head_adapt`   K softmax-regression steps of a linear head, one program per task

Fisher information (continual learning, EWC):
  :func:`linear_fisher`       sum_n (delta_n^2)^T (a_n^2), exact per-sample Fisher of a linear layer
                              (the continual Fisher's linear layers where Triton runs)
  :func:`linear_fisher_bias`  sum_n delta_n^2, the bias part of the same
  :func:`ewc_penalty`         sum F * (theta - theta_star)^2 and its gradient in one pass (EWC's penalty)
  :func:`fisher_accumulate`   F <- gamma * F + mean_n g_n^2 over per-sample gradient rows [N, P], fused
                              (a standalone op: the continual Fisher never holds such rows)

Backend: ``set_backend("auto"|"torch"|"triton")``, ``get_backend()``, ``with backend(name):``.
"auto" runs Triton on CUDA tensors and the torch references elsewhere; inputs are validated
where a kernel runs. The references are the specification: tests hold every kernel (and backward)
against them under ``TRITON_INTERPRET=1``.
"""

from metalab.kernels._dispatch import BACKENDS, backend, get_backend, interpreter_active, set_backend, triton_runs
from metalab.kernels.anil import anil_head_adapt, anil_head_adapt_reference
from metalab.kernels.ewc import ewc_penalty, ewc_penalty_reference
from metalab.kernels.fisher import (
    fisher_accumulate,
    fisher_accumulate_reference,
    linear_fisher,
    linear_fisher_bias,
    linear_fisher_bias_reference,
    linear_fisher_reference,
)
from metalab.kernels.inner_step import inner_update, inner_update_params, inner_update_reference

__all__ = [
    "BACKENDS",
    "backend",
    "get_backend",
    "triton_runs",
    "set_backend",
    "interpreter_active",
    "inner_update",
    "inner_update_reference",
    "inner_update_params",
    "anil_head_adapt",
    "anil_head_adapt_reference",
    "fisher_accumulate",
    "fisher_accumulate_reference",
    "linear_fisher",
    "linear_fisher_reference",
    "linear_fisher_bias",
    "linear_fisher_bias_reference",
    "ewc_penalty",
    "ewc_penalty_reference",
]
