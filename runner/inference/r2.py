"""Nakagawa's R2 and the ICC as performance 0.10.2 (through insight) computes them.

sigma2_fixed = var(X beta) (n - 1 denominator); sigma2_random = sum over random terms of
mean_i x_i' Sigma_k x_i, x_i the rows of the fixed-effects model matrix restricted to the
columns named like the term's random columns (Johnson 2014; random columns absent from
X are dropped, and an intercept column is added when X has none); sigma2_eps = sigma^2.
insight selects the terms as `vc[group names]`: a second term on the same grouping
factor (lme4's `Subject.1`, as `(Days || Subject)` makes) is not counted; so here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runner.design.model import Design


@dataclass
class VarianceShares:
    fixed: float
    random: float
    residual: float

    @property
    def r2_marginal(self) -> float:
        return self.fixed / (self.fixed + self.random + self.residual)

    @property
    def r2_conditional(self) -> float:
        return (self.fixed + self.random) / (self.fixed + self.random + self.residual)

    @property
    def icc_adjusted(self) -> float:
        return self.random / (self.random + self.residual)

    @property
    def icc_unadjusted(self) -> float:
        return self.random / (self.fixed + self.random + self.residual)


def variance_shares(design: Design, beta: np.ndarray, covariances: list[np.ndarray], sigma: float
                    ) -> VarianceShares:
    """`covariances`: Sigma_k (variance scale, sigma^2 T T') per random block, lme4 order."""
    X = design.X
    eta = X @ beta
    fixed = float(np.var(eta, ddof=1)) if eta.size > 1 else 0.0
    names = [c.lme4_name for c in design.fixed]
    if "(Intercept)" not in names:
        X = np.column_stack([np.ones(X.shape[0]), X])
        names = ["(Intercept)", *names]
    random = 0.0
    for block, S in zip(design.blocks, covariances):
        if block.id != block.group:  # insight's vc[group names] skips "Subject.1"
            continue
        keep = [a for a, c in enumerate(block.column_names) if c in names]
        if not keep:
            continue
        Z = X[:, [names.index(block.column_names[a]) for a in keep]]
        Sk = S[np.ix_(keep, keep)]
        random += float(np.einsum("na,ab,nb->", Z, Sk, Z) / X.shape[0])
    return VarianceShares(fixed=fixed, random=random, residual=sigma * sigma)
