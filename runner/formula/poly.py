"""R's orthogonal polynomials (stats::poly): fitted by QR, predicted by the recurrence.

`poly_coefs` gives the centring `alpha` and squared norms `norm2` R stores in
attr(, "coefs"); `poly_predict` evaluates the polynomials on any x with them, which is
how R's predict() reuses a fit's basis on new data.
"""

from __future__ import annotations

import numpy as np


def poly_coefs(x: np.ndarray, degree: int) -> tuple[list[float], list[float]]:
    """R's poly(): alpha and norm2 of the orthogonal polynomials on x (QR, as R computes them)."""
    xbar = float(x.mean())
    xc = x - xbar
    X = np.vander(xc, degree + 1, increasing=True)
    q, r = np.linalg.qr(X)
    Z = q * np.diag(r)
    norm2 = np.sum(Z**2, axis=0)
    alpha = (np.sum(xc[:, None] * Z**2, axis=0) / norm2 + xbar)[:degree]
    return [float(a) for a in alpha], [1.0, *(float(v) for v in norm2)]


def poly_predict(x: np.ndarray, degree: int, alpha: list[float], norm2: list[float]) -> np.ndarray:
    """R's predict for poly(): the three-term recurrence with the remembered coefficients."""
    Z = np.ones((x.size, degree + 1))
    Z[:, 1] = x - alpha[0]
    for i in range(1, degree):
        Z[:, i + 1] = (x - alpha[i]) * Z[:, i] - (norm2[i + 1] / norm2[i]) * Z[:, i - 1]
    Z = Z / np.sqrt(np.asarray(norm2[1:]))[None, :]
    return Z[:, 1:]
