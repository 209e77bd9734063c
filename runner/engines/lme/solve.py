"""At the optimum only: beta, conditional modes and their conditional variances.

From the blocked factor: the tail's last row gives [u_t; beta] by one triangular
solve; block 1's modes follow per level, u_1c = M_c^{-1} T_1' (Z_1'y - Z_1' Z_t b_t - Z_1' X beta)_c.
Conditional variances are sigma^2 Lambda (L_ZZ L_ZZ')^{-1} Lambda' (given beta, as
lme4's condVar), only their diagonal blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular

from runner.engines.lme.factor import Factor, sandwich
from runner.engines.lme.structure import Problem


@dataclass
class Solution:
    beta: np.ndarray  # (p,)
    vcov_unscaled: np.ndarray  # (R_X' R_X)^{-1}, multiply by sigma^2
    modes: list[np.ndarray]  # internal order: (l_i, p_i) conditional modes b
    cond_var: list[np.ndarray]  # internal order: (l_i, p_i) conditional variances / sigma^2


def _tail_blocks(vec: np.ndarray, problem: Problem) -> list[np.ndarray]:
    """Split a tail vector into (l, p) per tail term (slab layout -> level rows)."""
    return [vec[t.tail_start:t.tail_start + t.q].reshape(t.p, t.levels).T for t in problem.tail]


def solve(problem: Problem, f: Factor, raw: list[np.ndarray]) -> Solution:
    """`raw`: lme4's factors T_i(theta) (factor.raw_factors). The spherical modes u come
    from the evaluation's factors on the problem's columns; b = T_i u maps them back to the
    terms' own columns (where the problem whitened a term, its columns are X R^{-1} and its
    factor R T, so the same u gives b = T u)."""
    m, p, nt = problem.m_rand, problem.p, problem.nt
    L = np.tril(f.Ltail)
    # The tail's factor ends with y's row: with A = L_a L_a' the tail before y and c its
    # column of y, [[A, c], [c', y'y]] = [[L_a, 0], [ell', r]] [[L_a', ell], [0, r]] gives
    # c = L_a ell, so the penalized least-squares solution [u_t; beta] = A^{-1} c is
    # L_a^{-T} ell: one triangular solve with the transpose (and r^2 = y'y - c' A^{-1} c,
    # the penalized RSS, is factor.py's last pivot).
    ell = L[nt - 1, : nt - 1]
    x = solve_triangular(L[: nt - 1, : nt - 1], ell, lower=True, trans="T")
    u_t, beta = x[:m], x[m:m + p]
    T1 = f.factors[0]
    # b_t = Lambda_t u_t, per tail block
    u_tail = _tail_blocks(u_t, problem)
    bt_eval = [uu @ T.T for uu, T in zip(u_tail, f.factors[1:])]  # on the problem's columns
    b_tail = [uu @ T.T for uu, T in zip(u_tail, raw[1:])]
    v = np.concatenate([np.concatenate([b.T.ravel() for b in bt_eval]) if bt_eval else np.zeros(0),
                        beta, [-1.0]])
    resid1 = -(problem.A_t1.T @ v)  # Z_1'(y - Z_t b_t - X beta), level-major (l1 * p1)
    l1, p1 = problem.first.levels, problem.first.p
    rhs = resid1.reshape(l1, p1) @ T1  # rows: T1' r_c
    Minv = np.linalg.inv(f.L11 @ np.swapaxes(f.L11, 1, 2))  # (l1, p1, p1)
    u1 = np.einsum("cab,cb->ca", Minv, rhs)
    b1 = u1 @ raw[0].T

    Lxx = L[m:m + p, m:m + p]
    Lxx_inv = solve_triangular(Lxx, np.eye(p), lower=True)
    vcov = Lxx_inv.T @ Lxx_inv
    var1, var_t = _conditional_variances(problem, f, raw, L, Minv)
    return Solution(beta=beta, vcov_unscaled=vcov, modes=[b1, *b_tail], cond_var=[var1, *var_t])


def _conditional_variances(problem: Problem, f: Factor, raw: list[np.ndarray], L: np.ndarray, Minv: np.ndarray
                           ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Diagonal blocks of Lambda (L_ZZ L_ZZ')^{-1} Lambda' (/ sigma^2): the first term's, the tail terms'."""
    m, nt = problem.m_rand, problem.nt
    l1, p1 = problem.first.levels, problem.first.p
    T1 = f.factors[0]
    if m:
        Lrr_inv = solve_triangular(L[:m, :m], np.eye(m), lower=True)
        Sinv = Lrr_inv.T @ Lrr_inv
    else:
        Sinv = np.zeros((0, 0))
    var_t = []
    for term, T in zip(problem.tail, raw[1:]):
        pp, ll = term.p, term.levels
        idx = term.tail_start + np.arange(pp)[:, None] * ll + np.arange(ll)[None, :]  # (p, l)
        blk = Sinv[idx[:, None, :], idx[None, :, :]]  # (p, p, l)
        blk = np.moveaxis(blk, 2, 0)
        var_t.append(np.diagonal(T @ blk @ T.T, axis1=1, axis2=2).copy())
    # block 1: M^{-1} + M^{-1} T1' (A_1t Q A_t1)_c T1 M^{-1}, Q = Lambda_t Sinv Lambda_t'
    Q = np.zeros((nt, nt))
    if m:
        Q[:m, :m] = Sinv
        sandwich(Q[:m, :m], problem, f.factors, transpose=False)
    if problem.targets_eval.size or problem.targets_rest.size:
        # S' q over S's rows, which the problem keeps as S_eval's and the rest's
        qe, qr = Q.reshape(-1)[problem.targets_eval], Q.reshape(-1)[problem.targets_rest]
        if problem.scalar_tail:  # lower triangle only: halve the diagonal, add the transpose
            qe = np.where(problem.targets_eval // nt == problem.targets_eval % nt, 0.5 * qe, qe)
            qr = np.where(problem.targets_rest // nt == problem.targets_rest % nt, 0.5 * qr, qr)
            W = (problem.S_eval.T @ qe + problem.S_rest.T @ qr).reshape(l1, p1, p1)
            Fq = W + np.swapaxes(W, 1, 2)
        else:
            Fq = (problem.S_eval.T @ qe + problem.S_rest.T @ qr).reshape(l1, p1, p1)
    else:
        Fq = np.zeros((l1, p1, p1))
    G = Minv @ (T1.T @ Fq @ T1) @ Minv
    V1 = raw[0] @ (Minv + G) @ raw[0].T
    return np.diagonal(V1, axis1=1, axis2=2).copy(), var_t
