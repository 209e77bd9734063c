"""The native `lme` engine: lme4's criterion with a blocked Cholesky, on numpy/scipy."""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from runner.design.model import Design
from runner.engines.lme.convergence import check_convergence, is_singular
from runner.engines.lme.criterion import Criterion, Method, objective_from
from runner.engines.lme.factor import FactorError, factorize
from runner.engines.lme.optimize import minimize_theta
from runner.engines.lme.results import arrays, fixed_effects, sigma2, variance_components
from runner.engines.lme.solve import solve
from runner.engines.lme.structure import build_problem
from runner.fit import Convergence, Fit, FitWarning

FEW_LEVELS = 30


class LmeFitError(RuntimeError):
    """A numerical failure at the optimum (raised as EngineError by the dispatcher)."""


def _warnings(design: Design, singular: bool, conv_ok: bool, conv_msg: str) -> list[FitWarning]:
    out = []
    for w in design.warnings:
        code = "scale_x" if "different scales" in w else "rank_deficient" if "rank deficient" in w else "design"
        out.append(FitWarning(code=code, message=w))
    if singular:
        out.append(FitWarning(code="singular", message="boundary (singular) fit: see help('isSingular')"))
    if not conv_ok:
        out.append(FitWarning(code="convergence", message=conv_msg))
    few = sorted({b.group for b in design.blocks if b.nlevels < FEW_LEVELS})
    if few:
        out.append(FitWarning(code="few_levels", message=(
            f"grouping factor{'s' if len(few) > 1 else ''} {', '.join(few)} ha{'ve' if len(few) > 1 else 's'} "
            f"fewer than {FEW_LEVELS} levels: Wald z p-values and intervals are anticonservative")))
    return out


class LmeEngine:
    """Engine protocol implementation: `fit(design, method, formula_text) -> Fit`."""

    name = "lme"

    def fit(self, design: Design, method: Method, formula_text: str = "") -> Fit:
        t0 = time.perf_counter()
        with threadpool_limits(limits=1):
            problem = build_problem(design)
            crit = Criterion(problem, method)
            opt = minimize_theta(crit, problem.start, problem.lower)
            theta = opt.theta
            singular = is_singular(theta, problem.lower)
            check = check_convergence(crit, theta, opt.value, problem.lower, singular)
            try:
                f = factorize(problem, theta)
            except (FactorError, np.linalg.LinAlgError) as exc:
                raise LmeFitError(f"the factorization failed at the optimum: {exc}") from exc
            objective = float(objective_from(problem, f, method))
            sol = solve(problem, f)
        s2 = sigma2(problem, f.r2, method)
        # back to lme4's block order
        inv = np.argsort(problem.order)
        factors = [f.factors[i] for i in inv]
        modes = [sol.modes[i] for i in inv]
        cvar = [sol.cond_var[i] for i in inv]
        npar = problem.p + theta.size + 1
        n = problem.n
        converged = opt.success and check.ok
        names = [name for b, t in zip(design.blocks, [problem.templates[i] for i in inv]) for name in t.names()]
        ngroups: dict[str, int] = {}
        for b in design.blocks:
            ngroups.setdefault(b.group, b.nlevels)
        return Fit(
            engine="lme", method=method, formula=formula_text, nobs=n, npar=npar, ngroups=ngroups,
            theta=[float(t) for t in theta], theta_names=names, sigma=float(np.sqrt(s2)),
            loglik=-objective / 2, objective=objective, aic=objective + 2 * npar,
            bic=objective + npar * float(np.log(n)), p_method="wald-z", ci_method="wald",
            fixed_effects=fixed_effects(design, sol, s2),
            random_effects=variance_components(design, factors, s2),
            converged=converged, singular=singular,
            convergence=Convergence(converged=converged, optimizer=opt.optimizer,
                                    message=check.message or opt.message, evaluations=crit.evaluations,
                                    max_abs_gradient=check.max_abs_gradient,
                                    hessian_min_eigenvalue=check.hessian_min_eigenvalue),
            warnings=_warnings(design, singular, check.ok, check.message),
            fit_seconds=time.perf_counter() - t0,
            arrays=arrays(design, modes, cvar, sol.beta, s2))
