"""Keep freed memory in the process instead of handing it back to the OS after every tensor.

A meta-iteration allocates and frees many tensors of a few MB each (activations of T x E x H steps). glibc's
malloc gives freed memory back to the OS (it unmaps large blocks and trims the top of its heaps once enough is
free), so the next tensors start on fresh pages that the kernel zero-fills one by one: two Navigation2D
iterations of the standard setting take about 55,000 page faults by default and 8,000 with this setting, and
the gradient stages get about a quarter faster. Raising malloc's mmap and trim thresholds keeps freed blocks
for reuse, the effect PyTorch's CPU tuning guide gets from jemalloc or tcmalloc. The price: the process keeps
its peak heap until it exits.

It changes a process-wide setting, so the library never calls it on import: the CLI, the benchmark and
the scripts do, and Python users call it once if they want the speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
_TRIM_THRESHOLD = 2**31 - 1

_applied = False


def reuse_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed blocks up to 32 MiB instead of unmapping them; True if it took.

    A no-op returning False where the C library is not glibc (macOS, musl, Windows). Idempotent.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                       _TRIM_THRESHOLD))
    return _applied
