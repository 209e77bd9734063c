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
import scipy.sparse as sp
from scipy.linalg import lapack

from runner.engines.lme.structure import Problem, Stage, ensure_update_structure

UPDATE_CHUNK = 1 << 20  # update targets scattered at once


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
    # leading rows of Ltail overwritten by the inverse (inverse.tail_inverse with consume): the
    # solves that read the factor check this first
    inverted_rows: int = 0

    def require_intact(self, from_row: int = 0) -> None:
        """Raise if a caller about to read the tail factor's rows from `from_row` on would read
        an inverse written over them."""
        if self.inverted_rows > from_row:
            raise RuntimeError("the tail factor was inverted in place: its solves must come first")


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
    plan = _plan(problem)
    if plan.p1 == 1:
        t2 = T1[0, 0] ** 2
        m = t2 * plan.gram1 + 1.0
        L = np.sqrt(m)[:, None, None]
        B = (t2 / m)[:, None, None]
        return L, B, float(np.sum(np.log(m)))
    if plan.p1 == 2:
        return _first_block_2x2(problem, T1)
    M = T1.T @ problem.A11 @ T1
    M += np.eye(plan.p1)
    L = np.linalg.cholesky(M)
    G = T1 @ np.swapaxes(np.linalg.inv(L), 1, 2)  # T L^{-T}
    B = G @ np.swapaxes(G, 1, 2)
    logdet = 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
    return L, B, logdet


_ONE_ZERO_ONE = np.array([1.0, 0.0, 1.0])
_INV = np.array([2, 1, 2, 1, 1, 0, 1, 0])  # columns of [m00, m01, m11] over det: [i00, j, i00, j | j, i11, j, i11]
_RB = np.array([0, 0, 0, 2, 1, 1, 1, 3])  # columns of [r00, r01, r10, r11]: B00, B01, B10, B11 = first + second half


def _first_block_2x2(problem: Problem, T1: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """`_first_block` for two columns per level (`(x|g)`, the commonest slope term) in
    closed form over the levels. The per-level quantities are the columns of small (l, k)
    arrays so each step is one numpy call for all of them (numpy's per-call cost, not the
    arithmetic, is what a small model pays); every entry is computed by the same
    floating-point operations, in the same order, as one vector per quantity would, so the
    criterion is bit-identical to that form (tested against it)."""
    A3 = _plan(problem).gram1  # (3, l, 1): a, b, c of A = [[a, b], [b, c]] per level
    (t00, t01), (t10, t11) = T1.tolist()
    # m00 = ((c_a a + c_b b) + c_c c) + 1, m01 the same without + 1, m11 as m00
    coef = np.array([t00 * t00, t00 * t01, t01 * t01,  # c_a of m00, m01, m11
                     2.0 * t00 * t10, t00 * t11 + t10 * t01, 2.0 * t01 * t11,  # c_b
                     t10 * t10, t10 * t11, t11 * t11,  # c_c
                     # rows of T M^{-1}: t * i01 == -(t * j) and x + (-y) == x - y exactly
                     t00, -t00, t10, -t10, -t01, t01, -t11, t11,
                     t00, t10, t10, t10, t01, t11, t11, t11])  # B = (T M^{-1}) T'
    P = A3 * coef[:9].reshape(3, 1, 3)  # (3, l, 3): [term, level, entry of M]
    M3 = P[0] + P[1]
    M3 += P[2]
    M3 += _ONE_ZERO_ONE  # m01 + 0.0 == m01
    m01 = M3[:, 1]
    l00 = np.sqrt(M3[:, 0])
    l10 = m01 / l00
    l11 = np.sqrt(M3[:, 2] - l10 * l10)
    l = l00.size
    L = np.zeros((l, 2, 2))
    L[:, 0, 0], L[:, 1, 0], L[:, 1, 1] = l00, l10, l11
    # B = T M^{-1} T' with M^{-1} = [[m11, -m01], [-m01, m00]] / det, j = m01 / det
    d = l00 * l11
    X = M3.take(_INV, axis=1)
    X /= (d ** 2)[:, None]
    X *= coef[9:17]
    R = X[:, :4] + X[:, 4:]  # r00, r01, r10, r11
    Y = R.take(_RB, axis=1)
    Y *= coef[17:]
    return L, (Y[:, :4] + Y[:, 4:]).reshape(l, 2, 2), 2.0 * float(np.sum(np.log(d)))


@dataclass
class _Plan:
    """What every evaluation of one problem reuses (built on first use, kept on the problem)."""

    p1: int
    gram1: np.ndarray  # A11 as the first block uses it: (l,) for p1 == 1, (3, l, 1) for 2
    m: int  # random rows of the tail
    counts: np.ndarray  # rows per tail term and W (the scale vector's run lengths)
    ones: np.ndarray | None  # the scale vector when the tail has no random term (all ones)
    diag: slice  # flat positions of the tail's diagonal, rows dense_start..m
    source: tuple[object, ...]  # the problem's A11, terms, nt and p it was made from

    def made_from(self, problem: Problem) -> bool:
        """Whether the problem still holds what the plan was made from (a copy of a problem
        with another A11 or other terms gets a new plan)."""
        a, terms, nt, p = self.source
        return a is problem.A11 and terms is problem.terms and nt == problem.nt and p == problem.p


def _plan(problem: Problem) -> _Plan:
    plan = problem.__dict__.get("_factor_plan")
    if plan is None or not plan.made_from(problem):
        A, p1 = problem.A11, problem.first.p
        if p1 == 1:
            gram1 = np.ascontiguousarray(A[:, 0, 0])
        elif p1 == 2:
            gram1 = np.stack([A[:, 0, 0], A[:, 1, 0], A[:, 1, 1]])[:, :, None]
        else:
            gram1 = A
        m, nt, k = problem.m_rand, problem.nt, problem.dense_start
        plan = _Plan(p1=p1, gram1=gram1, m=m,
                     counts=np.array([*(t.q for t in problem.tail), problem.p + 1]),
                     ones=np.ones(nt) if m == 0 else None, diag=slice(k * (nt + 1), m * (nt + 1), nt + 1),
                     source=(A, problem.terms, nt, problem.p))
        problem.__dict__["_factor_plan"] = plan
    return plan


def scale_vector(problem: Problem, factors: list[np.ndarray]) -> np.ndarray:
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
    lam = scale_vector(problem, factors)[:nt]
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
        C[k:, k:] -= _row_gram(Gd)
    return logdet


SPARSE_GRAM_FLOPS = 1e8  # a stage's rectangle this large (rows^2 x columns) is checked for sparsity
SPARSE_GRAM_DENSITY = 0.05  # and multiplied as a sparse matrix below this share of non-zeros


def _row_gram(G: np.ndarray) -> np.ndarray:
    """G G' for the rectangle below a stage. Where a stage has many levels and each touches
    few of the dense rows (`(x || user) + (1 | item)`: each user's slope meets its ~25 items),
    the dense product multiplies zeros: 3,003 x 40,000 x 3,003 on a million rows, minutes per
    evaluation; as a sparse product it is the sum over levels of their non-zeros squared."""
    rows, cols = G.shape
    if float(rows) * rows * cols >= SPARSE_GRAM_FLOPS and np.count_nonzero(G) < SPARSE_GRAM_DENSITY * G.size:
        S = sp.csr_matrix(G)
        return np.asarray((S @ S.T).toarray())
    return G @ G.T


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


def _lambda_diagonal(problem: Problem, plan: _Plan, factors: list[np.ndarray]) -> np.ndarray:
    """`scale_vector` with the run lengths kept in the plan (all ones when the tail has no
    random term)."""
    if plan.ones is not None:
        return plan.ones
    values = [T[0, 0] if T.shape[0] == 1 else 1.0 for T in factors[1:]]
    return np.repeat(np.array([*values, 1.0]), plan.counts)


def factorize(problem: Problem, theta: np.ndarray, whitened: bool = False) -> Factor:
    """The blocked Cholesky factor at theta (raises FactorError if not positive definite)."""
    ensure_update_structure(problem)
    plan = _plan(problem)
    factors = working_factors(problem, theta, whitened)
    L11, B, logdet1 = _first_block(problem, factors[0])
    upd = problem.S_eval @ B.reshape(-1)
    k = problem.dense_start
    nt = problem.nt
    lam = _lambda_diagonal(problem, plan, factors)
    stages = problem.stages
    if not stages:
        C = problem.A_tt.copy()
    else:
        # only the stored regions: the rectangle below each stage and the dense square;
        # the stages' diagonal blocks are kept as (l, p, p) arrays
        C = np.zeros((nt, nt))
        for st in stages:
            e = st.start + st.l * st.p
            C[e:, st.start:e] = problem.A_tt[e:, st.start:e]
        C[k:, k:] = problem.A_tt[k:, k:]
    flat = C.reshape(-1)
    t_dense = problem.t_dense
    nd = t_dense.size
    for a in range(0, nd, UPDATE_CHUNK):  # in chunks: no nd-sized gathered temporaries at the peak
        flat[t_dense[a:a + UPDATE_CHUNK]] -= upd[a:min(a + UPDATE_CHUNK, nd)]
    if stages:
        diags = _stage_diagonals(problem, factors, upd[nd:])
        for st in stages:
            e = st.start + st.l * st.p
            _scale_region(C[e:, st.start:e], e, st.start, problem, factors, lam)
    if plan.m:  # without random tail rows Lambda_t is I: nothing to scale, no I to add
        _scale_region(C[k:, k:], k, k, problem, factors, lam)
        flat[plan.diag] += 1.0  # the diagonal, rows k..m
    for j, stage in enumerate(stages):
        _eliminate(C, diags[j], stage, problem, diags[j + 1:], stages[j + 1:])
    # C is C-contiguous with its lower triangle valid; C.T is Fortran-ordered with that
    # triangle as its upper one, so dpotrf(upper) factors in place without a copy.
    U, info = lapack.dpotrf(C[k:, k:].T, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise FactorError(f"dpotrf info {info}")
    if k:
        C[k:, k:] = U.T

    d = np.diagonal(C)
    m, p = plan.m, problem.p
    # W = [X y] is the tail's last block, y last: in the factor of [[A, c], [c', y'y]] the
    # last pivot r has r^2 = y'y - c' A^{-1} c, the penalized weighted RSS at the
    # conditional optimum of [u; beta] (solve.py recovers that optimum from y's row)
    r = d[m + p]
    if not ((m + p == 0 or d[: m + p].min() > 0) and np.isfinite(r)):
        raise FactorError("non-positive pivot")
    logs = np.log(d[: m + p])
    return Factor(
        factors=factors, L11=L11, B=B, Ltail=C,
        logdet_z=logdet1 + 2.0 * float(logs[:m].sum()),
        logdet_x=2.0 * float(logs[m:].sum()), r2=float(r * r))
