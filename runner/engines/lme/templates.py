"""Relative covariance factor templates: theta -> T with T T' = Sigma / sigma^2.

One template per random term, repeated for every level (Lambda = I (x) T). The
criterion depends on T only through T T', so a template need not be triangular:
compound symmetry uses the symmetric square root of t1^2 J + t2^2 I, which is a
valid factor for every t1, t2 >= 0 (correlation t1^2 / (t1^2 + t2^2) >= 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runner.formula.model import Covariance


@dataclass(frozen=True)
class Template:
    """The covariance template of one random term with p columns."""

    covariance: Covariance
    p: int
    group: str  # lme4's group name, for theta names
    columns: tuple[str, ...]

    @property
    def ntheta(self) -> int:
        if self.covariance == "unstructured":
            return self.p * (self.p + 1) // 2
        if self.covariance == "diagonal":
            return self.p
        if self.covariance == "identity":
            return 1
        return 2  # compound_symmetry

    def _tri(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower-triangle indices by column, lme4's order of theta within a term."""
        rows, cols = [], []
        for j in range(self.p):
            for i in range(j, self.p):
                rows.append(i)
                cols.append(j)
        return np.asarray(rows), np.asarray(cols)

    def lower(self) -> np.ndarray:
        """Lower bounds: 0 for SD-like components, -inf for off-diagonal factor entries."""
        if self.covariance == "unstructured":
            r, c = self._tri()
            return np.where(r == c, 0.0, -np.inf)
        return np.zeros(self.ntheta)

    def start(self) -> np.ndarray:
        """lme4's default start: 1 on template diagonals, 0 off."""
        if self.covariance == "unstructured":
            r, c = self._tri()
            return np.where(r == c, 1.0, 0.0)
        return np.ones(self.ntheta)  # compound symmetry: as lme4 starts (1|g) + (1|g:f)

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """T(theta), p x p."""
        p = self.p
        if p == 1 and self.covariance != "compound_symmetry":
            return np.array([[float(theta[0])]])
        if self.covariance == "unstructured":
            T = np.zeros((p, p))
            r, c = self._tri()
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
        """theta names as lme4's getME(m, "theta"): group.col, group.col_i.col_j."""
        g, cols = self.group, self.columns
        if self.covariance == "unstructured":
            r, c = self._tri()
            return [f"{g}.{cols[i]}" if i == j else f"{g}.{cols[i]}.{cols[j]}" for i, j in zip(r, c)]
        if self.covariance == "diagonal":
            return [f"{g}.{c}" for c in cols]
        if self.covariance == "identity":
            return [f"{g}.identity"]
        return [f"{g}.cs_shared", f"{g}.cs_own"]
