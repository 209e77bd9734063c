"""At the optimum only: beta, conditional modes and their conditional variances.

From the blocked factor: the tail's last row gives [u_t; beta] by one triangular
solve; block 1's modes follow per level, u_1c = M_c^{-1} T_1' (Z_1'y - Z_1' Z_t b_t - Z_1' X beta)_c.
Conditional variances are sigma^2 Lambda (L_ZZ L_ZZ')^{-1} Lambda' (given beta, as
lme4's condVar), only their diagonal blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack, solve_triangular

from runner.engines.lme.factor import Factor
from runner.engines.lme.inverse import InverseBlocks, inverse_blocks, level_inverse
from runner.engines.lme.sparse_ops import rmatvec
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


@dataclass
class Modes:
    """The conditional optimum at one theta in spherical coordinates: b = Lambda u."""

    u_first: np.ndarray  # (l1, p1)
    u_tail: list[np.ndarray]  # per tail term (l, p)
    beta: np.ndarray


def tail_solution(L: np.ndarray) -> np.ndarray:
    """[u_t; beta] = L_a^{-T} ell from the tail factor L = [[L_a, 0], [ell', r]] (lower triangle
    valid). Solved as L' z = e_last on the whole factor: z = [-L_a^{-T} ell / r; 1 / r], so
    the result is -r z_a. L' of the C-ordered factor is Fortran-ordered, so LAPACK reads it
    in place (a solve on the leading block would copy it: 75 MB on a million rows)."""
    nt = L.shape[0]
    e = np.zeros(nt)
    e[-1] = 1.0
    z, info = lapack.dtrtrs(L.T, e, lower=0, trans=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"dtrtrs info {info}")
    return -L[nt - 1, nt - 1] * z[:-1]


def spherical_modes(problem: Problem, f: Factor) -> Modes:
    """u and beta at the factor's theta (the gradient needs u; `solve` maps it to b)."""
    m, p = problem.m_rand, problem.p
    f.require_intact()
    L = f.Ltail
    # The tail's factor ends with y's row: with A = L_a L_a' the tail before y and c its
    # column of y, [[A, c], [c', y'y]] = [[L_a, 0], [ell', r]] [[L_a', ell], [0, r]] gives
    # c = L_a ell, so the penalized least-squares solution [u_t; beta] = A^{-1} c is
    # L_a^{-T} ell: one triangular solve with the transpose (and r^2 = y'y - c' A^{-1} c,
    # the penalized RSS, is factor.py's last pivot). Only the lower triangle is read.
    x = tail_solution(L)
    u_t, beta = x[:m], x[m:m + p]
    u_tail = _tail_blocks(u_t, problem)
    bt_eval = [uu @ T.T for uu, T in zip(u_tail, f.factors[1:])]  # b_t on the problem's columns
    v = np.concatenate([np.concatenate([b.T.ravel() for b in bt_eval]) if bt_eval else np.zeros(0),
                        beta, [-1.0]])
    resid1 = -rmatvec(problem.A_t1, v)  # Z_1'(y - Z_t b_t - X beta), level-major (l1 * p1)
    l1, p1 = problem.first.levels, problem.first.p
    rhs = resid1.reshape(l1, p1) @ f.factors[0]  # rows: T1' r_c
    Minv = level_inverse(f)
    if p1 == 1:
        u1 = rhs * Minv[:, :, 0]
    else:
        u1 = np.einsum("cab,cb->ca", Minv, rhs)
    return Modes(u_first=u1, u_tail=u_tail, beta=beta)


def solve(problem: Problem, f: Factor, raw: list[np.ndarray], modes: Modes | None = None,
          blocks: InverseBlocks | None = None) -> Solution:
    """`raw`: lme4's factors T_i(theta) (factor.raw_factors). The spherical modes u come
    from the evaluation's factors on the problem's columns; b = T_i u maps them back to the
    terms' own columns (where the problem whitened a term, its columns are X R^{-1} and its
    factor R T, so the same u gives b = T u). `modes` and `blocks` (inverse_blocks over [Z]):
    the evaluation's own where it kept them (criterion.KeptPoint), else computed here."""
    m, p = problem.m_rand, problem.p
    modes = spherical_modes(problem, f) if modes is None else modes
    b1 = modes.u_first @ raw[0].T
    b_tail = [uu @ T.T for uu, T in zip(modes.u_tail, raw[1:])]
    f.require_intact(m)  # the X block (a kept ML factor's inverse covers the rows before it)
    Lxx = np.tril(f.Ltail[m:m + p, m:m + p])
    Lxx_inv = solve_triangular(Lxx, np.eye(p), lower=True)
    vcov = Lxx_inv.T @ Lxx_inv
    blocks = inverse_blocks(problem, f, with_x=False) if blocks is None else blocks
    var1 = _diagonal_of(raw[0], blocks.first)
    var_t = [_diagonal_of(T, blk) for T, blk in zip(raw[1:], blocks.tail)]
    return Solution(beta=modes.beta, vcov_unscaled=vcov, modes=[b1, *b_tail], cond_var=[var1, *var_t])


def _diagonal_of(T: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Per level, the diagonal of T V T' (conditional variances / sigma^2 on the term's columns)."""
    return np.einsum("ab,cbd,ad->ca", T, blocks, T)
