"""Relative covariance factor templates: theta -> T with T T' = Sigma / sigma^2.

One template per random term, repeated for every level (Lambda = I (x) T). The
criterion depends on T only through T T', so a template need not be triangular:
compound symmetry uses the symmetric square root of t1^2 J + t2^2 I, which is a
valid factor for every t1, t2 >= 0 (correlation t1^2 / (t1^2 + t2^2) >= 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from runner.covariance import Covariance, lower_triangle, nparams, sd_like, sdcor_names, theta_names


@lru_cache(maxsize=64)
def _tri(p: int) -> tuple[np.ndarray, np.ndarray]:
    """`Template.tri` per p, made once (the gradient and EM step read it per evaluation)."""
    pairs = lower_triangle(p)
    rows = np.asarray([i for i, _ in pairs], dtype=int)
    cols = np.asarray([j for _, j in pairs], dtype=int)
    rows.flags.writeable = False
    cols.flags.writeable = False
    return rows, cols


@dataclass(frozen=True)
class Template:
    """The covariance template of one random term with p columns."""

    covariance: Covariance
    p: int
    group: str  # lme4's group name, for theta names
    columns: tuple[str, ...]

    @property
    def ntheta(self) -> int:
        return nparams(self.covariance, self.p)

    def tri(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the lower triangle by column (lme4's order of theta)."""
        return _tri(self.p)

    def lower(self) -> np.ndarray:
        """Lower bounds: 0 for SD-like components, -inf for off-diagonal factor entries."""
        return np.where(sd_like(self.covariance, self.p), 0.0, -np.inf)

    def start(self) -> np.ndarray:
        """lme4's default start: 1 on template diagonals, 0 off."""
        if self.covariance == "unstructured":
            r, c = self.tri()
            return np.where(r == c, 1.0, 0.0)
        return np.ones(self.ntheta)  # compound symmetry: as lme4 starts (1|g) + (1|g:f)

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """T(theta), p x p."""
        p = self.p
        if p == 1 and self.covariance != "compound_symmetry":
            return np.array([[float(theta[0])]])
        if self.covariance == "unstructured":
            T = np.zeros((p, p))
            r, c = self.tri()
            T[r, c] = theta
            return T
        if self.covariance == "diagonal":
            return np.diag(np.asarray(theta, dtype=float))
        if self.covariance == "identity":
            return float(theta[0]) * np.eye(p)
        t1, t2 = float(theta[0]), float(theta[1])
        # (t2 I + c J)^2 = t2^2 I + (2 t2 c + p c^2) J, so choose c with 2 t2 c + p c^2 = t1^2
        c = (np.hypot(t2, np.sqrt(p) * t1) - abs(t2)) / p
        return abs(t2) * np.eye(p) + c * np.ones((p, p))

    def names(self) -> list[str]:
        """theta names as lme4's getME(m, "theta")."""
        return theta_names(self.covariance, self.group, self.columns)

    def sdcor_names(self) -> list[str]:
        """The term's parameters on lme4's sigma scale (sd_..., cor_...)."""
        return sdcor_names(self.covariance, self.group, self.columns)
