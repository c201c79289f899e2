"""Small helpers shared by the Triton launchers (not by the kernels themselves)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def tl_acc(dtype: torch.dtype) -> tl.dtype:
    """Triton accumulation dtype for a torch input dtype: fp64 stays fp64, the rest use fp32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def pow2_at_least(n: int, floor: int = 1) -> int:
    """Smallest power of two >= max(n, floor) (Triton block sizes must be powers of two)."""
    return max(floor, triton.next_power_of_2(max(1, n)))
