"""Process memory around large data and set-ups: freed heap returned, no huge pages.

glibc's malloc keeps freed small and medium blocks (the update builder's per-block arrays,
a few MB each) in the process heap, resident, and the evaluation's large arrays (mmap'ed)
then come on top: on the 1M-row benchmark ~90 MB of the peak was such garbage. malloc_trim
returns it. Anywhere without glibc this does nothing.

numpy also asks the kernel for 2 MB pages (madvise) for every array of 4 MB or more; heap
memory inside such pages that is freed and reused stays resident in whole huge pages. A large
set-up, or reading a data file of a few MB or more, turns that advice off for the rest of the
process, as NUMPY_MADVISE_HUGEPAGE=0 does at start-up (unless that variable is set): the 1M-row
run's peak 916 -> 861 MB, the fit no slower (12.8 against 13.3 s).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
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


def small_pages(allocated_bytes: float) -> bool:
    """Stop numpy's huge-page advice for this process before a set-up of at least TRIM_BYTES;
    False when it stays (small set-up, NUMPY_MADVISE_HUGEPAGE set, or no such numpy switch)."""
    if allocated_bytes < TRIM_BYTES or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return False
    import numpy as np

    core = getattr(np, "_core", None) or getattr(np, "core", None)
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if switch is None:
        return False
    switch(False)
    return True
