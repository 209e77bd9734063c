"""MixedLM results -> mixspec's engine-agnostic `Fit`, in lme4's conventions.

statsmodels reports covariances in data units and per MixedLM parameter; lme4 (and
the native engine) report theta = relative Cholesky factor per term in lme4's
order, the REML criterion as objective, AIC/BIC from it even under REML (statsmodels
gives NaN), and VarCorr rows per group and term. This module does that mapping
from the `Plan` that said where each Design block went.
"""

from __future__ import annotations

import math

import numpy as np

from runner.design.model import Design, RandomBlock
from runner.engines.common import psd_cholesky
from runner.engines.statsmodels.translate import Plan
from runner.fit import FitArrays, RanefBlock

def block_covariances(plan: Plan, cov_re: np.ndarray, vcomp: np.ndarray, design: Design) -> list[np.ndarray]:
    """Each Design block's covariance matrix (data units) from cov_re and the variance components.

    Undoes the column scaling of the translation: Sigma = S cov_re S, variance = v / scale^2.
    """
    covs = [np.zeros((b.ncols, b.ncols)) for b in design.blocks]
    for r in plan.re_slots:
        sub = np.array(cov_re[r.start : r.stop, r.start : r.stop], dtype=float)
        covs[r.block] = sub / np.outer(r.scales, r.scales)
        if design.blocks[r.block].covariance == "diagonal":
            covs[r.block] = np.diag(np.diag(covs[r.block]))
    for j, s in enumerate(plan.vc_slots):
        v = float(vcomp[j]) / s.scale**2
        cols = list(s.cols)
        if s.kind == "cs_common":
            covs[s.block][np.ix_(cols, cols)] += v
        else:
            covs[s.block][cols, cols] += v
    return covs


def theta_of(block: RandomBlock, cov: np.ndarray, sigma: float) -> list[float]:
    """lme4-style theta of one block (relative covariance factor), as the native engine orders it.

    unstructured: lower Cholesky factor of cov / sigma^2 by column; diagonal: relative SDs;
    identity: the one relative SD; compound symmetry: (shared, own) with
    cov / sigma^2 = shared^2 J + own^2 I, as runner.covariance defines it.
    """
    p = block.ncols
    rel = cov / sigma**2 if sigma > 0 else cov * np.nan
    if block.covariance == "unstructured":
        low = psd_cholesky(rel)
        return [float(low[i, j]) for j in range(p) for i in range(j, p)]
    if block.covariance == "diagonal":
        return [float(math.sqrt(max(rel[i, i], 0.0))) for i in range(p)]
    if block.covariance == "identity":
        return [float(math.sqrt(max(rel[0, 0], 0.0)))]
    shared = float(rel[0, 1]) if p > 1 else 0.0
    return [math.sqrt(max(shared, 0.0)), math.sqrt(max(float(rel[0, 0]) - shared, 0.0))]


def arrays_from_group_vectors(
    design: Design, plan: Plan, beta: np.ndarray, vectors: list[np.ndarray], covs: list[np.ndarray], zmats: list
) -> FitArrays:
    """BLUPs, conditional SDs, fitted values and residuals from per-group statsmodels vectors.

    `vectors`/`covs` are on MixedLM's (scaled) columns `zmats`; the modes are unscaled here.
    """
    fitted = plan.exog @ beta
    ranef = [
        RanefBlock(
            id=b.id,
            group=b.group,
            columns=list(b.column_names),
            levels=list(b.levels),
            modes=np.full((b.nlevels, b.ncols), np.nan),
            cond_sd=np.full((b.nlevels, b.ncols), np.nan),
        )
        for b in design.blocks
    ]
    for g, rows in enumerate(plan.group_rows):
        fitted[rows] += np.asarray(zmats[g] @ vectors[g]).ravel()
        sc = plan.group_scales[g]
        vec, cov = vectors[g] / sc, covs[g] / np.outer(sc, sc)
        for c in plan.coefs[g]:
            pos = c.positions
            ranef[c.block].modes[c.level, c.col] = float(vec[pos].sum())
            ranef[c.block].cond_sd[c.level, c.col] = math.sqrt(max(float(cov[np.ix_(pos, pos)].sum()), 0.0))
    if design.offset is not None:
        fitted = fitted + design.offset
    return FitArrays(fitted=fitted, residuals=design.y - fitted, ranef=ranef)
