"""Shared helpers for the kernel tests (which run the Triton kernels under TRITON_INTERPRET=1).

Tolerances follow the kernels' contract: fp32 to 1e-5 and bf16 inputs (fp32 accumulation) to
1e-2, measured as a *norm-wise* relative error ``max|a - b| / max|b|`` so that entries of the
reference that happen to be near zero do not turn rounding noise into failures.
"""

from __future__ import annotations

import pytest
import torch

from metalab import kernels

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2, torch.float64: 1e-12}


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Norm-wise relative error, computed in float64."""
    a, e = actual.detach().double(), expected.detach().double()
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != {tuple(e.shape)}"
    scale = e.abs().max().item()
    return (a - e).abs().max().item() / (scale if scale > 0 else 1.0)


def assert_rel(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    err = rel_err(actual, expected)
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]:g} ({dtype})"


@pytest.fixture
def close():
    """``close(actual, expected, dtype, what)`` asserts the dtype's relative tolerance."""
    return assert_rel


@pytest.fixture(autouse=True)
def _require_interpreter():
    # Every kernel test forces the Triton backend on CPU tensors: this only means something if the
    # kernels really are interpreted (TRITON_INTERPRET=1 was set before `kernels` was imported).
    if not torch.cuda.is_available():
        assert kernels.interpreter_active(), "kernel tests need TRITON_INTERPRET=1 (tests/conftest.py)"
    yield
