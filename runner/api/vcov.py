"""vcov() of the fixed effects: sigma^2 (R_X' R_X)^-1 at the fit's theta.

The lme engine's Fit keeps standard errors only; the matrix is recomputed from theta by
the engine's own factorization and solve (one criterion evaluation, as the cache's
re-check does). Other engines: generalized least squares with V = Z Sigma Z' + sigma^2 W^-1.
"""

from __future__ import annotations

import numpy as np

from runner.api.context import ModelContext, block_covariance
from runner.fit import Fit

DENSE_MAX_ROWS = 5000


def _lme_vcov(ctx: ModelContext, fit: Fit) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    from runner.engines.lme.factor import factorize, raw_factors
    from runner.engines.lme.solve import solve
    from runner.engines.lme.structure import build_problem

    with threadpool_limits(limits=1), np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        problem = build_problem(ctx.design)
        theta = np.asarray(fit.theta, dtype=float)
        f = factorize(problem, theta)
        sol = solve(problem, f, raw_factors(problem, theta))
    return sol.vcov_unscaled * fit.sigma ** 2


def _dense_vcov(ctx: ModelContext, fit: Fit) -> np.ndarray:
    d = ctx.design
    if d.nobs > DENSE_MAX_ROWS:
        raise ValueError(f"vcov() of a {fit.engine} fit is computed densely, up to {DENSE_MAX_ROWS} rows; "
                         "refit with engine='lme'")
    V = np.diag(fit.sigma ** 2 / (d.weights if d.weights is not None else np.ones(d.nobs)))
    for block in d.blocks:
        S = block_covariance(fit, block)
        Zc = np.zeros((d.nobs, block.nlevels * block.ncols))
        for a in range(block.ncols):
            Zc[np.arange(d.nobs), block.codes * block.ncols + a] = block.X[:, a]
        V += Zc @ np.kron(np.eye(block.nlevels), S) @ Zc.T
    Vi_X = np.linalg.solve(V, d.X)
    return np.linalg.inv(d.X.T @ Vi_X)


def fixed_vcov(ctx: ModelContext, fit: Fit) -> np.ndarray:
    """sigma^2 (X' V^-1 X)^-1 as lme4's vcov()."""
    return _lme_vcov(ctx, fit) if fit.engine == "lme" else _dense_vcov(ctx, fit)


def at_theta(ctx: ModelContext, fit: Fit, theta: np.ndarray) -> Fit:
    """The fit's numbers recomputed at another theta (lme engine): beta, sigma, variance
    components, conditional modes and SDs, as the engine computes them at its optimum.

    For checks against lme4 at lme4's own theta (the API's arithmetic, free of where two
    optimizers stop on a flat criterion) and for what-if questions.
    """
    from runner.engines.common import information_criteria, one_blas_thread
    from runner.engines.lme.results import estimates_at
    from runner.engines.lme.structure import build_problem

    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    with one_blas_thread():
        problem = build_problem(ctx.design)
    est = estimates_at(ctx.design, problem, theta, fit.method)
    aic, bic = information_criteria(est.objective, fit.npar, fit.nobs)
    return fit.model_copy(update=dict(
        theta=[float(t) for t in theta], sigma=float(np.sqrt(est.sigma2)), objective=est.objective,
        loglik=-est.objective / 2, aic=aic, bic=bic, fixed_effects=est.fixed_effects,
        random_effects=est.random_effects, arrays=est.arrays))
