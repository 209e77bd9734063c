"""Re-check a cached lme fit on this run's data before it is reused.

Why: `.mixspec-cache/` is restored from CI caches, so its content is untrusted. An
entry is data (JSON), and its numbers are accepted only if one criterion evaluation at
its theta on this run's design reproduces its objective to 1e-10 (relative). The
derived numbers (beta, standard errors, variance components, sigma, logLik, AIC/BIC,
fitted values, residuals, BLUPs) are then recomputed from theta exactly as the engine
computes them at its optimum, and must agree with the entry: a forged estimate is
detected, and the arrays never need to be stored.

A fit marked converged is re-checked with lme4's gradient check at its theta (2k + k(k-1)
evaluations for k parameters); the optimizer's own report (evaluations, max|grad|, message)
is taken from the entry.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from runner.design.model import Design
from runner.fit import Fit
from runner.vocab import Method

OBJECTIVE_RTOL = 1e-10
DERIVED_RTOL = 1e-8


class CacheMismatch(ValueError):
    """The entry does not describe a fit of this design (stale, damaged or forged)."""


def _close(a: Any, b: Any, rtol: float = DERIVED_RTOL) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))


def _compare_models(label: str, cached: list[Any], fresh: list[Any]) -> None:
    """Field by field: text fields equal, number fields close."""
    if len(cached) != len(fresh):
        raise CacheMismatch(f"{label}: {len(cached)} rows cached, {len(fresh)} recomputed")
    for c, f in zip(cached, fresh):
        for name, value in f.model_dump().items():
            old = getattr(c, name)
            if isinstance(value, float) or isinstance(old, float):
                if not _close(old, value):
                    raise CacheMismatch(f"{label} {name} {old!r} differs from {value!r} recomputed")
            elif old != value:
                raise CacheMismatch(f"{label} {name} {old!r} differs from {value!r} recomputed")


ENGINE_WARNINGS = ("scale_x", "rank_deficient", "design", "singular", "convergence", "few_levels")


def _confirm_convergence(problem: Any, method: Method, theta: np.ndarray, singular: bool) -> None:
    """lme4's gradient check at the entry's theta, as the engine ran it (a singular fit's
    failed check is accepted there too): "converged" cannot be forged. It costs 2k + k(k-1)
    criterion evaluations for k parameters, a fraction of a fit's."""
    from threadpoolctl import threadpool_limits

    from runner.engines.lme.convergence import check_convergence
    from runner.engines.lme.criterion import Criterion
    from runner.engines.lme.factor import theta_to_phi

    with threadpool_limits(limits=1), np.errstate(over="ignore", invalid="ignore", divide="ignore",
                                                  under="ignore"):
        crit = Criterion(problem, method, whitened=True)  # the parameters the engine checks in
        phi = theta_to_phi(problem, theta)
        check = check_convergence(crit, phi, crit(phi), problem.lower, singular)
    if not check.ok and not singular:
        raise CacheMismatch(f"marked converged, but lme4's convergence check fails at its theta ({check.message})")


def _estimate(row: Any) -> Any:
    """The part of a fixed-effect row no inference method changes."""
    return row.model_copy(update={"std_error": None, "statistic": None, "df": None, "p_value": None,
                                  "ci_low": None, "ci_high": None})


def derive(design: Design, fit: Fit) -> tuple[dict[str, Any], Any, Any, np.ndarray]:
    """What the engine computes from theta at its optimum (runner/engines/lme/engine.py):
    the Fit fields, the arrays, the problem and theta. Raises CacheMismatch when the
    entry's theta cannot be a parameter of this design or its objective is not reproduced."""
    from threadpoolctl import threadpool_limits

    from runner.engines.common import information_criteria, ngroups
    from runner.engines.lme.convergence import ConvergenceCheck, is_singular
    from runner.engines.lme.criterion import FAILED, Criterion
    from runner.engines.lme.engine import fit_warnings, theta_names
    from runner.engines.lme.results import estimates_at
    from runner.engines.lme.structure import build_problem

    if fit.engine != "lme" or getattr(fit, "family", None) not in (None, "gaussian"):
        raise CacheMismatch("only linear mixed models of the lme engine are reused")
    with threadpool_limits(limits=1), np.errstate(over="ignore", invalid="ignore", divide="ignore",
                                                  under="ignore"):
        problem = build_problem(design)
        theta = np.asarray(fit.theta, dtype=float)
        if theta.shape != problem.lower.shape:
            raise CacheMismatch(f"{theta.size} theta values for {problem.lower.size} parameters")
        if not np.all(np.isfinite(theta)) or np.any(theta < problem.lower):
            raise CacheMismatch("theta outside its bounds")
        value = Criterion(problem, fit.method)(theta)  # the one criterion evaluation
        if value == FAILED or not _close(value, fit.objective, OBJECTIVE_RTOL):
            raise CacheMismatch(f"objective {fit.objective!r} not reproduced (criterion {value!r} at its theta)")
        est = estimates_at(design, problem, theta, fit.method)
    n, npar = problem.n, problem.p + theta.size + 1
    singular = is_singular(theta, problem.lower)
    aic, bic = information_criteria(est.objective, npar, n)
    convergence_warnings = [w for w in fit.warnings if w.code == "convergence"]
    check = ConvergenceCheck(not convergence_warnings, None, None,
                             convergence_warnings[0].message if convergence_warnings else "")
    fresh = dict(
        nobs=n, npar=npar, ngroups=ngroups(design), theta_names=theta_names(problem),
        sigma=float(np.sqrt(est.sigma2)), loglik=-est.objective / 2, objective=est.objective, aic=aic, bic=bic,
        singular=singular, fixed_effects=est.fixed_effects, random_effects=est.random_effects,
        warnings=fit_warnings(design, singular, check),
    )
    return fresh, est.arrays, problem, theta


def recompute_lme(design: Design, fit: Fit, *, wald: bool = True) -> Fit:
    """The entry's Fit with every derived number recomputed from its theta on `design`.

    `wald`: the entry's fixed-effect rows are the engine's Wald rows (no inference step
    replaced them), so all their numbers are compared; otherwise only the estimates are,
    and the caller re-applies its inference to the recomputed fit.
    Raises CacheMismatch when the objective is not reproduced or a stored number differs.
    """
    fresh, fit_arrays, problem, theta = derive(design, fit)
    for key in ("nobs", "npar", "ngroups", "theta_names", "singular"):
        if getattr(fit, key) != fresh[key]:
            raise CacheMismatch(f"{key} {getattr(fit, key)!r} differs from {fresh[key]!r} recomputed")
    for key in ("sigma", "loglik", "objective", "aic", "bic"):
        if not _close(getattr(fit, key), fresh[key]):
            raise CacheMismatch(f"{key} {getattr(fit, key)!r} differs from {fresh[key]!r} recomputed")
    if wald:
        _compare_models("fixed effect", fit.fixed_effects, fresh["fixed_effects"])
    else:
        _compare_models("fixed effect", [_estimate(r) for r in fit.fixed_effects],
                        [_estimate(r) for r in fresh["fixed_effects"]])
    _compare_models("variance component", fit.random_effects, fresh["random_effects"])
    if wald:  # an inference step edits the warnings (few_levels); it is re-applied by the caller
        _compare_models("warning", [w for w in fit.warnings if w.code in ENGINE_WARNINGS], fresh["warnings"])
    if fit.converged != fit.convergence.converged:
        raise CacheMismatch("converged flags disagree")
    if fit.converged:
        _confirm_convergence(problem, fit.method, theta, fresh["singular"])
    return fit.model_copy(update={**fresh, "arrays": fit_arrays})
