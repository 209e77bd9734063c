"""Checks lme4 makes on the fixed-effects matrix before fitting.

- rank: lme4's `chkRank.drop.cols` uses R's `qr(X, tol = 1e-7, LAPACK = FALSE)`
  (LINPACK dqrdc2, limited pivoting: a column whose norm, after removing the kept
  columns before it, falls below tol times its own norm goes to the end). The same
  rule here keeps lme4's choice of dropped columns, which full pivoting would not.
- scale: lme4's `checkScaleX` warns when column SDs differ by more than 1000x.
"""

from __future__ import annotations

import numpy as np

RANK_TOL = 1e-7
SCALE_TOL = 1e3
SCALE_MESSAGE = "Some predictor variables are on very different scales: consider rescaling"


def rank_keep(X: np.ndarray, tol: float = RANK_TOL) -> np.ndarray:
    """Indices of the columns kept by dqrdc2's limited pivoting (original order)."""
    n, p = X.shape
    basis = np.empty((n, 0))
    keep: list[int] = []
    for j in range(p):
        x = X[:, j].astype(float)
        norm = float(np.linalg.norm(x))
        r = x.copy()
        for _ in range(2 if keep else 0):  # re-orthogonalize once: classical Gram-Schmidt twice is stable
            r -= basis @ (basis.T @ r)
        rnorm = float(np.linalg.norm(r))
        if norm == 0.0 or rnorm < tol * norm:
            continue
        basis = np.column_stack([basis, r / rnorm])
        keep.append(j)
    return np.asarray(keep, dtype=np.int64)


def scale_warning(X: np.ndarray, tol: float = SCALE_TOL) -> str | None:
    """lme4's checkScaleX message, or None: compares SDs of non-0/1 columns."""
    if X.shape[1] == 0:
        return None
    binary = np.all((X == 0.0) | (X == 1.0), axis=0)  # np.isin(X, (0, 1)), without its sort
    cont = X[:, ~binary]
    if cont.shape[1] == 0 or X.shape[0] < 2:
        return None
    sd = np.std(cont, axis=0, ddof=1)
    sd = sd[sd > 0]
    if sd.size == 0:
        return None
    logsd = np.abs(np.log(sd))
    ratios = np.abs(np.log(sd[:, None] / sd[None, :]))
    if np.any(logsd > np.log(tol)) or np.any(ratios > np.log(tol)):
        return SCALE_MESSAGE
    return None
