"""S' v for a CSR matrix S without building S' (scipy's `S.T @ v` makes a CSC matrix object and
checks its format on every call: ~20 us, several times per gradient of a small model).

The CSR arrays of S are the CSC arrays of S', so scipy's own compiled CSC product runs on them
directly; where that private routine is missing (a future scipy), `S.T @ v` is used.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

try:
    from scipy.sparse._sparsetools import csc_matvec as _csc_matvec
except ImportError:  # pragma: no cover - scipy without the routine
    _csc_matvec = None


def rmatvec(S: sp.csr_matrix, v: np.ndarray) -> np.ndarray:
    """S' v (float64) for a CSR matrix S."""
    n_row, n_col = S.shape
    if (_csc_matvec is None or S.format != "csr" or S.data.dtype != np.float64
            or S.indptr.dtype != S.indices.dtype):
        return np.asarray(S.T @ v, dtype=np.float64)
    out = np.zeros(n_col)
    _csc_matvec(n_col, n_row, S.indptr, S.indices, S.data, np.ascontiguousarray(v, dtype=np.float64), out)
    return out
