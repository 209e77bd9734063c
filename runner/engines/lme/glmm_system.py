"""The penalized weighted least-squares system of one PIRLS step, factored blockwise.

    [Lambda'Z'WZLambda + I, Lambda'Z'WX; X'WZLambda, X'WX]

The first term (most columns) is block diagonal by level and eliminated level by level;
the rest (other terms and, in glmer's first stage, X) is one dense Cholesky. The weighted
Gram blocks come from bincounts on precomputed level-pair indices (no sparse matrices are
built per iteration: their construction cost dominated small fits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from runner.engines.lme.glmm_model import GlmmModel, PirlsError, block_cols, levels


@dataclass
class Decomposition:
    """The blocked Cholesky of [Lambda'Z'WZLambda + I, .; X'WZLambda, X'WX] at one W."""

    L1: np.ndarray  # (l1, p1, p1) lower factors of the first block
    L1inv: np.ndarray
    Bs: np.ndarray  # (tail, q1) dense: B L1^{-T}
    Ls: np.ndarray  # lower factor of the tail Schur complement (random tail, then X)
    logdet: float  # log |L|^2 of the random part
    qr: int  # random tail size

    def solve(self, r: np.ndarray) -> np.ndarray:
        """x with M x = r (r from `rhs`): [u (internal order); beta]."""
        q1 = self.Bs.shape[1]
        r1, rt = r[:q1], r[q1:]
        p1 = self.L1.shape[1]
        if p1 == 1:
            y1 = r1 / self.L1[:, 0, 0]
        else:
            y1 = np.einsum("cab,cb->ca", self.L1inv, r1.reshape(-1, p1)).ravel()
        if self.Ls.shape[0]:
            yt, _ = lapack.dtrtrs(self.Ls, rt - self.Bs @ y1, lower=1)
            xt, _ = lapack.dtrtrs(self.Ls, yt, lower=1, trans=1)
            y1 = y1 - self.Bs.T @ xt
        else:
            xt = np.zeros(0)
        if p1 == 1:
            x1 = y1 / self.L1[:, 0, 0]
        else:
            x1 = np.einsum("cba,cb->ca", self.L1inv, y1.reshape(-1, p1)).ravel()
        return np.concatenate([x1, xt])


def _cross(model: GlmmModel, a: int, b: int, va: np.ndarray, zb: np.ndarray) -> np.ndarray:
    """Dense (q_a x q_b) sum over rows of va zb' placed by (level_a, level_b), level-major."""
    la, lb = levels(model, a), levels(model, b)
    pa, pb = va.shape[1], zb.shape[1]
    idx = model.pair_index(a, b)
    out = np.empty((la, pa, lb, pb))
    for i in range(pa):
        for j in range(pb):
            out[:, i, :, j] = np.bincount(idx, weights=va[:, i] * zb[:, j], minlength=la * lb).reshape(la, lb)
    return out.reshape(la * pa, lb * pb)


def _level_sums(model: GlmmModel, pos: int, v: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(q_pos x m): per level and column i of the block, sum of v_i M over its rows."""
    l = levels(model, pos)
    if v.shape[1] * M.shape[1] <= 8:  # a few bincounts beat a sparse product's overhead
        codes = model.codes[pos]
        out = np.empty((l, v.shape[1], M.shape[1]))
        for i in range(v.shape[1]):
            for j in range(M.shape[1]):
                out[:, i, j] = np.bincount(codes, weights=v[:, i] * M[:, j], minlength=l)
        return out.reshape(l * v.shape[1], -1)
    G = model.indicator(pos)
    return np.stack([G @ (M * v[:, i:i + 1]) for i in range(v.shape[1])], axis=1).reshape(l * v.shape[1], -1)


def rhs(model: GlmmModel, zl: np.ndarray, w: np.ndarray, z: np.ndarray, with_x: bool) -> np.ndarray:
    """[Lambda'Z'W z; X'W z] in the internal column order."""
    wz = (w * z)[:, None]
    parts = [_level_sums(model, pos, zl[:, sl], wz).ravel() for pos, sl in enumerate(block_cols(model))]
    if with_x:
        parts.append(model.X.T @ wz[:, 0])
    return np.concatenate(parts)


def _first_gram(model: GlmmModel, zl: np.ndarray, V: np.ndarray) -> np.ndarray:
    """(l1, p1, p1): the first term's per-level blocks of Lambda'Z'WZLambda + I (V = W Z Lambda)."""
    p1, l1 = model.p1, model.l1
    first = block_cols(model)[0]
    V1, Z1 = V[:, first], zl[:, first]
    codes1 = model.codes[0]
    D = np.empty((l1, p1, p1))
    for a in range(p1):
        for b in range(a, p1):
            sv = np.bincount(codes1, weights=V1[:, a] * Z1[:, b], minlength=l1)
            D[:, a, b] = sv
            D[:, b, a] = sv
    D += np.eye(p1)
    return D


def _tail_gram(model: GlmmModel, zl: np.ndarray, V: np.ndarray, w: np.ndarray, with_x: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    """(B, C): the tail's (other terms, then X if with_x) blocks against the first term, and
    among themselves (the identity not yet added)."""
    q1 = model.q1
    cols = block_cols(model)
    Z1 = zl[:, cols[0]]
    qr = model.q - q1
    nb = len(cols)
    xp = model.p if with_x else 0
    nt = qr + xp
    B = np.empty((nt, q1))
    C = np.zeros((nt, nt))
    offs = [model.col_start[pos] - q1 for pos in range(nb)]
    for a in range(1, nb):
        va, za = V[:, cols[a]], zl[:, cols[a]]
        qa = levels(model, a) * za.shape[1]
        ra = slice(offs[a], offs[a] + qa)
        B[ra] = _cross(model, a, 0, va, Z1)
        for b in range(1, a + 1):
            rb = slice(offs[b], offs[b] + levels(model, b) * zl[:, cols[b]].shape[1])
            blk = _cross(model, a, b, va, zl[:, cols[b]])
            C[ra, rb] = blk
            C[rb, ra] = blk.T
        if xp:
            xa = _level_sums(model, a, va, model.X)
            C[qr:, ra] = xa.T
            C[ra, qr:] = xa
    if xp:
        Xw = model.X * w[:, None]
        B[qr:] = _level_sums(model, 0, V[:, cols[0]], model.X).T
        C[qr:, qr:] = Xw.T @ model.X
    return B, C


def decompose(model: GlmmModel, zl: np.ndarray, w: np.ndarray, with_x: bool) -> Decomposition:
    """The blocked factor of the penalized weighted system at working weights w.

    Dense blocks by bincount on precomputed level-pair indices (no sparse matrices are
    built per iteration: their construction cost dominated small fits)."""
    p1, l1, q1 = model.p1, model.l1, model.q1
    V = zl * w[:, None]
    D = _first_gram(model, zl, V)
    qr = model.q - q1
    B, C = _tail_gram(model, zl, V, w, with_x)
    nt = C.shape[0]
    if p1 == 1:
        d = D[:, 0, 0]
        L1 = np.sqrt(d)[:, None, None]
        L1inv = 1.0 / L1
        logdet = float(np.sum(np.log(d)))
        Bs = B / L1[:, 0, 0][None, :]
    else:
        L1 = np.linalg.cholesky(D)
        L1inv = np.linalg.inv(L1)
        logdet = 2.0 * float(np.sum(np.log(np.diagonal(L1, axis1=1, axis2=2))))
        # B L1^{-T}: per level c, columns c*p1..: B_c @ L1inv_c^T
        Bs = np.einsum("tca,cba->tcb", B.reshape(nt, l1, p1), L1inv).reshape(nt, q1)
    if nt:
        C[np.arange(qr), np.arange(qr)] += 1.0
        C -= Bs @ Bs.T
        Ls, info = lapack.dpotrf(C, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise PirlsError("the penalized weighted system is not positive definite")
        dg = np.diagonal(Ls)
        if not np.all(dg > 0) or not np.all(np.isfinite(dg)):
            raise PirlsError("the penalized weighted system is not positive definite")
        logdet += 2.0 * float(np.sum(np.log(dg[:qr])))
    else:
        Ls = np.zeros((0, 0))
    return Decomposition(L1=L1, L1inv=L1inv, Bs=Bs, Ls=Ls, logdet=logdet, qr=qr)
