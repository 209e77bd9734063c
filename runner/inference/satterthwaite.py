"""Satterthwaite denominator df as lmerTest 3.1 computes them.

H = numDeriv's Hessian of the deviance in varpar = (theta, sigma); vcov(varpar) = 2 H^+
(Moore-Penrose over eigenvalues above 1e-8, with lmerTest's warnings); J = Jacobian of
vcov(beta) in varpar. For a contrast l: df = 2 (l'Cl)^2 / (g'Ag), g_i = l' J_i l. Multi-df
contrasts as lmerTest's contestMD with get_Fstat_ddf. All evaluations go through the
blocked Cholesky: cost ~ (2 r k^2) factorizations for k variance parameters.

Where one evaluation is expensive (a large dense block: InstEval, a million rows), H is
central differences of the analytic gradient of the deviance and J central differences of
vcov(beta), both from the same 2k factorizations (each with its gradient, about three
evaluations' work), without Richardson's four levels: ~6k evaluations instead of
~2 r k^2 + 2 r k, agreeing with the numDeriv route to about 1e-6 in the df
(tests/test_inference_scale.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from runner.distributions import t_sf

from runner.inference import numderiv
from runner.engines.lme.parallel import map_evaluations
from runner.inference.state import (LmmState, covbeta_vp, deviance_vp, deviance_vp_gradient_at, factor_at,
                                    unscaled_vcov)

TOL = 1e-8
STEP = 1e-4  # the gradient route's central-difference step, relative to |varpar_i| (numDeriv's first level)
EDGE = 1e-3  # ...used only where every SD-like theta is at least this far from 0


@dataclass
class Satterthwaite:
    vcov_beta: np.ndarray  # (p, p)
    vcov_varpar: np.ndarray  # (k, k)
    jac: np.ndarray  # (k, p, p): d vcov(beta) / d varpar_i
    warnings: list[str] = field(default_factory=list)

    def contrast(self, l: np.ndarray) -> tuple[float, float]:
        """(variance of l'beta, Satterthwaite df)."""
        l = np.asarray(l, dtype=float)
        var = float(l @ self.vcov_beta @ l)
        g = np.einsum("a,kab,b->k", l, self.jac, l)
        denom = float(g @ self.vcov_varpar @ g)
        df = 2 * var * var / denom if denom > 0 else float("inf")
        return var, float(df)

    def f_test(self, L: np.ndarray, beta: np.ndarray, eps: float = float(np.sqrt(np.finfo(float).eps))
               ) -> tuple[float, int, float]:
        """contestMD: (F, numerator df, denominator df) for H0: L beta = 0."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        if L.shape[0] == 1:
            var, df = self.contrast(L[0])
            return float((L[0] @ beta) ** 2 / var), 1, df
        V = L @ self.vcov_beta @ L.T
        d, P = np.linalg.eigh(V)
        order = np.argsort(d)[::-1]
        d, P = d[order], P[:, order]
        tol = max(eps * d[0], 0.0)
        q = int(np.sum(d > tol))
        PtL = (P.T @ L)[:q]
        if q == 1:
            var, df = self.contrast(PtL[0])
            return float((PtL[0] @ beta) ** 2 / var), 1, df
        t2 = (PtL @ beta) ** 2 / d[:q]
        F = float(np.sum(t2) / q)
        nu = np.empty(q)
        for m in range(q):  # df of each of the q independent t statistics
            g = np.einsum("a,kab,b->k", PtL[m], self.jac, PtL[m])
            nu[m] = 2 * d[m] ** 2 / float(g @ self.vcov_varpar @ g)
        return F, q, fstat_ddf(nu)


def fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's get_Fstat_ddf: df of an F built from q t-statistics with df nu."""
    nu = np.asarray(nu, dtype=float)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - nu.size)


def vcov_varpar(H: np.ndarray, tol: float = TOL) -> tuple[np.ndarray, list[str]]:
    """2 H^+ over eigenvalues above tol, with lmerTest's warnings."""
    vals, vecs = np.linalg.eigh(H)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    warnings = []
    neg = vals < -tol
    zero = (vals > -tol) & (vals < tol)
    if neg.any():
        warnings.append(f"Model failed to converge with {int(neg.sum())} negative eigenvalue"
                        f"{'s' if neg.sum() > 1 else ''}: {' '.join(f'{v:.1e}' for v in vals[neg])}")
    if zero.any():
        warnings.append(f"Model may not have converged with {int(zero.sum())} eigenvalue"
                        f"{'s' if zero.sum() > 1 else ''} close to zero: {' '.join(f'{v:.1e}' for v in vals[zero])}")
    pos = vals > tol
    V = vecs[:, pos] @ np.diag(1 / vals[pos]) @ vecs[:, pos].T
    return 2 * V, warnings


def _gradient_route(state: LmmState) -> bool:
    """Deterministic: the model is expensive and off the boundary (where the gradient holds)."""
    problem = state.problem
    sd_like = problem.lower == 0.0
    return bool(problem.expensive and np.all(state.theta[sd_like] >= EDGE))


def _steps(x: np.ndarray) -> np.ndarray:
    return STEP * np.maximum(np.abs(x), EDGE)


def _from_gradient(state: LmmState) -> tuple[np.ndarray, np.ndarray] | None:
    """H (symmetrized) and J by central differences at x +- h_i e_i: each point's one
    factorization gives both the deviance's analytic gradient and vcov(beta). None if a
    gradient does not apply there."""
    x, h = state.varpar, _steps(state.varpar)
    points = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h[i]
        points += [x + e, x - e]

    def at(v: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        f = factor_at(state.problem, v[:-1])
        c = float(v[-1]) ** 2 * unscaled_vcov(state.problem, f)  # first: the gradient's inverse consumes f
        g = deviance_vp_gradient_at(state.problem, f, v, state.reml, consume=True)
        return None if g is None else (g, c)

    ends = map_evaluations(at, points)  # independent points, two at a time (engines/lme/parallel.py)
    if any(end is None for end in ends):
        return None
    rows, cols = [], []
    for i in range(x.size):
        plus, minus = ends[2 * i], ends[2 * i + 1]
        assert plus is not None and minus is not None
        rows.append((plus[0] - minus[0]) / (2 * h[i]))
        cols.append((plus[1] - minus[1]).ravel() / (2 * h[i]))
    H = np.asarray(rows)
    return (H + H.T) / 2, np.asarray(cols).T


def satterthwaite(state: LmmState) -> Satterthwaite:
    problem, x = state.problem, state.varpar
    found = _from_gradient(state) if _gradient_route(state) else None
    if found is not None:
        H, J = found
    else:
        H = numderiv.hessian(lambda v: deviance_vp(problem, v, state.reml), x)
        J = numderiv.jacobian(lambda v: covbeta_vp(problem, v).ravel(), x)  # (p*p, k)
    A, warnings = vcov_varpar(H)
    p = problem.p
    jac = np.moveaxis(J.reshape(p, p, -1), 2, 0)
    return Satterthwaite(vcov_beta=state.vcov, vcov_varpar=A, jac=jac, warnings=warnings)


def t_test(estimate: float, var: float, df: float) -> tuple[float, float]:
    """(t, two-sided p) on df."""
    se = np.sqrt(var)
    t = estimate / se
    return float(t), float(2 * t_sf(abs(t), df))
