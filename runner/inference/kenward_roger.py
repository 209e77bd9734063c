"""Kenward-Roger as pbkrtest 0.5 computes it (vcovAdj, Lb_ddf, the scaled F of KRmodcomp).

Covariance parameters are the linear ones (each variance and covariance of each random
term, then sigma^2): Sigma = sum_r gamma_r G_r with G_r = Z E_r Z' and G = I for the
residual. Every n x n product pbkrtest forms is written in the random-effects space
through Woodbury, Sigma^{-1} = S / sigma^2 with S = I - Z C Z', C = Lambda (I +
Lambda' Z'Z Lambda)^{-1} Lambda': only q x q and q x p matrices (q = number of random
effects). With prior weights the rows are scaled by sqrt(w) (residual variance sigma^2/w).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import cho_factor, cho_solve
from runner.design.model import RandomBlock
from runner.distributions import f_sf

from runner.inference import varpar
from runner.inference.state import InferenceError, LmmState

EIGEN_TOL = 1e-10
MAX_RANDOM_EFFECTS = 10_000  # q: its dense q x q products need ~6 q^2 doubles and q^3/3 flops


def _linear_basis(covariance: str, p: int) -> list[np.ndarray]:
    """dSigma_term / dgamma for the term's linear covariance parameters (p x p each)."""
    if p == 1:
        return [np.ones((1, 1))]
    if covariance == "unstructured":
        out = []
        for j in range(p):
            for i in range(j, p):
                E = np.zeros((p, p))
                E[i, j] = E[j, i] = 1.0
                out.append(E)
        return out
    if covariance == "diagonal":
        return [np.diag(np.eye(p)[i]) for i in range(p)]
    if covariance == "identity":
        return [np.eye(p)]
    return [np.ones((p, p)), np.eye(p)]  # compound symmetry: shared + own variance


@dataclass
class KenwardRoger:
    phi: np.ndarray  # vcov(beta)
    phi_adj: np.ndarray  # adjusted vcov(beta)
    P: list[np.ndarray]
    W: np.ndarray

    def _a1a2(self, L: np.ndarray) -> tuple[float, float]:
        Theta = L.T @ np.linalg.solve(L @ self.phi @ L.T, L)
        TP = Theta @ self.phi
        u = [TP @ Pi @ self.phi for Pi in self.P]
        k = len(u)
        A1 = A2 = 0.0
        for i in range(k):
            for j in range(i, k):
                e = 1.0 if i == j else 2.0
                A1 += e * self.W[i, j] * np.trace(u[i]) * np.trace(u[j])
                A2 += e * self.W[i, j] * float(np.sum(u[i] * u[j].T))
        return A1, A2

    def _ddf(self, L: np.ndarray, q: int) -> tuple[float, float]:
        """(df2, F scaling) as pbkrtest's .KR_adjust / Lb_ddf."""
        A1, A2 = self._a1a2(L)
        B = (A1 + 6 * A2) / (2 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        c1 = g / (3 * q + 2 * (1 - g))
        c2 = (q - g) / (3 * q + 2 * (1 - g))
        c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
        V0 = 1 + c1 * B
        V1 = 1 - c2 * B
        V2 = 1 - c3 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        x, y = 1 - A2 / q, V1
        ratio = 1.0 if abs(x) < 1e-14 and abs(y) < 1e-14 else x / y
        rho = ratio ** 2 * V0 / V2 / q
        df2 = 4 + (q + 2) / (q * rho - 1)
        scaling = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
        if not np.isfinite(df2):
            raise InferenceError("Kenward-Roger df are not finite")
        return float(df2), float(scaling)

    def contrast(self, l: np.ndarray) -> tuple[float, float]:
        """(adjusted variance of l'beta, KR df) as lmerTest's get_KR1D."""
        l = np.asarray(l, dtype=float)
        df, _ = self._ddf(l[None, :], 1)
        return float(l @ self.phi_adj @ l), df

    def f_test(self, L: np.ndarray, beta: np.ndarray) -> tuple[float, int, float]:
        """(scaled F, num df, den df) for L beta = 0, as KRmodcomp's Ftest row."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        q = int(np.linalg.matrix_rank(L))
        df2, scaling = self._ddf(L, q)
        Lb = L @ beta
        wald = float(Lb @ np.linalg.solve(L @ self.phi_adj @ L.T, Lb))
        return scaling * wald / q, q, df2


def _z_matrix(state: LmmState, sw: np.ndarray | None) -> tuple[sp.csr_matrix, list[tuple[int, RandomBlock]]]:
    """Z (n x q) level-major per term in lme4's order, and (offset, block) per term."""
    mats, off = [], 0
    where: list[tuple[int, RandomBlock]] = []
    n = state.design.nobs
    for b in state.design.blocks:
        p = b.ncols
        vals = b.X if sw is None else b.X * sw[:, None]
        cols = b.codes[:, None] * p + np.arange(p)[None, :] + off
        mats.append(sp.csr_matrix((vals.ravel(), (np.repeat(np.arange(n), p), cols.ravel())),
                                  shape=(n, off + b.nlevels * p)))
        where.append((off, b))
        off += b.nlevels * p
    Z = sp.csr_matrix((n, off))
    for m in mats:
        m.resize((n, off))
        Z = Z + m
    return Z.tocsr(), where


def _trace_zs2z(E: sp.csr_matrix, a1: np.ndarray, CA: np.ndarray, chunk: int = 512) -> float:
    """tr(E Z'S^2Z) from its entries on E's pattern: Z'S^2Z = a1 - (CA)' a1, a1 = Z'SZ."""
    coo = E.tocoo()
    total = 0.0
    for s0 in range(0, coo.nnz, chunk):
        r, c, v = coo.row[s0:s0 + chunk], coo.col[s0:s0 + chunk], coo.data[s0:s0 + chunk]
        zc_r = a1[c, r] - np.einsum("ij,ij->j", CA[:, c], a1[:, r])
        total += float(np.sum(v * zc_r))
    return total


@dataclass
class _Products:
    """The Woodbury products of S = I - Z C Z' that pbkrtest forms as n x n matrices."""

    a1: np.ndarray  # Z'SZ
    b1: np.ndarray  # Z'SX
    x1: np.ndarray  # X'SX
    xs2x: np.ndarray  # X'S^2X
    xs3x: np.ndarray  # X'S^3X
    zs2x: np.ndarray  # Z'S^2X
    tr_s2: float  # tr(S^2)
    tr_e_zs2z: list[float]  # tr(E_r Z'S^2Z) per linear parameter


def _lambda(where: list[tuple[int, RandomBlock]], covs: list[np.ndarray]) -> sp.csr_matrix:
    """Lambda with Lambda Lambda' = blockdiag(I (x) T T'), from a PSD factor of T T'."""
    lam_blocks = []
    for (_off, b), V in zip(where, covs):
        w, U = np.linalg.eigh(V)
        F = U * np.sqrt(np.clip(w, 0.0, None))[None, :]
        lam_blocks.append(sp.kron(sp.identity(b.nlevels), sp.csr_matrix(F)))
    return sp.block_diag(lam_blocks, format="csr") if lam_blocks else sp.csr_matrix((0, 0))


def _linear_basis_matrices(where: list[tuple[int, RandomBlock]], q: int,
                           ) -> tuple[list[sp.csr_matrix], list[tuple[np.ndarray, sp.csr_matrix]]]:
    """Random linear parameters: E_r (q x q, sparse) per term and basis matrix, with its term's rows."""
    E, rows = [], []
    for off, b in where:
        for EE in _linear_basis(b.covariance, b.ncols):
            blk = sp.kron(sp.identity(b.nlevels), sp.csr_matrix(EE), format="csr")
            E.append(sp.block_diag([sp.csr_matrix((off, off)), blk, sp.csr_matrix((q - off - blk.shape[0],) * 2)],
                                   format="csr"))
            rows.append((np.arange(off, off + blk.shape[0]), blk))
    return E, rows


def _products(Z: sp.csr_matrix, X: np.ndarray, Lam: sp.csr_matrix, E: list[sp.csr_matrix]) -> _Products:
    """Every product with S through C = Lambda M^{-1} Lambda', M = I + Lambda' A Lambda (q x q)."""
    n, q = Z.shape
    A = (Z.T @ Z).toarray()
    Bz = Z.T @ X  # q x p
    XX = X.T @ X
    M = np.asarray(Lam.T @ np.asarray(Lam.T @ A).T)  # freed as soon as possible
    M[np.diag_indices(q)] += 1.0
    try:
        cho = cho_factor(M, lower=True, overwrite_a=True)
    except np.linalg.LinAlgError as exc:
        raise InferenceError(f"Kenward-Roger: {exc}") from exc
    Minv = cho_solve(cho, np.eye(q), overwrite_b=True)
    del M, cho
    C = np.asarray(Lam @ np.asarray(Lam @ Minv).T)  # Minv symmetric: (Lam Minv)' = Minv Lam'
    del Minv
    CA = C @ A
    a1 = A - A @ CA  # Z'SZ
    CBz = C @ Bz
    b1 = Bz - A @ CBz  # Z'SX
    x1 = XX - Bz.T @ CBz  # X'SX
    xs2x = XX - 2 * Bz.T @ CBz + CBz.T @ A @ CBz  # X'S^2X
    xs3x = xs2x - b1.T @ C @ b1  # X'S^3X
    zs2x = b1 - A @ (C @ b1)  # Z'S^2X = (I - AC) Z'SX
    tr_s2 = n - 2 * np.trace(CA) + float(np.sum(CA * CA.T))
    tr_e_zs2z = [_trace_zs2z(e, a1, CA) for e in E]
    return _Products(a1, b1, x1, xs2x, xs3x, zs2x, tr_s2, tr_e_zs2z)


def _derivatives(S: _Products, E: list[sp.csr_matrix], rows: list[tuple[np.ndarray, sp.csr_matrix]],
                 s2: float) -> tuple[list[np.ndarray], dict[tuple[int, int], np.ndarray], np.ndarray]:
    """pbkrtest's P_r, Q_rs and the trace terms K_rs of the expected information."""
    Kzz = S.a1
    Kzz /= s2  # Z'Sigma^-1 Z (a1 reused in place)
    Kzx = S.b1 / s2
    k = len(E) + 1
    R = [np.asarray(blk @ Kzz[idx]) for idx, blk in rows]  # the nonzero rows of E_r Z'Sigma^-1 Z
    EKzx = [np.asarray(e @ Kzx) for e in E]
    KEKzx = [Kzz @ x for x in EKzx]
    P = [-Kzx.T @ ekx for ekx in EKzx] + [-S.xs2x / s2 ** 2]
    Q: dict[tuple[int, int], np.ndarray] = {}
    Kt = np.zeros((k, k))
    r_ = len(E)
    for i in range(r_):
        for j in range(i, r_):
            Q[i, j] = EKzx[i].T @ KEKzx[j]
            Kt[i, j] = Kt[j, i] = float(np.sum(R[i][:, rows[j][0]] * R[j][:, rows[i][0]].T))
        Q[i, r_] = EKzx[i].T @ S.zs2x / s2 ** 2
        Kt[i, r_] = Kt[r_, i] = S.tr_e_zs2z[i] / s2 ** 2
    Q[r_, r_] = S.xs3x / s2 ** 3
    Kt[r_, r_] = S.tr_s2 / s2 ** 2
    return P, Q, Kt


def _adjusted(phi: np.ndarray, P: list[np.ndarray], Q: dict[tuple[int, int], np.ndarray],
              Kt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W (twice the inverse expected information) and the adjusted covariance phi + 2 phi U phi."""
    k = len(P)
    IE2 = np.zeros((k, k))
    for i in range(k):
        PhiPi = phi @ P[i]
        for j in range(i, k):
            IE2[i, j] = IE2[j, i] = Kt[i, j] - 2 * float(np.sum(phi * Q[i, j])) + float(np.sum(PhiPi * (P[j] @ phi)))
    ev = np.linalg.eigvalsh(IE2)
    W = 2 * (np.linalg.inv(IE2) if np.min(np.abs(ev)) > EIGEN_TOL else np.linalg.pinv(IE2))
    W = (W + W.T) / 2
    U = np.zeros_like(phi)
    for i in range(k - 1):
        for j in range(i + 1, k):
            U += W[i, j] * (Q[i, j] - P[i] @ phi @ P[j])
    U = U + U.T
    for i in range(k):
        U += W[i, i] * (Q[i, i] - P[i] @ phi @ P[i])
    return W, phi + 2 * phi @ U @ phi


def kenward_roger(state: LmmState) -> KenwardRoger:
    """pbkrtest's vcovAdj for a REML fit: the adjusted covariance and what Lb_ddf needs."""
    design = state.design
    if not state.reml:
        raise InferenceError("Kenward-Roger needs a REML fit")
    q = sum(b.nlevels * b.ncols for b in design.blocks)
    if q > MAX_RANDOM_EFFECTS:
        raise InferenceError(
            f"Kenward-Roger is not computed for {q:,} random effects (at most {MAX_RANDOM_EFFECTS:,}): "
            f"pbkrtest's dense {q:,} x {q:,} products would need ~{6 * 8 * q * q / 2**30:,.1f} GB; "
            "use inference: {df: satterthwaite}")
    sw = None if design.weights is None else np.sqrt(design.weights)
    X = design.X if sw is None else design.X * sw[:, None]
    Z, where = _z_matrix(state, sw)
    s2 = state.sigma ** 2
    covs = varpar.block_covariances(state.problem, state.theta, 1.0)  # T T' per term (lme4 order)
    E, rows = _linear_basis_matrices(where, Z.shape[1])
    S = _products(Z, X, _lambda(where, covs), E)
    phi = np.linalg.inv(S.x1 / s2)
    phi = (phi + phi.T) / 2
    P, Q, Kt = _derivatives(S, E, rows, s2)
    W, phi_adj = _adjusted(phi, P, Q, Kt)
    if not np.all(np.isfinite(phi_adj)):
        raise InferenceError("Kenward-Roger: the adjusted covariance is not finite")
    return KenwardRoger(phi=state.vcov, phi_adj=phi_adj, P=P, W=W)


def f_pvalue(F: float, q: int, df2: float) -> float:
    return float(f_sf(F, q, df2))
