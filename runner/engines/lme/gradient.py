"""The analytic gradient of the profiled criterion (ML deviance or REML criterion) over theta.

With M = Lambda' G Lambda + I the scaled system (factor.py), u the spherical conditional
modes and r2 the penalized RSS, for a parameter theta_j of term k (Lambda_k = T_k (x) I):

    d log|M| / d theta_j = 2 tr((l_k I - C_k) T_k^{-1} dT_k)      (Lambda' G = (M - I) Lambda^{-1})
    d r2 / d theta_j     = -2 tr(U_k' U_k T_k^{-1} dT_k)           (envelope; Lambda' Z' r = u)

so  d criterion / d theta_j = 2 tr(Q_k T_k^{-1} dT_k),  Q_k = l_k I - C_k - (n' / r2) U_k' U_k,

where C_k is the sum over the term's levels of the level-diagonal blocks of M^{-1}
(inverse.py: over [Z] for ML, [Z X] for REML), U_k the term's (l_k, p_k) modes and n' = n
(ML) or n - p (REML). One gradient costs about two criterion evaluations (the tail's
dpotri and one sparse product), where forward differences cost one per parameter and
are noisy; the gradient-based optimizer then needs far fewer evaluations on large models.

It needs T_k^{-1}: near the boundary (a relative SD near 0, where l_k I - C_k cancels)
`criterion_gradient` returns None and the caller differences instead. Compound symmetry's
template is not linear in theta; it is left to differences too.
"""

from __future__ import annotations

import numpy as np

from runner.engines.lme.dense import DenseFactor, dense_balances
from runner.engines.lme.factor import Factor
from runner.engines.lme.inverse import InverseBlocks, inverse_blocks
from runner.engines.lme.solve import Modes, spherical_modes
from runner.engines.lme.structure import Problem
from runner.engines.lme.terms import ReTerm
from runner.vocab import Method

MIN_SINGULAR = 1e-4  # smallest singular value of T_k for which the formula is used


def template_derivatives(term: ReTerm, whitened: bool) -> np.ndarray | None:
    """dT/dtheta_j for each of the term's parameters, stacked (ntheta_k, p, p), on the problem's
    columns (the working factor is R T(theta) where the problem whitened the term and theta is
    lme4's)."""
    tpl = term.template
    p = tpl.p
    if tpl.covariance == "compound_symmetry":
        return None
    if p == 1 or tpl.covariance == "identity":
        out = np.eye(p)[None, :, :]
    elif tpl.covariance == "diagonal":
        out = np.stack([np.diag(np.eye(p)[j]) for j in range(p)])
    elif tpl.covariance == "unstructured":
        r, c = tpl.tri()
        out = np.zeros((r.size, p, p))
        out[np.arange(r.size), r, c] = 1.0
    else:
        return None
    if not whitened and term.basis is not None:
        out = np.einsum("ab,kbc->kac", term.basis, out)
    return out


def balances(problem: Problem, f: Factor | DenseFactor, method: Method, sigma: float | None = None,
             consume: bool = False) -> list[np.ndarray]:
    """Q_k = l_k I - C_k - (n' / r2) U_k' U_k per term (internal order): zero at an interior
    optimum, and the EM update's K_k = I - Q_k / l_k. With `sigma` the weight n' / r2 (the
    profiled sigma^-2) is sigma^-2 instead: lmerTest's deviance with sigma explicit. `consume`:
    the factor serves no solve afterwards (inverse.tail_inverse may overwrite it)."""
    if isinstance(f, DenseFactor):
        return dense_balances(problem, f, method, sigma)
    modes = spherical_modes(problem, f)  # before the inverse: with `consume` it overwrites the factor
    blocks = inverse_blocks(problem, f, with_x=method == "REML", consume=consume)
    return balances_from(problem, f, method, blocks, modes, sigma)


def balances_from(problem: Problem, f: Factor, method: Method, blocks: InverseBlocks, modes: Modes,
                  sigma: float | None = None) -> list[np.ndarray]:
    """`balances` from the inverse blocks (over [Z X] for REML) and spherical modes at hand."""
    n_eff = problem.n if method == "ML" else problem.n - problem.p
    weight = n_eff / f.r2 if sigma is None else 1.0 / (sigma * sigma)
    return [term.levels * np.eye(term.p) - C.sum(axis=0) - weight * (U.T @ U)
            for term, C, U in zip(problem.terms, [blocks.first, *blocks.tail], [modes.u_first, *modes.u_tail])]


def criterion_gradient(problem: Problem, f: Factor | DenseFactor, method: Method, whitened: bool,
                       Qs: list[np.ndarray] | None = None,
                       derivs: list[np.ndarray | None] | None = None) -> np.ndarray | None:
    """d criterion / d theta at the factor's theta (phi when `whitened`), or None where the
    formula does not apply (see the module's docstring). `Qs`: `balances`, and `derivs`:
    `template_derivatives` per term, if at hand."""
    if derivs is None:
        derivs = [template_derivatives(t, whitened) for t in problem.terms]
    if any(d is None for d in derivs):
        return None
    if not all(_invertible(T) for T in f.factors):
        return None
    Qs = balances(problem, f, method) if Qs is None else Qs
    grad = np.zeros(sum(t.template.ntheta for t in problem.terms))
    for term, T, Q, dTs in zip(problem.terms, f.factors, Qs, derivs):
        assert dTs is not None  # checked above
        if T.shape[0] == 1:
            grad[term.theta] = 2.0 * Q[0, 0] / T[0, 0] * dTs[:, 0, 0]
            continue
        QTi = Q @ np.linalg.inv(T)
        grad[term.theta] = 2.0 * np.einsum("ij,kji->k", QTi, dTs)  # tr(Q T^{-1} dT_k)
    return grad


def _invertible(T: np.ndarray) -> bool:
    """T's smallest singular value exceeds MIN_SINGULAR (for 2 x 2 through the bound
    |det T| / ||T||_F, which never exceeds it: no SVD per evaluation)."""
    if T.shape[0] == 1:
        return bool(abs(T[0, 0]) > MIN_SINGULAR)
    if T.shape[0] == 2:
        det = T[0, 0] * T[1, 1] - T[0, 1] * T[1, 0]
        norm = float(np.sqrt(np.sum(T * T)))
        if norm > 0 and abs(det) / norm > MIN_SINGULAR:
            return True
    return bool(np.linalg.svd(T, compute_uv=False).min() > MIN_SINGULAR)


def em_step(problem: Problem, f: Factor | DenseFactor, theta: np.ndarray, Qs: list[np.ndarray]) -> np.ndarray | None:
    """One EM step from theta (the optimizer's phi): Sigma_k <- (sum_c b_c b_c' + sigma^2 sum_c
    Var(b_c | y)) / l_k, which in spherical terms is T_k <- T_k chol(K_k), K_k = I - Q_k / l_k
    (positive semi-definite: (C_k + (n'/r2) U_k'U_k) / l_k). EM moves fast from a far start
    and slowly near the optimum: a few steps start the quasi-Newton run. None for templates
    it does not cover (compound symmetry)."""
    out = np.array(theta, dtype=float)
    for term, T, Q in zip(problem.terms, f.factors, Qs):
        tpl, sl = term.template, term.theta
        K = np.eye(term.p) - Q / term.levels
        if tpl.covariance == "compound_symmetry":
            return None
        if term.p == 1:
            out[sl] = theta[sl] * np.sqrt(max(K[0, 0], 0.0))
        elif tpl.covariance == "identity":
            out[sl] = theta[sl] * np.sqrt(max(np.trace(K) / term.p, 0.0))
        elif tpl.covariance == "diagonal":
            out[sl] = theta[sl] * np.sqrt(np.maximum(np.diagonal(K), 0.0))
        else:  # unstructured: T chol(K) is lower triangular with a positive diagonal
            try:
                new = T @ np.linalg.cholesky(K)
            except np.linalg.LinAlgError:
                return None
            r, c = tpl.tri()
            out[sl] = new[r, c]
    return out if np.all(np.isfinite(out)) else None
