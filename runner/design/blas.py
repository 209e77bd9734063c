"""One BLAS thread while a design is built, with a threadpoolctl controller of its own.

The rank check's dot products and the response check's least squares run numpy's BLAS
over every row; on 10,000+ rows OpenBLAS starts threads for them, which on a shared
2-core machine made the students design 12 ms instead of 4. The engines limit BLAS with
their own controller (`runner.engines.common.one_blas_thread`), which lists the BLAS
libraries loaded when it is made, at the first fit: scipy's OpenBLAS (the one LAPACK
calls such as dpotrf use) is loaded by then. A controller shared with the design, made at
the first design build, could be made before scipy's BLAS is loaded and would then never
limit it; this one only has to cover numpy's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

_CONTROLLER: Any = None


def one_blas_thread() -> AbstractContextManager[Any]:
    """Limit the BLAS libraries loaded at the first call to one thread (made once: scanning
    the loaded libraries costs ~1 ms)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)
