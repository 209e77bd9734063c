"""Post-fit numbers in lme4's conventions at one theta -> the engine-agnostic Fit's parts.

`estimates_at` is what the engine computes at its optimum; the cache's re-check and the
API's what-if recompute the same at a stored or given theta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runner.design.model import Design
from runner.engines.common import one_blas_thread, varcorr_rows, wald_rows
from runner.engines.lme.criterion import KeptPoint, Method, objective_from
from runner.engines.lme.dense import dense_factorize, dense_solution, use_dense
from runner.engines.lme.factor import factorize, raw_factors
from runner.engines.lme.solve import Solution, solve
from runner.engines.lme.structure import Problem
from runner.fit import FitArrays, FixedEffect, RanefBlock, RandomEffect


@dataclass
class Estimates:
    """The fit's numbers at one theta (lme4's term order)."""

    objective: float
    sigma2: float
    solution: Solution
    fixed_effects: list[FixedEffect]
    random_effects: list[RandomEffect]
    arrays: FitArrays


@dataclass
class Precomputed:
    """The criterion and the solution at the optimum from the optimizer's last factor."""

    theta: np.ndarray
    objective: float
    r2: float
    solution: Solution


def precompute_at(problem: Problem, kept: KeptPoint, method: Method) -> Precomputed:
    """`estimates_at`'s numerical part from a factor the criterion kept (criterion.KeptPoint: its
    theta is lme4's, no term whitened), so the optimum is not factored and inverted again."""
    f = kept.factor
    sol = solve(problem, f, raw_factors(problem, kept.theta), kept.modes, kept.blocks)
    return Precomputed(theta=kept.theta, objective=float(objective_from(problem, f, method)), r2=f.r2, solution=sol)


def estimates_at(design: Design, problem: Problem, theta: np.ndarray, method: Method,
                 precomputed: Precomputed | None = None) -> Estimates:
    """beta, sigma, variance components, modes and conditional SDs at theta (raises
    factor.FactorError where the factorization fails); `precomputed` at the same theta
    (`precompute_at`) spares the factorization."""
    with one_blas_thread(), np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        raw = raw_factors(problem, theta)
        if precomputed is not None and np.array_equal(precomputed.theta, theta):
            objective, r2, sol = precomputed.objective, precomputed.r2, precomputed.solution
        elif use_dense(problem):  # the same numbers from the small model's dense factor
            fd = dense_factorize(problem, theta)
            objective, r2 = float(objective_from(problem, fd, method)), fd.r2
            sol = dense_solution(problem, fd, raw)
        else:
            f = factorize(problem, theta)
            objective, r2 = float(objective_from(problem, f, method)), f.r2
            sol = solve(problem, f, raw)
    s2 = sigma2(problem, r2, method)
    lme4 = np.argsort([t.index for t in problem.terms])  # internal position of each lme4 term
    return Estimates(
        objective=objective, sigma2=s2, solution=sol, fixed_effects=fixed_effects(design, sol, s2),
        random_effects=variance_components(design, [raw[i] for i in lme4], s2),
        arrays=arrays(design, [sol.modes[i] for i in lme4], [sol.cond_var[i] for i in lme4], sol.beta, s2))


def sigma2(problem: Problem, r2: float, method: Method) -> float:
    return r2 / (problem.n if method == "ML" else problem.n - problem.p)


def fixed_effects(design: Design, sol: Solution, s2: float) -> list[FixedEffect]:
    return wald_rows(design, sol.beta, np.sqrt(np.diag(sol.vcov_unscaled) * s2))


def variance_components(design: Design, factors_lme4: list[np.ndarray], s2: float) -> list[RandomEffect]:
    """lme4's VarCorr layout: per term the variances, then covariance pairs (i < j); the residual."""
    rows = [row for block, T in zip(design.blocks, factors_lme4) for row in varcorr_rows(block, s2 * (T @ T.T))]
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
