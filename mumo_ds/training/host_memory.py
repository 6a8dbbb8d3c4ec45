"""Keep freed host memory in the process, so CPU training steps stop page-faulting their activations in.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves large blocks with a fresh
``mmap`` (every block above its threshold, which adapts up to 32 MiB) and gives them back to the
kernel on ``free``; it also trims the top of its heap. A training step frees its activations and the
next step allocates them again, so on CPU every step touches hundreds of MB of new pages: ~170,000
page faults and ~15% of a bf16 step of the matched-size model in bench/train_throughput.py. Turning
both off keeps freed blocks for reuse, as the CUDA caching allocator does on GPUs: the resident set
stays at its peak instead of shrinking between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4


def retain_freed_memory() -> bool:
    """Make glibc malloc keep what is freed (no mmap per large block, no heap trimming).

    Returns False, changing nothing, where the C library is not glibc (musl, macOS, Windows). Affects
    this process only; call it once, early (blocks mmapped before stay mmapped).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
