"""Nesting of random parts proven on the marginal covariance of y, not by term matching.

Model A's random part is within model B's when every covariance Z_A G_A Z_A' that A can
produce on the data's rows, B can produce too: Z_B G_B Z_B' = Z_A G_A Z_A' for some
admissible G_B. Term matching misses textbook pairs that lme4's `anova()` compares:
`(1|g) + (1|f:g)` gives a compound-symmetric covariance of the `0 + f | g` columns, which
the unstructured `(0 + f|g)` contains, and `(1|g)` is its rank-one special case.

The proof is numerical and exact to rounding. G_B is linear in B's covariance
parameters c (every entry of an unstructured template, the variances of a diagonal one,
one variance for identity, {I, J} for compound symmetry), so for a few random admissible
parameter values of A we solve the least-squares problem

    min_c || sum_k c_k M_k - V_A ||_F,    M_k = Z_B (I (x) E_k) Z_B'

through the q x q cross-products Z_B'Z_B and Z_B'Z_A (never an n x n matrix):
<M_k, M_m> = tr(A_k C A_m C'), with C = Z_k'Z_m. A residual above rounding proves that B
cannot produce V_A (not nested); a zero residual with an admissible c (PSD templates,
non-negative variances and compound-symmetry weights) proves it can. Where the c that
reproduces V_A is not unique and the one found is not admissible, nothing is proven.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import scipy.sparse as sp

RESIDUAL_RTOL = 1e-7  # relative Frobenius residual counted as an exact reproduction
ADMISSIBLE_TOL = 1e-8  # eigenvalue / weight tolerance, relative to the template's scale
DRAWS = 3  # random parameter values of the small model


class Verdict(Enum):
    CONTAINED = "contained"
    NOT_CONTAINED = "not_contained"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class ReTerm:
    """One random term evaluated on the rows: level codes, lhs columns, covariance."""

    group: str
    codes: np.ndarray  # (n,) level of each row
    X: np.ndarray  # (n, p)
    covariance: str  # unstructured | diagonal | identity | compound_symmetry

    @property
    def p(self) -> int:
        return int(self.X.shape[1])

    @property
    def nlevels(self) -> int:
        return int(self.codes.max()) + 1 if self.codes.size else 0


@dataclass(frozen=True)
class MarginalProof:
    verdict: Verdict
    reason: str


def _z(term: ReTerm) -> sp.csr_matrix:
    """Z of one term: row i holds X[i] in the columns of its level."""
    n, p = term.X.shape
    rows = np.repeat(np.arange(n), p)
    cols = (term.codes[:, None] * p + np.arange(p)[None, :]).ravel()
    return sp.csr_matrix((term.X.ravel(), (rows, cols)), shape=(n, term.nlevels * p))


def _basis(term: ReTerm) -> list[np.ndarray]:
    """Templates E_k (p x p) spanning the term's covariance structure, linearly."""
    p = term.p
    if p == 1:
        return [np.ones((1, 1))]
    if term.covariance == "unstructured":
        out = []
        for a in range(p):
            for b in range(a + 1):
                e = np.zeros((p, p))
                e[a, b] = e[b, a] = 1.0
                out.append(e)
        return out
    if term.covariance == "diagonal":
        out = []
        for a in range(p):
            e = np.zeros((p, p))
            e[a, a] = 1.0
            out.append(e)
        return out
    if term.covariance == "identity":
        return [np.eye(p)]
    if term.covariance == "compound_symmetry":
        return [np.eye(p), np.ones((p, p))]  # v((1 - rho) I + rho J): both weights >= 0
    raise ValueError(f"unknown covariance structure {term.covariance!r}")


def _template(term: ReTerm, c: np.ndarray) -> np.ndarray:
    return sum((ck * e for ck, e in zip(c, _basis(term))), np.zeros((term.p, term.p)))


def _admissible(term: ReTerm, c: np.ndarray) -> bool:
    """Can B's term take these linear parameters? (PSD, non-negative weights.)"""
    scale = max(float(np.max(np.abs(c))), 1e-300)
    tol = ADMISSIBLE_TOL * scale
    if term.p == 1 or term.covariance != "unstructured":
        return bool(np.all(c >= -tol))  # variances, or compound symmetry's {I, J} weights
    return bool(np.linalg.eigvalsh(_template(term, c)).min() >= -tol)


def _random_template(term: ReTerm, rng: np.random.Generator) -> np.ndarray:
    """An admissible covariance template of the small model's term, drawn at random."""
    p = term.p
    if p == 1:
        return np.array([[rng.uniform(0.5, 2.0)]])
    if term.covariance == "unstructured":
        L = np.tril(rng.normal(size=(p, p)))
        L[np.diag_indices(p)] = rng.uniform(0.5, 2.0, size=p)
        return L @ L.T
    if term.covariance == "diagonal":
        return np.diag(rng.uniform(0.5, 2.0, size=p))
    if term.covariance == "identity":
        return rng.uniform(0.5, 2.0) * np.eye(p)
    rho = rng.uniform(0.1, 0.9)
    return rng.uniform(0.5, 2.0) * ((1 - rho) * np.eye(p) + rho * np.ones((p, p)))


def _blockdiag(template: np.ndarray, levels: int) -> sp.csr_matrix:
    return sp.kron(sp.identity(levels, format="csr"), sp.csr_matrix(template), format="csr")


def _trace_prod(a: sp.spmatrix, c: sp.spmatrix, b: sp.spmatrix) -> float:
    """tr(A C B C') for symmetric A (rows of C) and B (columns of C)."""
    return float((a @ c @ b).multiply(c).sum())


def prove_contained(small: list[ReTerm], large: list[ReTerm], seed: int = 20261201) -> MarginalProof:
    """Is every marginal covariance of `small`'s random part producible by `large`'s?"""
    if not small:
        return MarginalProof(Verdict.CONTAINED, "no random terms in the smaller model")
    z_small = [_z(t) for t in small]
    z_large = [_z(t) for t in large]
    # Gram matrix of the large model's basis matrices M_k
    index: list[tuple[int, np.ndarray]] = [(j, e) for j, t in enumerate(large) for e in _basis(t)]
    cross_ll = {(i, j): (z_large[i].T @ z_large[j]).tocsr() for i in range(len(large)) for j in range(len(large))}
    mats = [_blockdiag(e, large[j].nlevels) for j, e in index]
    m = len(index)
    gram = np.empty((m, m))
    for a in range(m):
        for b in range(a, m):
            ja, jb = index[a][0], index[b][0]
            gram[a, b] = gram[b, a] = _trace_prod(mats[a], cross_ll[ja, jb], mats[b])
    evals = np.linalg.eigvalsh(gram) if m else np.zeros(0)
    unique = bool(m and evals.min() > 1e-10 * max(evals.max(), 1e-300))
    cross_ls = {(i, j): (z_large[i].T @ z_small[j]).tocsr() for i in range(len(large)) for j in range(len(small))}
    cross_ss = {(i, j): (z_small[i].T @ z_small[j]).tocsr() for i in range(len(small)) for j in range(len(small))}
    rng = np.random.default_rng(seed)
    undecided = ""
    for _ in range(DRAWS):
        g_small = [_blockdiag(_random_template(t, rng), t.nlevels) for t in small]
        norm2 = sum(_trace_prod(g_small[i], cross_ss[i, j], g_small[j])
                    for i in range(len(small)) for j in range(len(small)))
        rhs = np.array([sum(_trace_prod(mats[a], cross_ls[index[a][0], s], g_small[s]) for s in range(len(small)))
                        for a in range(m)])
        c = np.linalg.lstsq(gram, rhs, rcond=1e-12)[0] if m else np.zeros(0)
        resid2 = norm2 - 2.0 * float(c @ rhs) + float(c @ gram @ c)
        if resid2 > (RESIDUAL_RTOL ** 2) * norm2:
            return MarginalProof(Verdict.NOT_CONTAINED, (
                "the larger model cannot produce the smaller model's marginal covariance of y "
                f"(relative residual {np.sqrt(resid2 / norm2):.2g})"))
        pos = 0
        for t in large:
            k = len(_basis(t))
            if not _admissible(t, c[pos:pos + k]):
                if unique:
                    return MarginalProof(Verdict.NOT_CONTAINED, (
                        f"reproducing the smaller model's covariance needs an inadmissible covariance on {t.group} "
                        f"({t.covariance})"))
                undecided = f"the parameters reproducing it on {t.group} are not unique and the ones found are inadmissible"
            pos += k
    if undecided:
        return MarginalProof(Verdict.UNDECIDED, undecided)
    return MarginalProof(Verdict.CONTAINED, "the larger model reproduces the smaller model's marginal covariance of y")
