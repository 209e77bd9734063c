"""Per-theta blocked Cholesky: scale by Lambda, add I, factor block by block.

No O(n) work here: block 1 is factored with batched (l_1, p_1, p_1) operations, its
update to the tail is one sparse product with a fixed pattern (`Problem.S_eval`). The
tail's leading "stages" (terms nested in the ones before them, so their diagonal
blocks stay level-block-diagonal) are kept as (l, p, p) diagonal blocks plus the dense
rectangle below each; only those regions and the dense square after the stages are
stored, scaled and updated (for the students designs that is ~10% of the full tail).
The stages are factored level by level with small batched kernels (p x p loops, no
einsum), the dense square with LAPACK's dpotrf.
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


def raw_factors(problem: Problem, theta: np.ndarray) -> list[np.ndarray]:
    """lme4's T_i(theta) per internal term (on the terms' own columns)."""
    return [t.factor(theta) for t in problem.terms]


def working_factors(problem: Problem, theta: np.ndarray, whitened: bool = False) -> list[np.ndarray]:
    """The factors the evaluation uses, per internal term (ReTerm.working_factor)."""
    return [t.working_factor(theta, whitened) for t in problem.terms]


def phi_to_theta(problem: Problem, phi: np.ndarray) -> np.ndarray:
    """The optimizer's (whitened) parameters -> lme4's theta."""
    theta = np.array(phi, dtype=float)
    for t in problem.terms:
        t.phi_to_theta(phi, theta)
    return theta


def theta_to_phi(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """lme4's theta -> the optimizer's (whitened) parameters."""
    phi = np.array(theta, dtype=float)
    for t in problem.terms:
        t.theta_to_phi(theta, phi)
    return phi


def _first_block(problem: Problem, T1: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    if problem.first.p == 1:
        t2 = T1[0, 0] ** 2
        m = t2 * problem.A11[:, 0, 0] + 1.0
        L = np.sqrt(m)[:, None, None]
        B = (t2 / m)[:, None, None]
        return L, B, float(np.sum(np.log(m)))
    if problem.first.p == 2:
        return _first_block_2x2(problem, T1)
    M = T1.T @ problem.A11 @ T1
    M += np.eye(problem.first.p)
    L = np.linalg.cholesky(M)
    G = T1 @ np.swapaxes(np.linalg.inv(L), 1, 2)  # T L^{-T}
    B = G @ np.swapaxes(G, 1, 2)
    logdet = 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
    return L, B, logdet


def _first_block_2x2(problem: Problem, T1: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """`_first_block` for two columns per level (`(x|g)`, the commonest slope term) in
    closed form over the levels: batched 2 x 2 matmul, cholesky and inv cost ~100 us of
    numpy dispatch per evaluation, these few vector operations a fifth of that."""
    A = problem.A11
    a, b, c = A[:, 0, 0], A[:, 1, 0], A[:, 1, 1]
    (t00, t01), (t10, t11) = T1
    # M = T' A T + I with A = [[a, b], [b, c]] per level
    m00 = (t00 * t00) * a + (2.0 * t00 * t10) * b + (t10 * t10) * c + 1.0
    m01 = (t00 * t01) * a + (t00 * t11 + t10 * t01) * b + (t10 * t11) * c
    m11 = (t01 * t01) * a + (2.0 * t01 * t11) * b + (t11 * t11) * c + 1.0
    l00 = np.sqrt(m00)
    l10 = m01 / l00
    l11 = np.sqrt(m11 - l10 * l10)
    L = np.zeros((a.size, 2, 2))
    L[:, 0, 0], L[:, 1, 0], L[:, 1, 1] = l00, l10, l11
    # B = T M^{-1} T' with M^{-1} = [[m11, -m01], [-m01, m00]] / det
    det = (l00 * l11) ** 2
    i00, i01, i11 = m11 / det, -m01 / det, m00 / det
    r00, r01 = t00 * i00 + t01 * i01, t00 * i01 + t01 * i11  # rows of T M^{-1}
    r10, r11 = t10 * i00 + t11 * i01, t10 * i01 + t11 * i11
    B = np.empty((a.size, 2, 2))
    B[:, 0, 0] = r00 * t00 + r01 * t01
    B[:, 0, 1] = B[:, 1, 0] = r00 * t10 + r01 * t11
    B[:, 1, 1] = r10 * t10 + r11 * t11
    return L, B, 2.0 * float(np.sum(np.log(l00 * l11)))


def _scale_vector(problem: Problem, factors: list[np.ndarray]) -> np.ndarray:
    """The diagonal part of Lambda_t: t_i for 1-column terms, 1 for wider terms and W."""
    values = [T[0, 0] if T.shape[0] == 1 else 1.0 for T in factors[1:]]
    return np.repeat(np.array([*values, 1.0]), [*(t.q for t in problem.tail), problem.p + 1])


def sandwich(C: np.ndarray, problem: Problem, factors: list[np.ndarray], transpose: bool) -> None:
    """In place: C <- Lambda_t' C Lambda_t (transpose) or Lambda_t C Lambda_t' (not), on a
    full matrix (solve.py's conditional variances; the evaluation uses `_scale_region`).

    C is a full (not triangular) matrix over the first rows of the tail (at least the
    random rows); wider terms are in slab layout, where Lambda_i = T_i (x) I.
    """
    nt = C.shape[0]
    lam = _scale_vector(problem, factors)[:nt]
    C *= lam[:, None]
    C *= lam[None, :]
    if problem.scalar_tail:
        return
    for term, T in zip(problem.tail, factors[1:]):
        start, q, p = term.tail_start, term.q, term.p
        if p == 1:
            continue
        left = T.T if transpose else T  # rows: Lambda' C takes T', Lambda C takes T
        rows = C[start:start + q].reshape(p, q // p, nt)
        C[start:start + q] = np.tensordot(left, rows, axes=1).reshape(q, nt)
        cols = C[:, start:start + q].reshape(nt, p, q // p)
        C[:, start:start + q] = np.tensordot(left, cols, axes=([1], [1])).transpose(1, 0, 2).reshape(nt, q)


def _scale_region(V: np.ndarray, r0: int, c0: int, problem: Problem, factors: list[np.ndarray],
                  lam: np.ndarray) -> None:
    """In place: V <- Lambda_R' V Lambda_C for V = C[r0:, c0:c0 + V.shape[1]] (a region whose
    row and column ranges start at block boundaries; wider terms in slab layout)."""
    nr, nc = V.shape
    V *= lam[r0:r0 + nr, None]
    V *= lam[None, c0:c0 + nc]
    if problem.scalar_tail:
        return
    for term, T in zip(problem.tail, factors[1:]):
        start, q, p, l = term.tail_start, term.q, term.p, term.levels
        if p == 1:
            continue
        if r0 <= start < r0 + nr:  # rows: (T' (x) I) X
            i = start - r0
            rows = V[i:i + q].reshape(p, l * nc)
            V[i:i + q] = (T.T @ rows).reshape(q, nc)
        if c0 <= start < c0 + nc:  # columns: X (T (x) I)
            j = start - c0
            X = V[:, j:j + q].reshape(nr, p, l)
            out = np.empty((nr, p, l))
            for b in range(p):
                acc = X[:, 0, :] * T[0, b]
                for a in range(1, p):
                    acc += X[:, a, :] * T[a, b]
                out[:, b, :] = acc
            V[:, j:j + q] = out.reshape(nr, q)


def _eliminate(C: np.ndarray, D: np.ndarray, stage: Stage, problem: Problem,
               diags: list[np.ndarray], later: list[Stage]) -> float:
    """Factor one block-diagonal tail block (its (l, p, p) diagonal blocks D, scaled and
    with I added) and update what comes after it: L_Rj = C_Rj L_jj^{-T} in the rectangle
    below it, then C_RR -= L_Rj L_Rj' on the stored regions only (later stages' diagonal
    blocks and rectangles, the dense square). Returns log|L_jj|^2.
    """
    l, p = stage.l, stage.p
    q = l * p
    s0, e0 = stage.start, stage.start + q
    G = C[e0:, s0:e0]
    if p == 1:
        d = D[:, 0, 0]
        if not d.min() > 0:
            raise FactorError("non-positive pivot")
        L = np.sqrt(d)
        G /= L
        C[stage.rows[:, 0, 0], stage.cols[:, 0, 0]] = L
        logdet = float(np.log(d).sum())
    else:
        L = np.linalg.cholesky(D)
        Linv = np.linalg.inv(L)
        X = G.reshape(-1, p, l)
        out = np.empty_like(X)
        for b in range(p):  # out[:, b, c] = sum_a X[:, a, c] Linv[c, b, a], Linv lower
            acc = X[:, 0, :] * Linv[:, b, 0][None, :]
            for a in range(1, b + 1):
                acc += X[:, a, :] * Linv[:, b, a][None, :]
            out[:, b, :] = acc
        G[...] = out.reshape(-1, q)
        C[stage.rows, stage.cols] = L
        logdet = 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
    for st, Dm in zip(later, diags):
        qm = st.l * st.p
        sm, em = st.start, st.start + qm
        Gm = G[sm - e0:em - e0]
        if st.p == 1:
            Dm[:, 0, 0] -= np.einsum("ij,ij->i", Gm, Gm)
        else:
            Gm3 = Gm.reshape(st.p, st.l, q)
            for a in range(st.p):
                for b in range(a + 1):
                    v = np.einsum("ij,ij->i", Gm3[a], Gm3[b])
                    Dm[:, a, b] -= v
                    if a != b:
                        Dm[:, b, a] -= v
        if em < C.shape[0]:
            C[em:, sm:em] -= G[em - e0:] @ Gm.T
    k = problem.dense_start
    Gd = G[k - e0:]
    if Gd.shape[0]:
        C[k:, k:] -= Gd @ Gd.T
    return logdet


def _stage_diagonals(problem: Problem, factors: list[np.ndarray], upd: np.ndarray) -> list[np.ndarray]:
    """Each stage's (l, p, p) diagonal blocks, updated by the first term (`upd`: the stages'
    rows of S_eval @ vec(B), in order), scaled T' D T per level, plus I."""
    diags: list[np.ndarray] = []
    o = 0
    for st, A_d, t in zip(problem.stages, problem.stage_diag, problem.t_stage):
        D = A_d.copy()
        D.reshape(-1)[t] -= upd[o:o + t.size]
        o += t.size
        T = factors[1 + len(diags)]
        if st.p > 1:
            D = T.T @ D @ T
            D += np.eye(st.p)
        else:
            D *= T[0, 0] * T[0, 0]
            D += 1.0
        diags.append(D)
    return diags


def factorize(problem: Problem, theta: np.ndarray, whitened: bool = False) -> Factor:
    """The blocked Cholesky factor at theta (raises FactorError if not positive definite)."""
    factors = working_factors(problem, theta, whitened)
    L11, B, logdet1 = _first_block(problem, factors[0])
    upd = problem.S_eval @ B.reshape(-1)
    k = problem.dense_start
    nt = problem.nt
    lam = _scale_vector(problem, factors)
    if not problem.stages:
        C = problem.A_tt.copy()
    else:
        # only the stored regions: the rectangle below each stage and the dense square;
        # the stages' diagonal blocks are kept as (l, p, p) arrays
        C = np.zeros((nt, nt))
        for st in problem.stages:
            e = st.start + st.l * st.p
            C[e:, st.start:e] = problem.A_tt[e:, st.start:e]
        C[k:, k:] = problem.A_tt[k:, k:]
    nd = problem.t_dense.size
    C.reshape(-1)[problem.t_dense] -= upd[:nd]
    diags = _stage_diagonals(problem, factors, upd[nd:])
    for st in problem.stages:
        e = st.start + st.l * st.p
        _scale_region(C[e:, st.start:e], e, st.start, problem, factors, lam)
    _scale_region(C[k:, k:], k, k, problem, factors, lam)
    C.reshape(-1)[k * (nt + 1):problem.m_rand * (nt + 1):nt + 1] += 1.0  # the diagonal, rows k..m
    for j, stage in enumerate(problem.stages):
        _eliminate(C, diags[j], stage, problem, diags[j + 1:], problem.stages[j + 1:])
    # C is C-contiguous with its lower triangle valid; C.T is Fortran-ordered with that
    # triangle as its upper one, so dpotrf(upper) factors in place without a copy.
    U, info = lapack.dpotrf(C[k:, k:].T, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise FactorError(f"dpotrf info {info}")
    if k:
        C[k:, k:] = U.T

    d = np.diagonal(C)
    m, p = problem.m_rand, problem.p
    # W = [X y] is the tail's last block, y last: in the factor of [[A, c], [c', y'y]] the
    # last pivot r has r^2 = y'y - c' A^{-1} c, the penalized weighted RSS at the
    # conditional optimum of [u; beta] (solve.py recovers that optimum from y's row)
    r = d[m + p]
    if not (d[: m + p].min() > 0 and np.isfinite(r)):
        raise FactorError("non-positive pivot")
    return Factor(
        factors=factors, L11=L11, B=B, Ltail=C,
        logdet_z=logdet1 + 2.0 * float(np.log(d[:m]).sum()),
        logdet_x=2.0 * float(np.log(d[m:m + p]).sum()), r2=float(r * r))
