"""lme4's checkConv at the optimum: finite-difference gradient and Hessian.

As lme4's deriv12 (central differences, delta 1e-4) and checkConv: the scaled
gradient solve(chol(H), g), compared elementwise with the raw gradient (the smaller
counts), must stay below 0.002. Components at an active lower bound whose gradient
points out of the feasible set are projected to zero, and the Hessian is skipped for
singular fits, so a fit on the boundary (Dyestuff2) is not a false alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from runner.covariance import SINGULAR_TOL

DELTA = 1e-4
GRAD_TOL = 2e-3


@dataclass
class ConvergenceCheck:
    ok: bool
    max_abs_gradient: float | None
    hessian_min_eigenvalue: float | None
    message: str


def is_singular(theta: np.ndarray, lower: np.ndarray, tol: float = SINGULAR_TOL) -> bool:
    """lme4's isSingular: a bounded theta component below tol."""
    bounded = lower == 0.0
    return bool(np.any(theta[bounded] < tol))


def check_convergence(fun: Callable[[np.ndarray], float], theta: np.ndarray, fval: float,
                      lower: np.ndarray, singular: bool) -> ConvergenceCheck:
    k = theta.size
    if k == 0:
        return ConvergenceCheck(True, 0.0, None, "")
    plus = np.empty(k)
    minus = np.empty(k)
    for i in range(k):
        e = np.zeros(k)
        e[i] = DELTA
        plus[i], minus[i] = fun(theta + e), fun(theta - e)
    g = (plus - minus) / (2 * DELTA)
    active = (lower == 0.0) & (theta <= DELTA) & (g > 0)
    g = np.where(active, 0.0, g)
    if singular:
        mg = float(np.max(np.abs(g)))
        ok = mg < GRAD_TOL
        return ConvergenceCheck(ok, mg, None, "" if ok else
                                f"Model failed to converge with max|grad| = {mg:.6g} (tol = {GRAD_TOL})")
    H = np.empty((k, k))
    H[np.diag_indices(k)] = (plus - 2 * fval + minus) / DELTA**2
    for i in range(k):
        for j in range(i):
            e = np.zeros(k)
            e[i] = e[j] = DELTA
            fpp, fmm = fun(theta + e), fun(theta - e)
            # f(x+di+dj) + f(x-di-dj) = 2f + h^2 (Hii + 2Hij + Hjj) + O(h^4)
            H[i, j] = H[j, i] = ((fpp + fmm - 2 * fval) / DELTA**2 - H[i, i] - H[j, j]) / 2
    ev = float(np.min(np.linalg.eigvalsh(H)))
    try:
        R = np.linalg.cholesky(H).T
        scaled = np.linalg.solve(R, g)
    except np.linalg.LinAlgError:
        return ConvergenceCheck(False, float(np.max(np.abs(g))), ev,
                                "unable to evaluate scaled gradient: Hessian is not positive definite")
    mg = float(np.max(np.minimum(np.abs(scaled), np.abs(g))))
    ok = mg < GRAD_TOL
    return ConvergenceCheck(ok, mg, ev, "" if ok else
                            f"Model failed to converge with max|grad| = {mg:.6g} (tol = {GRAD_TOL})")
