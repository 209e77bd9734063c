"""The native `lme` engine: lme4's criterion with a blocked Cholesky, on numpy/scipy.

design -> structure.build_problem (the Gram blocks, once) -> optimize.find_optimum (the
strategy and lme4's convergence check) -> results.estimates_at (beta, variance
components, modes at the optimum) -> Fit.
"""

from __future__ import annotations

import time

import numpy as np

from runner.design.model import Design
from runner.engines.common import (design_warnings, few_levels_warning, information_criteria, ngroups,
                                   one_blas_thread, singular_warning, blas_threads)
from runner.engines.lme.convergence import ConvergenceCheck, is_singular
from runner.engines.lme.criterion import Method
from runner.engines.lme.factor import FactorError
from runner.engines.lme.optimize import find_optimum
from runner.engines.lme.results import estimates_at
from runner.engines.lme.structure import Problem, build_problem, hand_over
from runner.fit import Convergence, Fit, FitWarning


class LmeFitError(RuntimeError):
    """A numerical failure at the optimum (raised as EngineError by the dispatcher)."""


def fit_warnings(design: Design, singular: bool, check: ConvergenceCheck) -> list[FitWarning]:
    """The design's warnings, then singular fit, failed convergence check, few levels."""
    out = design_warnings(design)
    if singular:
        out.append(singular_warning())
    if not check.ok:
        out.append(FitWarning(code="convergence", message=check.message))
    return out + few_levels_warning(design)


def theta_names(problem: Problem) -> list[str]:
    return [name for t in problem.lme4_terms for name in t.template.names()]


class LmeEngine:
    """Engine protocol implementation: `fit(design, method, formula_text) -> Fit`."""

    name = "lme"

    def fit(self, design: Design, method: Method, formula_text: str = "") -> Fit:
        t0 = time.perf_counter()
        # trial points with overflow are rejected by the criterion (a large finite value);
        # numpy's floating-point warnings about them would only be noise on stderr
        hand_over(design, None)  # free a problem kept from an earlier fit before building this one
        with one_blas_thread(), np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            problem = build_problem(design)
        with blas_threads(problem.nt - problem.dense_start), \
                np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            opt, check = find_optimum(problem, method)
        try:
            est = estimates_at(design, problem, opt.theta, method, opt.precomputed)
        except (FactorError, np.linalg.LinAlgError) as exc:
            raise LmeFitError(f"the factorization failed at the optimum: {exc}") from exc
        theta = opt.theta
        singular = is_singular(theta, problem.lower)
        npar = problem.p + theta.size + 1
        aic, bic = information_criteria(est.objective, npar, problem.n)
        converged = opt.success and check.ok
        hand_over(design, problem)  # the inference step of this fit starts from it
        sigma = float(np.sqrt(est.sigma2))
        est.arrays.vcov_unscaled, est.arrays.theta = est.solution.vcov_unscaled, theta.copy()  # for inference
        return Fit(
            engine="lme", method=method, formula=formula_text, nobs=problem.n, npar=npar, ngroups=ngroups(design),
            theta=[float(t) for t in theta], theta_names=theta_names(problem), sigma=sigma,
            loglik=-est.objective / 2, objective=est.objective, aic=aic, bic=bic,
            p_method="wald-z", ci_method="wald",
            fixed_effects=est.fixed_effects, random_effects=est.random_effects,
            converged=converged, singular=singular,
            convergence=Convergence(converged=converged, optimizer=opt.label,
                                    message=check.message or opt.message, evaluations=opt.evaluations,
                                    max_abs_gradient=check.max_abs_gradient,
                                    hessian_min_eigenvalue=check.hessian_min_eigenvalue),
            warnings=fit_warnings(design, singular, check),
            fit_seconds=time.perf_counter() - t0,
            arrays=est.arrays)
