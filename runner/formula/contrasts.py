"""R's contrast matrices and the column names they give.

A factor with k levels is coded by a k x (k-1) matrix: `contr.treatment` (indicators
of every level but the reference, named by level), `contr.sum` and `contr.helmert`
(unnamed: R numbers them, `f1`, `f2`), `contr.poly` (orthonormal polynomials in the
level index, named `.L .Q .C ^4 ...`). Values follow R's stats package exactly.
"""

from __future__ import annotations

import numpy as np

KINDS = ("treatment", "sum", "helmert", "poly")


def contrast_matrix(kind: str, levels: list[str], base: int = 0) -> tuple[np.ndarray, list[str]]:
    """(k x m matrix, column suffixes) of one factor's contrasts; `base` is 0-based."""
    k = len(levels)
    if kind == "treatment":
        keep = [j for j in range(k) if j != base]
        return np.eye(k)[:, keep], [levels[j] for j in keep]
    if kind == "sum":
        m = np.vstack([np.eye(k - 1), -np.ones((1, k - 1))]) if k > 1 else np.zeros((1, 0))
        return m, [str(j + 1) for j in range(k - 1)]
    if kind == "helmert":
        m = np.zeros((k, k - 1))
        for j in range(k - 1):
            m[: j + 1, j] = -1.0
            m[j + 1, j] = j + 1.0
        return m, [str(j + 1) for j in range(k - 1)]
    if kind == "poly":
        return poly_contrasts(k), _poly_names(k)
    raise ValueError(f"unknown contrast {kind!r}")


def poly_contrasts(k: int) -> np.ndarray:
    """R's contr.poly(k): make.poly with scores 1..k, without the constant column."""
    if k < 2:
        return np.zeros((k, 0))
    scores = np.arange(1, k + 1, dtype=float)
    y = scores - scores.mean()
    X = np.vander(y, k, increasing=True)
    q, r = np.linalg.qr(X)
    raw = q * np.diag(r)  # qr.qy(QR, diag(R)): independent of the QR's sign convention
    Z = raw / np.sqrt(np.sum(raw**2, axis=0))
    return Z[:, 1:]


def _poly_names(k: int) -> list[str]:
    base = [".L", ".Q", ".C"]
    return [base[j] if j < 3 else f"^{j + 1}" for j in range(k - 1)]
