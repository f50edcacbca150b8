"""Keep glibc malloc from handing activation-sized blocks back to the kernel between training steps.

Why: on CPU every forward/backward allocates and frees the same few-MB activation tensors. glibc serves
large blocks with mmap and returns them with munmap (or trims the heap top), so each step re-faults and
re-zeroes those pages: ~10,000 minor page faults per ConvMixer-64/4 step at batch 128 on this machine.
Raising the mmap and trim thresholds makes glibc reuse freed blocks, as jemalloc/tcmalloc do (Intel's
PyTorch CPU tuning guide preloads one of those for the same reason). Measured (benchmarks/RESULTS.md):
page faults per step fall ~100×, and the train step gets 7-10% faster. The cost is that the process keeps its
peak heap until it exits, which a training process does anyway. CUDA memory is not affected.

Only glibc has `mallopt`; elsewhere (macOS, musl) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLDS = (1 << 30, 32 << 20)  # older glibc refuses more than half its 64 MiB heap size
_TRIM_THRESHOLD = (1 << 31) - 1

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; True if glibc accepted them."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mmap_ok = any(mallopt(_M_MMAP_THRESHOLD, value) for value in _MMAP_THRESHOLDS)
    _done = mmap_ok and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _done
