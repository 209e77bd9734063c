"""One random-effects term as the engine works with it (MixedModels.jl's `ReMat`).

A term is its covariance template T (repeated for every level: Lambda_i = I (x) T_i), its
levels and columns, its slice of theta, and, for an unstructured term with several
columns, the whitening of its columns (`whiten`). The problem (structure.py) holds the
terms largest first and the Gram blocks between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runner.design.model import RandomBlock
from runner.engines.lme.templates import Template


@dataclass
class ReTerm:
    index: int  # position in lme4's order (Design.blocks, theta)
    template: Template
    levels: int
    theta: slice  # this term's entries of theta (lme4 order)
    # whitened columns X R^{-1} (`whiten`): R, and its inverse (lme4's factor is R^{-1} T(phi))
    basis: np.ndarray | None = None
    precond: np.ndarray | None = None
    tail_start: int = 0  # first row of the term in the tail (terms after the first)

    @property
    def p(self) -> int:
        return self.template.p

    @property
    def q(self) -> int:
        """Columns of Z_i: levels x p."""
        return self.levels * self.template.p

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """lme4's T_i(theta) on the term's own columns."""
        return self.template.factor(theta[self.theta])

    def working_factor(self, theta: np.ndarray, whitened: bool) -> np.ndarray:
        """The factor on the problem's (possibly whitened) columns X R^{-1}: with `whitened`,
        theta is the optimizer's phi and the factor is T(phi); otherwise it is lme4's theta
        and the factor R T(theta) (not triangular: only T T' matters)."""
        T = self.factor(theta)
        return T if whitened or self.basis is None else self.basis @ T

    def phi_to_theta(self, phi: np.ndarray, out: np.ndarray) -> None:
        """Write lme4's theta of this term into `out`: the lower factor of R^{-1} T(phi)."""
        if self.precond is not None:
            r, c = self.template.tri()
            out[self.theta] = _lower_factor(self.precond @ self.factor(phi))[r, c]

    def theta_to_phi(self, theta: np.ndarray, out: np.ndarray) -> None:
        """Write the optimizer's phi of this term into `out`: the lower factor of R T(theta)."""
        if self.precond is not None:
            r, c = self.template.tri()
            out[self.theta] = _lower_factor(np.linalg.solve(self.precond, self.factor(theta)))[r, c]

    def degenerate_pivots(self, phi: np.ndarray, tol: float) -> list[int]:
        """Indices into theta of this term's Cholesky pivots below tol, the last one excepted
        (an unstructured term only: a zero pivot there confines its column to the span of the
        ones before it, a face the optimizer can stop on)."""
        if self.template.covariance != "unstructured" or self.p < 2:
            return []
        r, c = self.template.tri()
        pivots = np.flatnonzero(r == c)[:-1] + self.theta.start
        return [int(i) for i in pivots if phi[i] < tol]


def _lower_factor(M: np.ndarray) -> np.ndarray:
    """Lower-triangular L with non-negative diagonal and L L' = M M' (QR of M')."""
    L = np.asarray(np.linalg.qr(M.T, mode="r")).T
    signs = np.where(np.diagonal(L) < 0, -1.0, 1.0)
    return L * signs[None, :]


def whiten(block: RandomBlock, template: Template, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(X R^{-1}, R) for an unstructured term with p > 1, where sqrt(W) X = Q R sqrt(n).

    The engine works in this basis: the term's columns are replaced by X R^{-1}
    (orthonormal: an intercept and an uncentred slope such as a calendar year are no longer
    nearly collinear) and its template T acts on them. The model is unchanged (an
    unstructured covariance is closed under b -> R b; lme4's factor is R^{-1} T), but the
    Gram matrices are formed from well-conditioned columns and the optimizer's parameters
    are whitened. QR, not a Cholesky of X'X, so conditioning up to 1e12 is harmless. None
    when not applicable.
    """
    if template.covariance != "unstructured" or template.p < 2:
        return None
    sw = None if w is None else np.sqrt(w)
    Xs = block.X if sw is None else block.X * sw[:, None]
    Q, R = np.linalg.qr(Xs)
    signs = np.where(np.diagonal(R) < 0, -1.0, 1.0)
    Q, R = Q * signs[None, :], R * signs[:, None]
    if not (np.all(np.isfinite(R)) and np.all(np.diagonal(R) > 0)) or np.linalg.cond(R) > 1e12:
        return None
    scale = np.sqrt(Xs.shape[0])
    Xt = Q * scale if sw is None else (Q * scale) / sw[:, None]
    return np.ascontiguousarray(Xt), R / scale
