"""lme4's checkConv at the optimum: finite-difference gradient and Hessian.

As lme4's deriv12 (central differences, delta 1e-4) and checkConv: the scaled
gradient solve(chol(H), g), compared elementwise with the raw gradient (the smaller
counts), must stay below 0.002. Components at an active lower bound whose gradient
points out of the feasible set are projected to zero, and the Hessian is skipped for
singular fits, so a fit on the boundary (Dyestuff2) is not a false alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

import numpy as np

from runner.covariance import is_singular as singular_theta

DELTA = 1e-4
GRAD_TOL = 2e-3


@dataclass
class ConvergenceCheck:
    ok: bool
    max_abs_gradient: float | None
    hessian_min_eigenvalue: float | None
    message: str


def is_singular(theta: np.ndarray, lower: np.ndarray) -> bool:
    """lme4's isSingular (runner.covariance) on theta with its bounds (0: an SD-like entry)."""
    return singular_theta(list(theta), list(lower == 0.0))


def failed_message(max_abs_gradient: float) -> str:
    return f"Model failed to converge with max|grad| = {max_abs_gradient:.6g} (tol = {GRAD_TOL})"


def deriv12(fun: Callable[[np.ndarray], float], x: np.ndarray, fx: float, hessian: bool = True
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """lme4's deriv12: central-difference gradient and (unless not wanted) Hessian, step DELTA."""
    k = x.size
    plus, minus = np.empty(k), np.empty(k)
    for i in range(k):
        e = np.zeros(k)
        e[i] = DELTA
        plus[i], minus[i] = fun(x + e), fun(x - e)
    g = (plus - minus) / (2 * DELTA)
    if not hessian:
        return g, None
    H = np.empty((k, k))
    H[np.diag_indices(k)] = (plus - 2 * fx + minus) / DELTA**2
    for i in range(k):
        for j in range(i):
            e = np.zeros(k)
            e[i] = e[j] = DELTA
            fpp, fmm = fun(x + e), fun(x - e)
            # f(x+di+dj) + f(x-di-dj) = 2f + h^2 (Hii + 2Hij + Hjj) + O(h^4)
            H[i, j] = H[j, i] = ((fpp + fmm - 2 * fx) / DELTA**2 - H[i, i] - H[j, j]) / 2
    return g, H


def judge(g: np.ndarray, H: np.ndarray | None, x: np.ndarray, lower: np.ndarray) -> ConvergenceCheck:
    """lme4's checkConv on deriv12's output: the gradient projected at active bounds (zero
    bounds only: the others are -inf), then without a Hessian (singular fits) max|g| below
    GRAD_TOL, with one the scaled gradient solve(chol(H), g), elementwise the smaller."""
    active = (lower == 0.0) & (x <= DELTA) & (g > 0)
    g = np.where(active, 0.0, g)
    if H is None:
        mg = float(np.max(np.abs(g)))
        ok = mg < GRAD_TOL
        return ConvergenceCheck(ok, mg, None, "" if ok else failed_message(mg))
    ev = float(np.min(np.linalg.eigvalsh(H)))
    try:
        R = np.linalg.cholesky(H).T
        scaled = np.linalg.solve(R, g)
    except np.linalg.LinAlgError:
        return ConvergenceCheck(False, float(np.max(np.abs(g))), ev,
                                "unable to evaluate scaled gradient: Hessian is not positive definite")
    mg = float(np.max(np.minimum(np.abs(scaled), np.abs(g))))
    ok = mg < GRAD_TOL
    return ConvergenceCheck(ok, mg, ev, "" if ok else failed_message(mg))


def check_convergence(fun: Callable[[np.ndarray], float], theta: np.ndarray, fval: float,
                      lower: np.ndarray, singular: bool) -> ConvergenceCheck:
    """lme4's checkConv at theta (the Hessian's evaluations are skipped for a singular fit)."""
    if theta.size == 0:
        return ConvergenceCheck(True, 0.0, None, "")
    g, H = deriv12(fun, theta, fval, hessian=not singular)
    return judge(g, H, theta, lower)
