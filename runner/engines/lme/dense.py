"""The scaled system of a small model as one dense matrix: its evaluation in a few LAPACK calls.

For a textbook model (sleepstudy's 36 random effects, Pastes' 40) the blocked evaluation
(factor.py, inverse.py) costs numpy's per-call overhead, not arithmetic: ~40 small calls
per criterion value and ~60 more per gradient. Here the whole Gram matrix G of
[Z_1 Z_t X y] (the problem's column layout: the first term level-major, the tail's
terms in slab layout, then W = [X y]) is kept dense, and one evaluation is

    A = Lambda~' G Lambda~ + diag(1_q, 0_{p+1}),  U'U = A  (one dpotrf)

whose pivots give log|L_ZZ|^2, log|R_X|^2 and r^2 exactly as the blocked factor's do (the
same matrix, factored in another order: the values agree to rounding). The gradient's
balances Q_k (gradient.py) come from one dpotri of U's leading block (M^{-1} over [Z] for
ML, [Z X] for REML) and one triangular solve for the spherical modes. The optimizer, lme4's
convergence check, the post-fit numbers (`dense_solution`) and inference's factor all use it
for such a model; the blocked update structure is then never built (structure.py) unless a
caller asks for a blocked factorization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from runner.engines.lme.factor import FactorError, working_factors
from runner.engines.lme.solve import Solution, tail_solution
from runner.engines.lme.structure import Problem, small_model
from runner.vocab import Method


@dataclass
class DenseSystem:
    """What every dense evaluation of one problem reuses (built once, kept on the problem)."""

    G: np.ndarray  # (N, N) Gram matrix of [Z_1 Z_t X y], the problem's column layout
    q: int  # random columns
    p: int
    scalar: bool  # every term has one column: Lambda~ is diagonal
    lam_base: np.ndarray  # Lambda~ with W's identity and zeros elsewhere (wider terms)
    lam_flat: np.ndarray  # flat positions in Lambda~ of the factors' entries
    lam_src: np.ndarray  # for each, its index in the concatenated raveled factors
    repeats: np.ndarray  # scalar models: how often each term's t repeats on the diagonal
    columns: list[np.ndarray]  # per internal term, its (levels, p) column positions
    diag_q: np.ndarray  # flat positions of A's first q diagonal entries (the added I)
    # per method, per term: (levels, p, p) flat positions of each level block's entries in the
    # C-ordered view of dpotri's Fortran-ordered result, all in its valid (upper) triangle
    block_reads: dict[str, list[np.ndarray]]


@dataclass
class DenseFactor:
    """The dense factor at one theta: the fields objective_from and the gradient read."""

    factors: list[np.ndarray]
    U: np.ndarray  # (N, N) Fortran-ordered upper factor, U'U = A (lower triangle: garbage)
    logdet_z: float
    logdet_x: float
    r2: float


def dense_size(problem: Problem) -> int:
    """Rows of the dense system: q + p + 1."""
    return problem.first.q + problem.nt


def use_dense(problem: Problem) -> bool:
    """Whether the criterion evaluates this problem densely (small enough that numpy's per-call
    cost dominates the blocked route)."""
    return small_model(problem.terms, problem.nt)


def _term_columns(problem: Problem) -> list[np.ndarray]:
    """Per internal term, the (levels, p) positions of its columns in the dense system."""
    first = problem.first
    out = [np.arange(first.q).reshape(first.levels, first.p)]
    for t in problem.tail:  # slab layout: column a of level c at tail_start + a l + c
        out.append(first.q + t.tail_start + np.arange(t.q).reshape(t.p, t.levels).T)
    return out


def _gram(problem: Problem) -> np.ndarray:
    first, q1 = problem.first, problem.first.q
    N = q1 + problem.nt
    G = np.zeros((N, N))
    cols = np.arange(q1).reshape(first.levels, first.p)
    G[cols[:, :, None], cols[:, None, :]] = problem.A11
    At1 = problem.A_t1.toarray()
    G[q1:, :q1] = At1
    G[:q1, q1:] = At1.T
    G[q1:, q1:] = problem.A_tt
    return G


def system(problem: Problem) -> DenseSystem:
    """The problem's dense system (made on first use, kept on the problem like factor.py's plan)."""
    kept = problem.__dict__.get("_dense_system")
    if kept is not None and kept[0] is problem.A11:
        return kept[1]
    G = _gram(problem)
    N = G.shape[0]
    q, p = N - problem.p - 1, problem.p
    columns = _term_columns(problem)
    scalar = all(t.p == 1 for t in problem.terms)
    flat, src = [], []
    offset = 0
    for term, cols in zip(problem.terms, columns):
        k = term.p
        a, b = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
        rows = cols[:, a.ravel()]  # (levels, k * k): row of entry (a, b) per level
        cs = cols[:, b.ravel()]
        flat.append((rows * N + cs).ravel())
        src.append(np.tile(offset + a.ravel() * k + b.ravel(), term.levels))
        offset += k * k
    base = np.zeros((N, N))
    base[np.arange(q, N), np.arange(q, N)] = 1.0
    reads = {}
    for method, rows in (("ML", q), ("REML", q + p)):
        # entry (i, j) of the upper triangle is element j * rows + i of the result's C view
        reads[method] = [np.maximum(c[:, :, None], c[:, None, :]) * rows + np.minimum(c[:, :, None], c[:, None, :])
                         for c in columns]
    out = DenseSystem(G=G, q=q, p=p, scalar=scalar, lam_base=base, lam_flat=np.concatenate(flat),
                      lam_src=np.concatenate(src), repeats=np.array([*(t.q for t in problem.terms), p + 1]),
                      columns=columns, diag_q=np.arange(q) * (N + 1), block_reads=reads)
    problem.__dict__["_dense_system"] = (problem.A11, out)
    return out


def dense_factorize(problem: Problem, theta: np.ndarray, whitened: bool = False) -> DenseFactor:
    """The dense factor at theta (raises FactorError where A is not positive definite)."""
    sysm = system(problem)
    factors = working_factors(problem, theta, whitened)
    if sysm.scalar:
        lam = np.repeat(np.array([*(T[0, 0] for T in factors), 1.0]), sysm.repeats)
        A = sysm.G * lam[:, None]
        A *= lam[None, :]
    else:
        Lam = sysm.lam_base.copy()
        Lam.reshape(-1)[sysm.lam_flat] = np.concatenate([T.ravel() for T in factors])[sysm.lam_src]
        A = Lam.T @ sysm.G @ Lam
    A.reshape(-1)[sysm.diag_q] += 1.0
    # A is symmetric, so its C-ordered buffer is A' in Fortran order: dpotrf(upper) in place
    U, info = lapack.dpotrf(A.T, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise FactorError(f"dpotrf info {info}")
    q, p = sysm.q, sysm.p
    d = np.diagonal(U)
    r = d[q + p]
    if not (d[:q + p].min() > 0 and np.isfinite(r)):
        raise FactorError("non-positive pivot")
    logs = np.log(d[:q + p])
    return DenseFactor(factors=factors, U=U, logdet_z=2.0 * float(logs[:q].sum()),
                       logdet_x=2.0 * float(logs[q:].sum()), r2=float(r * r))


def dense_balances(problem: Problem, f: DenseFactor, method: Method, sigma: float | None = None
                   ) -> list[np.ndarray]:
    """gradient.balances from the dense factor: Q_k = l_k I - C_k - (n' / r2) U_k' U_k (with
    `sigma`, the weight 1 / sigma^2 instead of n' / r2)."""
    sysm = system(problem)
    q, p = sysm.q, sysm.p
    rows = q + p if method == "REML" else q
    n_eff = problem.n if method == "ML" else problem.n - p
    weight = n_eff / f.r2 if sigma is None else 1.0 / (sigma * sigma)
    inv, info = lapack.dpotri(f.U[:rows, :rows], lower=0)  # upper triangle of (U_a' U_a)^{-1}
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotri info {info}")
    flat = inv.T.reshape(-1)  # Fortran-ordered: its transpose is a C-ordered view
    u = _modes(f, q)[0]
    out = []
    for term, cols, reads in zip(problem.terms, sysm.columns, sysm.block_reads[method]):
        C = flat[reads].sum(axis=0)
        Uk = u[cols]
        out.append(term.levels * np.eye(term.p) - C - weight * (Uk.T @ Uk))
    return out


def _modes(f: DenseFactor, q: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, beta): the penalized least-squares solution, by solve.tail_solution on U' (the
    C-ordered lower factor it takes, a view: no copy)."""
    x = tail_solution(f.U.T)
    return x[:q], x[q:]


def dense_vcov_unscaled(problem: Problem, f: DenseFactor) -> np.ndarray:
    """(R_X' R_X)^{-1}: R_X is U's X block (A's Schur complement over X is R_X' R_X)."""
    q, p = problem.first.q + problem.m_rand, problem.p
    if p == 0:  # no fixed effects (y ~ 0 + (1 | g))
        return np.zeros((0, 0))
    inv, info = lapack.dpotri(f.U[q:q + p, q:q + p], lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotri info {info}")
    return np.triu(inv) + np.triu(inv, 1).T


def dense_beta(problem: Problem, f: DenseFactor) -> np.ndarray:
    """beta at its conditional optimum given theta."""
    return _modes(f, problem.first.q + problem.m_rand)[1]


def dense_solution(problem: Problem, f: DenseFactor, raw: list[np.ndarray]) -> Solution:
    """solve.solve from the dense factor: beta, (R_X' R_X)^{-1}, the modes b = T u on the terms'
    own columns (`raw`: lme4's factors, factor.raw_factors) and the conditional variances
    (the diagonal of T V_c T' per level, V_c the level block of (L_ZZ L_ZZ')^{-1})."""
    sysm = system(problem)
    u, beta = _modes(f, sysm.q)
    inv, info = lapack.dpotri(f.U[:sysm.q, :sysm.q], lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotri info {info}")
    flat = inv.T.reshape(-1)
    modes, cond_var = [], []
    for cols, reads, T in zip(sysm.columns, sysm.block_reads["ML"], raw):
        modes.append(u[cols] @ T.T)
        blocks = flat[reads]  # (levels, p, p)
        cond_var.append(np.einsum("ab,cbd,ad->ca", T, blocks, T))
    return Solution(beta=beta, vcov_unscaled=dense_vcov_unscaled(problem, f), modes=modes, cond_var=cond_var)
