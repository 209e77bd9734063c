"""LAPACK's dpotri on the leading block of a larger matrix, in place (scipy's wrapper copies it).

scipy.linalg.lapack.dpotri takes a contiguous array: the leading rows x rows block of the
tail factor (leading dimension nt) is copied first, 71 MB and ~25 ms on a million rows,
and the inverse lives beside the factor. The same LAPACK routine that scipy ships, called
through scipy.linalg.cython_lapack's exported function pointer with the factor's own leading
dimension, inverts in the factor's memory: no copy, no second tail-sized array.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

_DPOTRI: Any = None


def _dpotri() -> Any:
    """The function pointer of scipy's dpotri (void (char*, int*, double*, int*, int*))."""
    global _DPOTRI
    if _DPOTRI is None:
        from scipy.linalg import cython_lapack

        capsule = cython_lapack.__pyx_capi__["dpotri"]
        get_name = ctypes.pythonapi.PyCapsule_GetName
        get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        pointer = get_pointer(capsule, get_name(capsule))
        c_int_p, c_double_p = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_double)
        _DPOTRI = ctypes.CFUNCTYPE(None, ctypes.c_char_p, c_int_p, c_double_p, c_int_p, c_int_p)(pointer)
    return _DPOTRI


def invert_leading_block(L: np.ndarray, rows: int, start: int = 0) -> None:
    """In place: the lower triangle of the rows x rows diagonal block of L from row `start` (a
    C-ordered lower Cholesky factor of that block) becomes that of (L_a L_a')^{-1}; nothing
    else is touched.

    The C-ordered lower triangle is the upper triangle of the Fortran-ordered transpose that
    LAPACK sees, with leading dimension L.shape[1]."""
    if not (L.flags.c_contiguous and L.dtype == np.float64 and L.ndim == 2 and 0 < rows
            and 0 <= start and start + rows <= min(L.shape)):
        raise ValueError("invert_leading_block needs a C-contiguous float64 matrix and a block inside it")
    n, lda, info = ctypes.c_int(rows), ctypes.c_int(L.shape[1]), ctypes.c_int(0)
    first = L.ctypes.data + L.itemsize * start * (L.shape[1] + 1)
    _dpotri()(b"U", ctypes.byref(n), ctypes.cast(first, ctypes.POINTER(ctypes.c_double)), ctypes.byref(lda),
              ctypes.byref(info))
    if info.value != 0:
        raise np.linalg.LinAlgError(f"dpotri info {info.value}")
