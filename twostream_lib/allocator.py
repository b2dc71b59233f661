"""Large CPU tensors from the heap instead of fresh memory maps (glibc's ``malloc``), for CPU runs.

glibc serves every allocation above its mmap threshold (at most 32 MiB, adjusted at run time) with
a fresh ``mmap``, which the kernel fills with zeroed pages one page fault at a time on first touch,
and gives it back with ``munmap`` when it is freed. A CPU training step allocates the same large
buffers every time (the 3D conv fusion's 40 MB of columns, a tower's im2col buffers and
activations), so it paid those page faults at every step, most in the 3D conv fusion head
(``benchmarks/bench_arithmetic.py`` times the steps with and without, setting
``pinned_glibc_malloc``, in ``results/benchmarks/arithmetic.json``). With the thresholds raised, a
freed buffer goes back to the heap and the next step reuses its pages.

The cost is memory: up to :data:`TRIM_THRESHOLD` of freed heap stays with each process instead of
going back to the system, which the demo's few processes on small data afford. GPU runs, whose
host memory holds decoded frames and large caches, keep glibc's defaults. Nothing numeric changes:
where a buffer lies does not change what is computed into it (the golden digests of
``tests/test_golden.py`` are the same either way).
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "TOP_PAD", "reuse_large_allocations"]

MMAP_THRESHOLD = 256 << 20  # allocations up to 256 MiB come from the heap (glibc's own: at most 32 MiB)
TRIM_THRESHOLD = 1 << 30  # freed heap kept for reuse, up to 1 GiB, before it is returned to the system
TOP_PAD = 64 << 20  # the heap grows 64 MiB at a time (fewer system calls)

# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

_applied = False


def reuse_large_allocations() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (once); returns whether they are raised:
    False where the C library is not glibc (``mallopt`` missing, e.g. macOS or musl), which only
    means the steps run at glibc's default speed."""
    global _applied
    if _applied:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; setting the mmap threshold also stops glibc from adjusting it
    _applied = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
    return _applied
