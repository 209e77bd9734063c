"""The native `lme` engine: lme4's criterion with a blocked Cholesky, on numpy/scipy."""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import ThreadpoolController

from runner.design.model import Design
from runner.engines.lme.convergence import ConvergenceCheck, check_convergence, is_singular
from runner.engines.lme.criterion import Criterion, Method, objective_from
from runner.engines.lme.factor import FactorError, factorize, phi_to_theta, raw_factors, theta_to_phi
from runner.engines.lme.optimize import Optimum, minimize_theta, probe_edges, restart_if_lower
from runner.engines.lme.results import arrays, fixed_effects, sigma2, variance_components
from runner.engines.lme.solve import solve
from runner.engines.lme.structure import Problem, build_problem
from runner.fit import Convergence, Fit, FitWarning

FEW_LEVELS = 30
_CONTROLLER: ThreadpoolController | None = None


def _one_blas_thread():
    """Limit BLAS to one thread during the fit (threadpoolctl; a multithreaded dense
    Cholesky was many times slower on a shared 2-core machine). The controller is made
    once (scanning the loaded libraries costs ~1 ms, as much as a small fit's criterion)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)


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


DEGENERATE_PIVOT = 1e-4
LIFTS = (0.2, 0.05)  # where restarts put degenerate pivots (each found optima the other missed)


def _degenerate_pivots(problem: Problem, phi: np.ndarray) -> np.ndarray:
    """Indices of Cholesky pivots at 0 before the last column of an unstructured term.

    A zero pivot at position j forces column j onto the ones before it, a smaller set than
    "rank-deficient": a bounded optimizer can stop on that face although the singular
    optimum lies on another (found by the random-model comparison with lme4: a 3-level
    factor slope 2.9e-4 above lme4, a crossed 3-column factor term 0.165 above it).
    """
    out = []
    for template, sl in zip(problem.templates, problem.theta_slices):
        if template.covariance != "unstructured" or template.p < 2:
            continue
        r, c = template.tri()
        pivots = np.flatnonzero(r == c)[:-1] + sl.start
        out.extend(int(i) for i in pivots if phi[i] < DEGENERATE_PIVOT)
    return np.asarray(out, dtype=int)


def _leave_degenerate_face(problem: Problem, method: Method, crit_phi: Criterion, opt: Optimum) -> Optimum:
    """Restart with the face's zero pivots lifted, then, if still on such a face, polish in
    lme4's own parameters (where the same covariance's zero usually sits last); keep the
    lowest. Only for fits that stopped on a degenerate face, so ordinary fits pay nothing."""
    pivots = _degenerate_pivots(problem, opt.theta)
    starts = []
    for lift in LIFTS:
        lifted = opt.theta.copy()
        lifted[pivots] = lift
        starts.append(lifted)
    opt = restart_if_lower(crit_phi, opt, starts, problem.lower, problem.eval_flops,
                           "restarted off a degenerate face", min_gain=1e-10)
    if not _degenerate_pivots(problem, opt.theta).size:
        return opt
    crit = Criterion(problem, method)
    polish = minimize_theta(crit, phi_to_theta(problem, opt.theta), problem.lower, problem.eval_flops, scan=False)
    crit_phi.evaluations += crit.evaluations
    if not polish.value < opt.value - 1e-10:
        return opt
    phi = theta_to_phi(problem, polish.theta)
    return Optimum(theta=phi, value=float(crit_phi(phi)), success=polish.success, message=polish.message,
                   optimizer=f"{opt.optimizer}, polished in lme4's parameters")


class LmeEngine:
    """Engine protocol implementation: `fit(design, method, formula_text) -> Fit`."""

    name = "lme"

    def fit(self, design: Design, method: Method, formula_text: str = "") -> Fit:
        t0 = time.perf_counter()
        # trial points with overflow are rejected by the criterion (a large finite value);
        # numpy's floating-point warnings about them would only be noise on stderr
        with _one_blas_thread(), np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            problem = build_problem(design)
            # the optimizer works on whitened parameters (structure._whitening)
            crit_phi = Criterion(problem, method, whitened=True)
            opt = minimize_theta(crit_phi, problem.start, problem.lower, problem.eval_flops)
            off_edge = probe_edges(crit_phi, opt.theta, opt.value, problem.lower)
            if off_edge is not None:  # the optimizer stopped on a flat edge: restart off it
                opt = restart_if_lower(crit_phi, opt, [off_edge], problem.lower, problem.eval_flops,
                                       "restarted off the boundary")
            if _degenerate_pivots(problem, opt.theta).size:
                opt = _leave_degenerate_face(problem, method, crit_phi, opt)
            theta = phi_to_theta(problem, opt.theta)
            singular = is_singular(theta, problem.lower)
            check = check_convergence(crit_phi, opt.theta, opt.value, problem.lower, singular)
            if not (check.ok and opt.success) and not opt.optimizer.startswith("COBYQA"):
                # L-BFGS-B on difference gradients can stop early: polish with COBYQA from there
                polish = minimize_theta(crit_phi, opt.theta, problem.lower, scan=False)
                if polish.value <= opt.value:
                    opt = polish
                    opt.optimizer = "L-BFGS-B, then COBYQA (scipy)"
                    theta = phi_to_theta(problem, opt.theta)
                    singular = is_singular(theta, problem.lower)
                    check = check_convergence(crit_phi, opt.theta, opt.value, problem.lower, singular)
            if singular and not check.ok:
                # lme4's checkConv returns before its gradient test for singular fits: across
                # the boundary the criterion is not smooth, and finite differences there show a
                # "gradient" at the true optimum (all slopes at every level of students: lme4's
                # tight optimum, 0.12 here). Keep the number, say why it does not count.
                check = ConvergenceCheck(True, check.max_abs_gradient, None,
                                         f"singular fit: gradient check skipped as lme4's checkConv does "
                                         f"(max|grad| {check.max_abs_gradient:.3g} by finite differences "
                                         "at the boundary)")
            try:
                f = factorize(problem, theta)
            except (FactorError, np.linalg.LinAlgError) as exc:
                raise LmeFitError(f"the factorization failed at the optimum: {exc}") from exc
            objective = float(objective_from(problem, f, method))
            raw = raw_factors(problem, theta)
            sol = solve(problem, f, raw)
        s2 = sigma2(problem, f.r2, method)
        # back to lme4's block order
        inv = np.argsort(problem.order)
        factors = [raw[i] for i in inv]
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
                                    message=check.message or opt.message, evaluations=crit_phi.evaluations,
                                    max_abs_gradient=check.max_abs_gradient,
                                    hessian_min_eigenvalue=check.hessian_min_eigenvalue),
            warnings=_warnings(design, singular, check.ok, check.message),
            fit_seconds=time.perf_counter() - t0,
            arrays=arrays(design, modes, cvar, sol.beta, s2))
