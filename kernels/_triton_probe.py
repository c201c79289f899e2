"""A trivial Triton kernel whose type tells whether Triton kernels in this process are interpreted.

``triton.jit`` returns an ``InterpretedFunction`` when ``TRITON_INTERPRET=1`` was set at decoration
time and a ``JITFunction`` otherwise; every kernel in ``kernels/`` is decorated at import, so this
probe, imported with them, answers for all of them.
"""

import triton
import triton.language as tl


@triton.jit
def probe_kernel(x_ptr):  # pragma: no cover - never launched
    tl.store(x_ptr, tl.load(x_ptr))
