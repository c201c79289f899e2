"""Process-wide CPU settings that decide speed but not results.

Why ``retain_freed_memory``: glibc's malloc serves every block above 32 MB with a fresh ``mmap`` and
returns it to the OS on ``free``. A batched meta-step allocates and frees dozens of such blocks (one
grouped convolution over 400 Omniglot images makes 80 MB activations), so each step the kernel has to
hand out and zero those pages again: a first-order MAML meta-step ran 1.5x faster without that on
this CPU (README, issue 3), while learn2learn's per-task tensors (15 MB) stay in the heap. Telling malloc never
to use ``mmap`` and never to trim the heap keeps freed blocks for reuse, which is what jemalloc or
tcmalloc (the allocators PyTorch's CPU tuning guide recommends) do. The cost: the process keeps its
peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (no ``mmap`` blocks, no trimming).

    Returns whether the setting took effect (False off glibc, e.g. macOS or musl: nothing changes).
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def heap_free_bytes() -> int | None:
    """Bytes freed but kept in malloc's heap (``mallinfo2().fordblks``); None where unavailable."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    libc.mallinfo2.restype = MallInfo2
    return int(libc.mallinfo2().fordblks)
