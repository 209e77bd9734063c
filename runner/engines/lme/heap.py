"""Give freed heap memory back to the operating system after a large set-up.

glibc's malloc keeps freed small and medium blocks (the update builder's per-block arrays,
a few MB each) in the process heap, resident, and the evaluation's large arrays (mmap'ed)
then come on top: on the 1M-row benchmark ~90 MB of the peak was such garbage. malloc_trim
returns it. Anywhere without glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from typing import Any

TRIM_BYTES = 64 * 2 ** 20  # trim only after set-ups that allocated at least this much


@lru_cache(maxsize=1)
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_freed(allocated_bytes: float) -> bool:
    """malloc_trim(0) when a set-up allocated at least TRIM_BYTES (small fits skip the call)."""
    libc = _libc()
    if libc is None or allocated_bytes < TRIM_BYTES:
        return False
    return bool(libc.malloc_trim(0))
