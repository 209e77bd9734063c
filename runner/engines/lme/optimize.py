"""Bounded minimization of the criterion over theta, derivative-free or by differences.

Two scipy optimizers (both BSD licensed), chosen by the cost of one evaluation, which
`structure.Problem.eval_flops` estimates deterministically from the problem's shape:

- cheap evaluations (about a millisecond or less: nested designs, small dense tails):
  L-BFGS-B on forward-difference gradients (step `FD_STEP` = 3e-6 on the whitened parameters,
  see structure._preconditioner). It needs about as many evaluations as COBYQA or fewer
  (half of Powell's), and its own overhead per evaluation is microseconds, where
  COBYQA's (pure-Python trust-region subproblems) is ~1-3 ms and dominated these fits.
  An abnormal line-search stop is what L-BFGS-B reports when the difference gradient
  reaches its noise floor at the optimum: it counts as success, and the convergence
  check (lme4's checkConv) decides; when that check fails the engine polishes with
  COBYQA from there.
- expensive evaluations (a large dense tail, e.g. InstEval's 1,159 x 1,159 Cholesky):
  scipy's COBYQA (Powell's model-based trust-region family, like lme4's BOBYQA) with a
  final trust radius of 1e-5 on the whitened parameters, which puts theta within ~1e-5
  relative of the optimum (1e-7 cost ~20% more evaluations for no visible gain).

Both start from lme4's start halved while the criterion improves (`scan_start`; 60 instead
of 97 evaluations on InstEval, 241 instead of 385 on students_slopes_repeated_ml).
After either, lme4's boundary step: components within `BOUNDARY_TOL` of a zero lower
bound are set to exactly 0 and kept there if the criterion is not worse (lme4's
check.boundary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import Bounds, minimize

BOUNDARY_TOL = 1e-5
INITIAL_RADIUS = 0.2
FINAL_RADIUS = 1e-5
MAX_EVALUATIONS = 20000
FD_STEP = 3e-6  # forward-difference step for L-BFGS-B (the whitened parameters are O(1))
LBFGS_FTOL = 1e-12  # relative reduction of the criterion per iteration (1e-11 stopped short on slopes)
LBFGS_GTOL = 1e-5  # projected gradient
CHEAP_FLOPS = 2e7  # below this estimated cost per evaluation, use L-BFGS-B


@dataclass
class Optimum:
    theta: np.ndarray
    value: float
    success: bool
    message: str
    optimizer: str


def _boundary(fun: Callable[[np.ndarray], float], theta: np.ndarray, value: float,
              lower: np.ndarray) -> tuple[np.ndarray, float]:
    near = (lower == 0.0) & (theta > 0.0) & (theta < BOUNDARY_TOL)
    if not np.any(near):
        return theta, value
    trial = theta.copy()
    trial[near] = 0.0
    tv = fun(trial)
    return (trial, tv) if tv <= value else (theta, value)


def scan_start(fun: Callable[[np.ndarray], float], start: np.ndarray) -> np.ndarray:
    """Halve the start while the criterion improves (lme4's start puts every relative SD
    at 1; where they are far smaller, e.g. the students slopes, these few evaluations
    save the optimizer a hundred or more)."""
    x0, f0 = start, fun(start)
    while np.max(np.abs(x0)) > 1e-3:
        x1 = 0.5 * x0
        f1 = fun(x1)
        if not f1 < f0:
            break
        x0, f0 = x1, f1
    return x0


EDGE_PROBE_BELOW = 1e-3  # a bounded component this small after the optimizer gets probed
EDGE_PROBE_STEPS = (1e-3, 1e-2, 1e-1)
EDGE_PROBE_GAIN = 1e-7  # criterion decrease that counts as "the edge was not the optimum"


def probe_edges(fun: Callable[[np.ndarray], float], theta: np.ndarray, value: float,
                lower: np.ndarray) -> np.ndarray | None:
    """A start off the boundary that beats the optimizer's point, or None.

    The criterion depends on a relative SD t through t^2, so its slope vanishes as t -> 0:
    a quasi-Newton run that drifts near 0 can stop there although the minimum is at
    t ~ 0.01 (3.9e-4 lower on a crossed 3-level factor found by the lme4 comparison in
    tests/test_lme_oracle.py). lme4's restart_edge probes the boundary the same way; a
    few evaluations per near-zero component, only for fits that look singular.
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


def minimize_theta(fun: Callable[[np.ndarray], float], start: np.ndarray, lower: np.ndarray,
                   eval_flops: float = np.inf, scan: bool = True) -> Optimum:
    """Minimize fun over theta >= lower from lme4's start (`scan_start`); deterministic."""
    bounds = Bounds(lower, np.full(lower.size, np.inf))
    if scan:
        start = scan_start(fun, start)
    if eval_flops < CHEAP_FLOPS:
        name = "L-BFGS-B (scipy)"
        res = minimize(fun, start, method="L-BFGS-B", bounds=bounds,
                       options={"eps": FD_STEP, "ftol": LBFGS_FTOL, "gtol": LBFGS_GTOL,
                                "maxfun": MAX_EVALUATIONS})
        success = bool(res.success) or res.status == 2  # 2: abnormal line-search stop
    else:
        name = "COBYQA (scipy)"
        res = minimize(fun, start, method="COBYQA", bounds=bounds,
                       options={"initial_tr_radius": INITIAL_RADIUS, "final_tr_radius": FINAL_RADIUS,
                                "maxfev": MAX_EVALUATIONS})
        success = bool(res.success)
    theta = np.maximum(np.asarray(res.x, dtype=float), lower)
    value = fun(theta) if not np.array_equal(theta, res.x) else float(res.fun)
    theta, value = _boundary(fun, theta, value, lower)
    return Optimum(theta=theta, value=float(value), success=success,
                   message=str(res.message), optimizer=name)


def restart_if_lower(fun: Callable[[np.ndarray], float], opt: Optimum, starts: list[np.ndarray],
                     lower: np.ndarray, eval_flops: float, label: str, min_gain: float = 0.0) -> Optimum:
    """The lowest of `opt` and a restart of the optimizer from each start (a point that
    `probe_edges` or the engine's degenerate-face check found better placed); the winner's
    optimizer name says how it was reached."""
    best = opt
    for start in starts:
        restart = minimize_theta(fun, start, lower, eval_flops, scan=False)
        if restart.value < best.value - min_gain:
            restart.optimizer = f"{opt.optimizer}, {label}"
            best = restart
    return best
