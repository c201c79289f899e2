"""metalab.runtime: glibc keeps freed large blocks for reuse only when asked to."""

import subprocess
import sys

import pytest

from metalab.runtime import heap_free_bytes

pytestmark = pytest.mark.skipif(heap_free_bytes() is None, reason="needs glibc >= 2.33 (mallinfo2)")

PROBE = """
from metalab.runtime import heap_free_bytes, retain_freed_memory
if {retain}:
    assert retain_freed_memory()
block = bytearray(64 * 2**20)  # above glibc's 32 MB mmap ceiling
del block
print(heap_free_bytes())
"""


def freed_bytes_kept(retain: bool) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(retain=retain)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


def test_freed_large_block_stays_in_the_heap_only_when_retained():
    assert freed_bytes_kept(retain=True) >= 64 * 2**20
    assert freed_bytes_kept(retain=False) < 64 * 2**20  # default glibc: unmapped, back to the OS
