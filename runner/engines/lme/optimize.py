"""The fit strategy: from lme4's start to a checked optimum of the criterion over theta.

`find_optimum(problem, method)` owns it, in this order:

1. `minimize_theta`: a bounded scipy optimizer (BSD) from lme4's start halved while the
   criterion improves (`scan_start`; an expensive model with scalar terms starts at ANOVA's
   moments instead, start.py), chosen by the cost of one evaluation
   (`Problem.eval_flops`, deterministic):
   - cheap (about a millisecond or less): L-BFGS-B on forward-difference gradients (step
     FD_STEP on the whitened parameters). Its overhead per evaluation is microseconds where
     COBYQA's pure-Python trust-region subproblems cost milliseconds. An abnormal
     line-search stop is what it reports when the difference gradient reaches its noise
     floor at the optimum: it counts as success and the convergence check decides.
   - expensive (a large dense tail such as InstEval's): L-BFGS-B on the analytic gradient
     (gradient.py: about two evaluations' work per gradient, where differences cost one
     per parameter), or, where that gradient does not apply at the start (compound
     symmetry), COBYQA (Powell's model-based trust-region family, like lme4's BOBYQA),
     final trust radius FINAL_RADIUS.
   Then lme4's boundary step: components within BOUNDARY_TOL of a zero bound are set to
   exactly 0 and kept there if the criterion is not worse (lme4's check.boundary).
2. `probe_edges`: near-zero SDs are probed off the boundary; a better point restarts.
3. Degenerate faces: a zero Cholesky pivot before an unstructured term's last column
   restarts with it lifted, then polishes in lme4's own parameters.
4. lme4's checkConv (convergence.py); if it fails after L-BFGS-B, a COBYQA polish.
5. A singular fit's failed gradient check is overridden, as lme4's checkConv does.

Every run works on the whitened parameters phi (structure.Problem, factor.phi_to_theta);
the result is in lme4's theta.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from collections.abc import Callable

import numpy as np
from scipy.optimize import Bounds, OptimizeResult, minimize

from runner.engines.lme.convergence import DELTA as CHECK_DELTA
from runner.engines.lme.convergence import ConvergenceCheck, check_convergence, is_singular, judge
from runner.engines.lme.criterion import Criterion, Method
from runner.engines.lme.factor import phi_to_theta, theta_to_phi
from runner.engines.lme.gradient import template_derivatives
from runner.engines.lme.structure import Problem
from runner.engines.lme.results import Precomputed, precompute_at
from runner.engines.lme.start import moment_start

BOUNDARY_TOL = 1e-5
INITIAL_RADIUS = 0.2
FINAL_RADIUS = 1e-5  # on the whitened parameters: theta within ~1e-5 relative of the optimum
MAX_EVALUATIONS = 20000
FD_STEP = 3e-6  # forward-difference step for L-BFGS-B (the whitened parameters are O(1))
LBFGS_FTOL = 1e-12  # relative reduction of the criterion per iteration
LBFGS_GTOL = 1e-5  # projected gradient
EM_STEPS = 3  # EM steps before L-BFGS-B on the analytic gradient
MOMENT_EM_STEPS = 2  # from a moment start (start.py), which lands about where one EM step would
NEWTON_STEPS = 2  # Newton steps on the analytic check's Hessian where its gradient test fails
SCALE_FLOOR = 0.05  # smallest |theta| the variable scaling divides by
EXACT_GTOL = 1e-4  # projected analytic gradient, scaled variables: theta within ~1e-6 relative
EXACT_GAIN = 1e-8  # or a predicted Newton gain (criterion units) below this
NOISE = 1e-12  # or below the criterion's rounding noise, relative

EDGE_PROBE_BELOW = 1e-3  # a bounded component this small after the optimizer gets probed
EDGE_PROBE_STEPS = (1e-3, 1e-2, 1e-1)
EDGE_PROBE_GAIN = 1e-7  # criterion decrease that counts as "the edge was not the optimum"
DEGENERATE_PIVOT = 1e-4
LIFTS = (0.2, 0.05)  # where restarts put degenerate pivots (each found optima the other missed)
FACE_GAIN = 1e-10  # a restart or polish off a degenerate face must gain this much


class Optimizer(Enum):
    """The scipy optimizer of a run (the value is how the fit reports it)."""

    LBFGSB = "L-BFGS-B (scipy)"
    LBFGSB_EXACT = "L-BFGS-B (scipy, analytic gradient)"
    COBYQA = "COBYQA (scipy)"


class Step(Enum):
    """What the strategy did after the first run, and kept (the value is how it is reported)."""

    EDGE_RESTART = "restarted off the boundary"
    FACE_RESTART = "restarted off a degenerate face"
    FACE_POLISH = "polished in lme4's parameters"
    COBYQA_POLISH = "then COBYQA (scipy)"
    NEWTON_STEP = "then a Newton step on the check's Hessian"


@dataclass
class Optimum:
    theta: np.ndarray  # the parameters the runs worked on (find_optimum returns lme4's theta)
    value: float
    success: bool
    message: str
    optimizer: Optimizer  # of the first run: restarts use the same one
    steps: tuple[Step, ...] = ()
    evaluations: int = 0  # of the criterion, in all runs and checks (set by find_optimum)
    precomputed: Precomputed | None = None  # the post-fit solution at theta, where the last factor gave it

    @property
    def label(self) -> str:
        """How the fit reports the optimizer, e.g. "L-BFGS-B (scipy), restarted off the boundary"."""
        return ", ".join([self.optimizer.value, *(s.value for s in self.steps)])


Objective = Callable[[np.ndarray], float]


def choose_optimizer(problem: Problem) -> Optimizer:
    """The analytic gradient wherever it applies (every template but compound symmetry):
    measured on the lme4 reference cases it needs a third of the evaluations and less time,
    from 1 ms fits to InstEval. Otherwise by the cost of one evaluation (deterministic)."""
    if all(template_derivatives(t, True) is not None for t in problem.terms):
        return Optimizer.LBFGSB_EXACT
    return Optimizer.COBYQA if problem.expensive else Optimizer.LBFGSB


def _boundary(fun: Objective, theta: np.ndarray, value: float, lower: np.ndarray) -> tuple[np.ndarray, float]:
    near = (lower == 0.0) & (theta > 0.0) & (theta < BOUNDARY_TOL)
    if not np.any(near):
        return theta, value
    trial = theta.copy()
    trial[near] = 0.0
    tv = fun(trial)
    return (trial, tv) if tv <= value else (theta, value)


def scan_start(fun: Objective, start: np.ndarray) -> np.ndarray:
    """Halve the start while the criterion improves (lme4's start puts every relative SD
    at 1; where they are far smaller these few evaluations save the optimizer many)."""
    x0, f0 = start, fun(start)
    while np.max(np.abs(x0)) > 1e-3:
        x1 = 0.5 * x0
        f1 = fun(x1)
        if not f1 < f0:
            break
        x0, f0 = x1, f1
    return x0


def probe_edges(fun: Objective, theta: np.ndarray, value: float, lower: np.ndarray) -> np.ndarray | None:
    """A start off the boundary that beats the optimizer's point, or None.

    The criterion depends on a relative SD t through t^2, so its slope vanishes as t -> 0:
    a quasi-Newton run that drifts near 0 can stop there although the minimum is at
    t ~ 0.01. lme4's restart_edge probes the boundary the same way; a few evaluations per
    near-zero component, only for fits that look singular.
    """
    best, best_value = None, value - EDGE_PROBE_GAIN
    for i in np.flatnonzero((lower == 0.0) & (theta < EDGE_PROBE_BELOW)):
        for step in EDGE_PROBE_STEPS:
            trial = theta.copy()
            trial[i] = step
            f = fun(trial)
            if f < best_value:
                best, best_value = trial, f
    return best


def em_start(fun: Criterion, start: np.ndarray, steps: int = EM_STEPS) -> np.ndarray:
    """EM_STEPS EM steps from start (each costs what a gradient does), stopping where one
    does not improve the criterion: EM covers the long way from lme4's start in a few
    steps, where a quasi-Newton method probes the boundary and backtracks."""
    x, best, best_value = start, start, np.inf
    for _ in range(steps):
        value, _, em = fun.first_order(x)
        if not value < best_value:
            return best
        best, best_value = x, value
        if em is None:
            return best
        x = em
    return x


def variable_scales(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """Per parameter sqrt(levels) / |theta| (floored; an off-diagonal entry takes its row's
    diagonal): the criterion's curvature in a relative SD t of a term with l levels is about
    l / t^2, so in these units the quasi-Newton run sees a Hessian near a multiple of I."""
    scale = np.ones(theta.size)
    for term in problem.terms:
        sl = term.theta
        mag = np.abs(theta[sl])
        if term.template.covariance == "unstructured" and term.p > 1:
            r, c = term.template.tri()
            diag = {int(a): mag[i] for i, (a, b) in enumerate(zip(r, c)) if a == b}
            mag = np.maximum(mag, [diag[int(a)] for a in r])
        scale[sl] = np.sqrt(term.levels) / np.maximum(mag, SCALE_FLOOR)
    return scale


def noise_floor(value: float) -> float:
    """The smallest change of the criterion at `value` that is not rounding noise."""
    return max(EXACT_GAIN, NOISE * abs(value))


class _Stationary(Exception):
    """Raised inside the objective where the projected gradient is within EXACT_GTOL."""


class _ScaledObjective:
    """The criterion and its analytic gradient in scaled variables z = theta * scale, which
    ends the run at the first point whose projected gradient is within EXACT_GTOL: near the
    optimum of a million-row criterion its values differ in the last digits only, and a
    line search there would keep evaluating the same point."""

    def __init__(self, fun: Criterion, scale: np.ndarray, lower: np.ndarray) -> None:
        self.fun, self.scale, self.lower = fun, scale, lower
        self.best: tuple[float, np.ndarray] | None = None

    def __call__(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        theta = z / self.scale
        value, grad = self.fun.value_and_gradient(theta)
        grad = grad / self.scale
        if self.best is None or value < self.best[0]:
            self.best = (value, theta)
        projected = np.where((self.lower == 0.0) & (theta <= 0.0) & (grad > 0), 0.0, grad)
        # a bounded component just above 0 sits where the criterion is flat (even in it):
        # there L-BFGS-B's own stop lets it reach the bound
        near_edge = np.any((self.lower == 0.0) & (theta > 0.0) & (theta < EDGE_PROBE_BELOW))
        # in these units the Hessian is about 2 I, so a Newton step would gain ~ |g|^2 / 4:
        # below the criterion's rounding noise (~1e-12 of it: 4e-6 on a million rows) no
        # line search can see progress
        small = (np.max(np.abs(projected), initial=0.0) <= EXACT_GTOL
                 or float(projected @ projected) / 4 <= noise_floor(value))
        if small and value <= self.best[0] and not near_edge:
            raise _Stationary
        return value, grad


def _lbfgsb_exact(fun: Criterion, start: np.ndarray, lower: np.ndarray, ftol: float, gtol: float) -> OptimizeResult:
    """L-BFGS-B on the analytic gradient in `variable_scales` units, from `start`."""
    scale = variable_scales(fun.problem, start)
    objective = _ScaledObjective(fun, scale, lower)
    try:
        res = minimize(objective, start * scale, jac=True, method="L-BFGS-B",
                       bounds=Bounds(lower * scale, np.full(lower.size, np.inf)),
                       options={"ftol": ftol, "gtol": gtol, "maxfun": MAX_EVALUATIONS})
    except _Stationary:
        assert objective.best is not None
        return OptimizeResult(x=objective.best[1], fun=objective.best[0], success=True, status=0,
                              message="stationary: the scaled projected gradient is within "
                                      f"{EXACT_GTOL:g} or its Newton gain below the criterion's noise")
    res.x = res.x / scale
    return res


def minimize_theta(fun: Objective, start: np.ndarray, lower: np.ndarray, optimizer: Optimizer,
                   scan: bool = True, tol: tuple[float, float] | None = None, em_steps: int = EM_STEPS) -> Optimum:
    """One deterministic run over theta >= lower; `tol`: L-BFGS-B's (ftol, gtol) if not the
    defaults; `em_steps`: EM steps before the exact L-BFGS-B run."""
    ftol, gtol = (LBFGS_FTOL, LBFGS_GTOL) if tol is None else tol
    bounds = Bounds(lower, np.full(lower.size, np.inf))
    exact = fun if optimizer is Optimizer.LBFGSB_EXACT and isinstance(fun, Criterion) else None
    if scan and exact is None:  # EM steps do the exact run's scan
        start = scan_start(fun, start)
    if exact is not None:
        res = _lbfgsb_exact(exact, em_start(exact, start, em_steps), lower, ftol, gtol)
        success = bool(res.success) or res.status == 2
    elif optimizer in (Optimizer.LBFGSB, Optimizer.LBFGSB_EXACT):
        res = minimize(fun, start, method="L-BFGS-B", bounds=bounds,
                       options={"eps": FD_STEP, "ftol": ftol, "gtol": gtol, "maxfun": MAX_EVALUATIONS})
        success = bool(res.success) or res.status == 2  # 2: abnormal line-search stop
    else:
        res = minimize(fun, start, method="COBYQA", bounds=bounds,
                       options={"initial_tr_radius": INITIAL_RADIUS, "final_tr_radius": FINAL_RADIUS,
                                "maxfev": MAX_EVALUATIONS})
        success = bool(res.success)
    theta = np.maximum(np.asarray(res.x, dtype=float), lower)
    value = fun(theta) if not np.array_equal(theta, res.x) else float(res.fun)
    theta, value = _boundary(fun, theta, value, lower)
    return Optimum(theta=theta, value=float(value), success=success, message=str(res.message), optimizer=optimizer)


def restart_if_lower(fun: Objective, opt: Optimum, starts: list[np.ndarray], lower: np.ndarray, step: Step,
                     min_gain: float = 0.0, tol: tuple[float, float] | None = None) -> Optimum:
    """The lowest of `opt` and a restart (same optimizer) from each start; a restart that wins
    records `step` after opt's own steps."""
    best = opt
    for start in starts:
        restart = minimize_theta(fun, start, lower, opt.optimizer, scan=False, tol=tol)
        if restart.value < best.value - min_gain:
            best = replace(restart, steps=(*opt.steps, step))
    return best


def polish_with_cobyqa(fun: Objective, opt: Optimum, lower: np.ndarray) -> Optimum:
    """COBYQA from an L-BFGS-B stop (difference gradients can stop early); kept if not worse."""
    polish = minimize_theta(fun, opt.theta, lower, Optimizer.COBYQA, scan=False)
    if polish.value <= opt.value:
        return replace(polish, optimizer=opt.optimizer, steps=(*opt.steps, Step.COBYQA_POLISH))
    return opt


def _degenerate_pivots(problem: Problem, phi: np.ndarray) -> np.ndarray:
    """Indices of Cholesky pivots at 0 before the last column of an unstructured term.

    A zero pivot at position j forces column j onto the ones before it, a smaller set than
    "rank-deficient": a bounded optimizer can stop on that face although the singular
    optimum lies on another (tests/test_lme_oracle.py: the crossed_factor_term_face cases).
    """
    out = [i for term in problem.terms for i in term.degenerate_pivots(phi, DEGENERATE_PIVOT)]
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
    opt = restart_if_lower(crit_phi, opt, starts, problem.lower, Step.FACE_RESTART, min_gain=FACE_GAIN)
    if not _degenerate_pivots(problem, opt.theta).size:
        return opt
    crit = Criterion(problem, method)
    polish = minimize_theta(crit, phi_to_theta(problem, opt.theta), problem.lower, opt.optimizer, scan=False)
    crit_phi.evaluations += crit.evaluations
    if not polish.value < opt.value - FACE_GAIN:
        return opt
    phi = theta_to_phi(problem, polish.theta)
    return Optimum(theta=phi, value=float(crit_phi(phi)), success=polish.success, message=polish.message,
                   optimizer=opt.optimizer, steps=(*opt.steps, Step.FACE_POLISH))


Derivatives = tuple[np.ndarray, np.ndarray]  # the analytic check's gradient and Hessian at the optimum


def _check(crit_phi: Criterion, problem: Problem, opt: Optimum
           ) -> tuple[ConvergenceCheck, bool, Derivatives | None]:
    """lme4's checkConv at the optimum, and whether the fit is singular (lme4's isSingular).

    On expensive models (the analytic gradient applies, the fit is not singular) its gradient
    is the analytic one and its Hessian forward differences of that gradient (step DELTA, as
    deriv12's): lme4's test on the same quantities, without the criterion's rounding noise,
    which on millions of rows (~1e-12 of a criterion of 1e7) makes deriv12's difference
    gradient fail a converged fit. The same number of evaluations' work (k + 1 gradients).
    The analytic route also returns its gradient and Hessian (for `_newton_step`)."""
    singular = is_singular(phi_to_theta(problem, opt.theta), problem.lower)
    if problem.expensive and crit_phi.exact and not singular and opt.theta.size:
        g, H = _analytic_derivatives(crit_phi, opt.theta)
        return judge(g, H, opt.theta, problem.lower), singular, (g, H)
    return check_convergence(crit_phi, opt.theta, opt.value, problem.lower, singular), singular, None


def _analytic_derivatives(crit_phi: Criterion, x: np.ndarray) -> Derivatives:
    """The analytic gradient at x and the Hessian as forward differences of it (symmetrized)."""
    _, g = crit_phi.value_and_gradient(x)
    points = [x + CHECK_DELTA * e for e in np.eye(x.size)]  # independent: two at a time (parallel.py)
    H = np.asarray([(gi - g) / CHECK_DELTA for _, gi in crit_phi.gradients_at(points)])
    return g, (H + H.T) / 2


def _analytic_check(crit_phi: Criterion, x: np.ndarray, lower: np.ndarray) -> ConvergenceCheck:
    g, H = _analytic_derivatives(crit_phi, x)
    return judge(g, H, x, lower)


def _newton_step(crit_phi: Criterion, problem: Problem, method: Method, opt: Optimum, derivatives: Derivatives,
                 keep: bool) -> tuple[Optimum, ConvergenceCheck, Precomputed | None, Derivatives] | None:
    """One Newton step x - H^{-1} g on the analytic check's own gradient and Hessian, where lme4's
    gradient test failed at a positive definite Hessian: on tens of millions of rows the
    quasi-Newton run stops where its line search can no longer see progress in the criterion
    (rounding noise), which can be short of lme4's tolerance on the scaled gradient; the
    gradient itself stays exact there. Kept if the criterion is not worse beyond its noise,
    and judged with the new gradient and the same Hessian (from a point 1e-4 away)."""
    g, H = derivatives
    try:
        x = np.maximum(opt.theta - np.linalg.solve(H, g), problem.lower)
    except np.linalg.LinAlgError:
        return None
    crit_phi.keep = keep
    value, g_new = crit_phi.value_and_gradient(x)
    kept = crit_phi.take_kept(x)
    crit_phi.keep = False
    if not value <= opt.value + noise_floor(opt.value):
        return None
    check = judge(g_new, H, x, problem.lower)
    moved = replace(opt, theta=x, value=float(value), steps=(*opt.steps, Step.NEWTON_STEP))
    return moved, check, None if kept is None else precompute_at(problem, kept, method), (g_new, H)


def _singular_override(check: ConvergenceCheck) -> ConvergenceCheck:
    """lme4's checkConv returns before its gradient test for singular fits: across the
    boundary the criterion is not smooth, and finite differences there show a "gradient"
    at the true optimum. Keep the number, say why it does not count."""
    return ConvergenceCheck(True, check.max_abs_gradient, None,
                            f"singular fit: gradient check skipped as lme4's checkConv does "
                            f"(max|grad| {check.max_abs_gradient:.3g} by finite differences at the boundary)")


def find_optimum(problem: Problem, method: Method) -> tuple[Optimum, ConvergenceCheck]:
    """The optimum in lme4's theta (with the evaluations it took) and lme4's convergence check."""
    crit_phi = Criterion(problem, method, whitened=True)
    # phi is lme4's theta where no term is whitened: the last factor can serve the post-fit
    keep = problem.expensive and not crit_phi.dense and all(t.basis is None for t in problem.terms)
    crit_phi.keep = keep
    lower = problem.lower
    optimizer = choose_optimizer(problem)
    # an expensive model with scalar terms starts at ANOVA's moments (start.py), with one EM
    # step fewer: on the benchmarks never more evaluations than from lme4's start, often 1-2 fewer
    moments = moment_start(problem) if problem.expensive and optimizer is Optimizer.LBFGSB_EXACT else None
    if moments is not None:
        opt = minimize_theta(crit_phi, moments, lower, optimizer, em_steps=MOMENT_EM_STEPS)
    else:
        opt = minimize_theta(crit_phi, problem.start, lower, optimizer)
    off_edge = probe_edges(crit_phi, opt.theta, opt.value, lower)
    if off_edge is not None:  # the optimizer stopped on a flat edge: restart off it
        opt = restart_if_lower(crit_phi, opt, [off_edge], lower, Step.EDGE_RESTART)
    if _degenerate_pivots(problem, opt.theta).size:
        opt = _leave_degenerate_face(problem, method, crit_phi, opt)
    kept = crit_phi.take_kept(opt.theta)  # before the check's evaluations drop it
    precomputed = None if kept is None else precompute_at(problem, kept, method)
    del kept
    crit_phi.keep = False
    check, singular, derivatives = _check(crit_phi, problem, opt)
    for _ in range(NEWTON_STEPS):
        if check.ok or derivatives is None or not (check.hessian_min_eigenvalue or 0.0) > 0:
            break
        stepped = _newton_step(crit_phi, problem, method, opt, derivatives, keep)
        if stepped is None:
            break
        opt, check, precomputed, derivatives = stepped
    # a singular fit's failed gradient test is overridden below (lme4 skips it), so only a run
    # that itself failed is polished there (a boundary fit's polish cost ~50 evaluations for
    # a gain of 5e-7 on a simulated 100,000-row model)
    if (not opt.success or not (check.ok or singular)) and opt.optimizer in (Optimizer.LBFGSB, Optimizer.LBFGSB_EXACT):
        polished = polish_with_cobyqa(crit_phi, opt, lower)
        if polished is not opt:
            opt = polished
            check, singular, _ = _check(crit_phi, problem, opt)
    if singular and not check.ok:
        check = _singular_override(check)
    theta = phi_to_theta(problem, opt.theta)
    if precomputed is not None and not np.array_equal(precomputed.theta, theta):
        precomputed = None  # a polish moved the optimum
    return replace(opt, theta=theta, evaluations=crit_phi.evaluations, precomputed=precomputed), check
