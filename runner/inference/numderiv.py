"""Richardson-extrapolated finite differences as R's numDeriv computes them.

lmerTest takes its Hessian and Jacobian from numDeriv (`hessian`, `jacobian`, method
"Richardson"); the same steps and extrapolation give the same numbers to many digits,
also at theta = 0 (where numDeriv steps by `eps` through the boundary).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

ZERO_TOL = float(np.sqrt(np.finfo(float).eps / 7e-7))


def _steps(x: np.ndarray, d: float, eps: float) -> np.ndarray:
    return np.abs(d * x) + eps * (np.abs(x) < ZERO_TOL)


def _richardson(a: np.ndarray, r: int, v: float = 2.0) -> np.ndarray:
    """Extrapolate along axis 0 (successively halved steps) as numDeriv does."""
    a = np.array(a, dtype=float)
    for m in range(1, r):
        a = (a[1:r + 1 - m] * 4.0 ** m - a[: r - m]) / (4.0 ** m - 1)
    return a[0]


def _extrapolated(difference: Callable[[np.ndarray], float], h0: np.ndarray, r: int, v: float) -> float:
    """`difference` at steps h0, h0/v, h0/v^2, ... (r of them), Richardson-extrapolated."""
    h = h0.copy()
    approx = np.zeros(r)
    for k in range(r):
        approx[k] = difference(h)
        h = h / v
    return float(_richardson(approx, r))


def hessian(func: Callable[[np.ndarray], float], x: np.ndarray, d: float = 0.1, eps: float = 1e-4,
            r: int = 4, v: float = 2.0) -> np.ndarray:
    """numDeriv::hessian (genD): diagonal from central second differences, off-diagonal
    from the two-coordinate step minus the diagonal terms; r Richardson levels."""
    x = np.asarray(x, dtype=float)
    n = x.size
    f0 = func(x)
    h0 = _steps(x, d, eps)
    hdiag = np.zeros(n)

    def step(h: np.ndarray, *axes: int) -> np.ndarray:
        e = np.zeros(n)
        e[list(axes)] = h[list(axes)]
        return e

    def second(i: int, h: np.ndarray) -> float:  # central second difference along i
        return (func(x + step(h, i)) - 2 * f0 + func(x - step(h, i))) / h[i] ** 2

    def cross(i: int, j: int, h: np.ndarray) -> float:  # the two-coordinate step minus the diagonal terms
        return ((func(x + step(h, i, j)) - 2 * f0 + func(x - step(h, i, j)) - hdiag[i] * h[i] ** 2
                 - hdiag[j] * h[j] ** 2) / (2 * h[i] * h[j]))

    for i in range(n):
        hdiag[i] = _extrapolated(partial(second, i), h0, r, v)
    H = np.diag(hdiag)
    for i in range(n):
        for j in range(i):
            H[i, j] = H[j, i] = _extrapolated(partial(cross, i, j), h0, r, v)
    return H


def jacobian(func: Callable[[np.ndarray], np.ndarray], x: np.ndarray, d: float = 1e-4, eps: float = 1e-4,
             r: int = 4, v: float = 2.0) -> np.ndarray:
    """numDeriv::jacobian: (len(f), len(x)) by Richardson-extrapolated central differences."""
    x = np.asarray(x, dtype=float)
    n = x.size
    f0 = np.asarray(func(x), dtype=float).ravel()
    h = _steps(x, d, eps)
    a = np.zeros((r, f0.size, n))
    for k in range(r):
        for i in range(n):
            e = np.zeros(n)
            e[i] = h[i]
            a[k, :, i] = (np.asarray(func(x + e)).ravel() - np.asarray(func(x - e)).ravel()) / (2 * h[i])
        h = h / v
    return _richardson(a, r)
