"""Post-fit numbers in lme4's conventions -> the engine-agnostic Fit."""

from __future__ import annotations

import numpy as np
from runner.distributions import norm_ppf, norm_sf

from runner.design.model import Design
from runner.engines.lme.criterion import Method
from runner.engines.lme.solve import Solution
from runner.engines.lme.structure import Problem
from runner.fit import FitArrays, FixedEffect, RanefBlock, RandomEffect

Z975 = float(norm_ppf(0.975))


def sigma2(problem: Problem, r2: float, method: Method) -> float:
    return r2 / (problem.n if method == "ML" else problem.n - problem.p)


def fixed_effects(design: Design, sol: Solution, s2: float) -> list[FixedEffect]:
    se = np.sqrt(np.diag(sol.vcov_unscaled) * s2)
    out = []
    for col, est, sd in zip(design.fixed, sol.beta, se):
        z = float(est / sd) if sd > 0 else None
        out.append(FixedEffect(
            term=col.term, lme4_name=col.lme4_name, variable=col.variable, level=col.level,
            estimate=float(est), std_error=float(sd), statistic=z,
            p_value=None if z is None else float(2 * norm_sf(abs(z))),
            ci_low=float(est - Z975 * sd), ci_high=float(est + Z975 * sd)))
    return out


def variance_components(design: Design, factors_lme4: list[np.ndarray], s2: float) -> list[RandomEffect]:
    """lme4's VarCorr layout: per term the variances, then covariance pairs (i < j)."""
    rows: list[RandomEffect] = []
    for block, T in zip(design.blocks, factors_lme4):
        V = s2 * (T @ T.T)
        sd = np.sqrt(np.clip(np.diag(V), 0.0, None))
        names = block.column_names
        for a, name in enumerate(names):
            rows.append(RandomEffect(id=block.id, group=block.group, term=name,
                                     variance=float(V[a, a]), sd=float(sd[a])))
        if block.covariance in ("unstructured", "compound_symmetry"):
            for a in range(len(names)):
                for b in range(a + 1, len(names)):
                    corr = float(V[a, b] / (sd[a] * sd[b])) if sd[a] > 0 and sd[b] > 0 else float("nan")
                    rows.append(RandomEffect(id=block.id, group=block.group, term=names[a],
                                             term2=names[b], covariance=float(V[a, b]),
                                             corr=None if np.isnan(corr) else corr))
    rows.append(RandomEffect(id="Residual", group="Residual", term="", variance=s2, sd=float(np.sqrt(s2))))
    return rows


def arrays(design: Design, sol_modes: list[np.ndarray], sol_var: list[np.ndarray], beta: np.ndarray,
           s2: float) -> FitArrays:
    """Fitted values, residuals and per-level BLUPs with conditional SDs (lme4 block order)."""
    fitted = design.X @ beta
    if design.offset is not None:
        fitted = fitted + design.offset
    ranef = []
    for block, b, v in zip(design.blocks, sol_modes, sol_var):
        fitted = fitted + np.einsum("na,na->n", block.X, b[block.codes])
        ranef.append(RanefBlock(id=block.id, group=block.group, columns=list(block.column_names),
                                levels=list(block.levels), modes=b,
                                cond_sd=np.sqrt(np.clip(v * s2, 0.0, None))))
    return FitArrays(fitted=fitted, residuals=design.y - fitted, ranef=ranef)
