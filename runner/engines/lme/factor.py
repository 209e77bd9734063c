"""Per-theta blocked Cholesky: scale by Lambda, add I, factor block by block.

No O(n) work here: block 1 is factored with batched (l_1, p_1, p_1) operations, its
update to the tail is one sparse product with a fixed pattern, and the tail
(other random terms, X and y) is factored densely with LAPACK's dpotrf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from runner.engines.lme.structure import Problem, Stage


@dataclass
class Factor:
    """The blocked factor at one theta (what the criterion and the post-fit need)."""

    factors: list[np.ndarray]  # T_i per internal block
    L11: np.ndarray  # (l1, p1, p1) lower Cholesky factors of M_c = T' A_c T + I
    B: np.ndarray  # (l1, p1, p1) = T M_c^{-1} T'
    Ltail: np.ndarray  # (nt, nt) lower factor of the updated, scaled tail (upper: garbage)
    logdet_z: float  # log |L_ZZ|^2
    logdet_x: float  # log |R_X|^2
    r2: float  # penalized weighted residual sum of squares


class FactorError(ArithmeticError):
    """The tail was not positive definite at this theta."""


def template_factors(problem: Problem, theta: np.ndarray) -> list[np.ndarray]:
    return [t.factor(theta[s]) for t, s in zip(problem.templates, problem.theta_slices)]


def _first_block(problem: Problem, T1: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    if problem.p1 == 1:
        t2 = T1[0, 0] ** 2
        m = t2 * problem.A11[:, 0, 0] + 1.0
        L = np.sqrt(m)[:, None, None]
        B = (t2 / m)[:, None, None]
        return L, B, float(np.sum(np.log(m)))
    M = T1.T @ problem.A11 @ T1
    M += np.eye(problem.p1)
    L = np.linalg.cholesky(M)
    G = T1 @ np.swapaxes(np.linalg.inv(L), 1, 2)  # T L^{-T}
    B = G @ np.swapaxes(G, 1, 2)
    logdet = 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
    return L, B, logdet


def _scale_vector(problem: Problem, factors: list[np.ndarray]) -> np.ndarray:
    """The diagonal part of Lambda_t: t_i for 1-column terms, 1 for wider terms and W."""
    parts = [np.full(q, T[0, 0] if T.shape[0] == 1 else 1.0) for q, T in zip(problem.tail_q, factors[1:])]
    return np.concatenate([*parts, np.ones(problem.p + 1)])


def sandwich(C: np.ndarray, problem: Problem, factors: list[np.ndarray], transpose: bool) -> None:
    """In place: C <- Lambda_t' C Lambda_t (transpose) or Lambda_t C Lambda_t' (not).

    C is a full (not triangular) matrix over the first rows of the tail (at least the
    random rows); wider terms are in slab layout, where Lambda_i = T_i (x) I.
    """
    nt = C.shape[0]
    lam = _scale_vector(problem, factors)[:nt]
    C *= lam[:, None]
    C *= lam[None, :]
    if problem.scalar_tail:
        return
    for start, q, T in zip(problem.tail_start, problem.tail_q, factors[1:]):
        p = T.shape[0]
        if p == 1:
            continue
        left = T.T if transpose else T  # rows: Lambda' C takes T', Lambda C takes T
        rows = C[start:start + q].reshape(p, q // p, nt)
        C[start:start + q] = np.tensordot(left, rows, axes=1).reshape(q, nt)
        cols = C[:, start:start + q].reshape(nt, p, q // p)
        C[:, start:start + q] = np.tensordot(left, cols, axes=([1], [1])).transpose(1, 0, 2).reshape(nt, q)


def _scaled_tail(problem: Problem, B: np.ndarray, factors: list[np.ndarray]) -> np.ndarray:
    """Lambda_t' (A_tt - A_t1 B A_1t) Lambda_t + [I 0; 0 0], lower triangle valid."""
    C = problem.A_tt.copy()
    flat = C.reshape(-1)
    flat[problem.targets] -= problem.S @ B.reshape(-1)
    sandwich(C, problem, factors, transpose=True)
    m = problem.m_rand
    idx = np.arange(m)
    C[idx, idx] += 1.0
    return C


def _eliminate(C: np.ndarray, stage: Stage) -> float:
    """Factor one block-diagonal tail block in place and update the rows after it.

    Writes L_jj into its block, L_Rj = C_Rj L_jj^{-T} below it, and C_RR -= L_Rj L_Rj'.
    Returns log|L_jj|^2.
    """
    l, p = stage.l, stage.p
    q = l * p
    J = slice(stage.start, stage.start + q)
    R = slice(stage.start + q, C.shape[0])
    D = C[stage.rows, stage.cols]
    if p == 1:
        d = D[:, 0, 0]
        if np.any(d <= 0):
            raise FactorError("non-positive pivot")
        L = np.sqrt(d)
        C[R, J] /= L[None, :]
        C[stage.rows[:, 0, 0], stage.cols[:, 0, 0]] = L
        logdet = 2.0 * float(np.sum(np.log(L)))
    else:
        L = np.linalg.cholesky(D)
        Linv = np.linalg.inv(L)
        CRJ = C[R, J].reshape(-1, p, l)
        C[R, J] = np.einsum("xac,cba->xbc", CRJ, Linv).reshape(-1, q)
        C[stage.rows, stage.cols] = L
        logdet = 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
    G = C[R, J]
    C[R, R] -= G @ G.T
    return logdet


def factorize(problem: Problem, theta: np.ndarray) -> Factor:
    """The blocked Cholesky factor at theta (raises FactorError if not positive definite)."""
    factors = template_factors(problem, theta)
    L11, B, logdet1 = _first_block(problem, factors[0])
    C = _scaled_tail(problem, B, factors)
    for stage in problem.stages:
        _eliminate(C, stage)  # its log-determinant is read from diag(C) below
    # C is C-contiguous with its lower triangle valid; C.T is Fortran-ordered with that
    # triangle as its upper one, so dpotrf(upper) factors in place without a copy.
    k = problem.dense_start
    U, info = lapack.dpotrf(C[k:, k:].T, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise FactorError(f"dpotrf info {info}")
    if k:
        C[k:, k:] = U.T

    d = np.diagonal(C)
    m, p = problem.m_rand, problem.p
    r = d[m + p]
    if not (np.all(d[: m + p] > 0) and np.isfinite(r)):
        raise FactorError("non-positive pivot")
    return Factor(
        factors=factors, L11=L11, B=B, Ltail=C,
        logdet_z=logdet1 + 2.0 * float(np.sum(np.log(d[:m]))),
        logdet_x=2.0 * float(np.sum(np.log(d[m:m + p]))), r2=float(r * r))
