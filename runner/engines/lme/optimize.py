"""Bounded derivative-free minimization of the criterion over theta.

scipy's COBYQA (Powell's model-based trust-region family, like lme4's BOBYQA; BSD
licensed) with a final trust radius small enough to land on lme4's optimum. After it,
lme4's boundary step: components within `BOUNDARY_TOL` of a zero lower bound are set
to exactly 0 and kept there if the criterion is not worse (lme4's check.boundary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import Bounds, minimize

BOUNDARY_TOL = 1e-5
INITIAL_RADIUS = 0.2
FINAL_RADIUS = 1e-7
MAX_EVALUATIONS = 20000


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


def minimize_theta(fun: Callable[[np.ndarray], float], start: np.ndarray, lower: np.ndarray) -> Optimum:
    """Minimize fun over theta >= lower from lme4's start; deterministic."""
    bounds = Bounds(lower, np.full(lower.size, np.inf))
    res = minimize(fun, start, method="COBYQA", bounds=bounds,
                   options={"initial_tr_radius": INITIAL_RADIUS, "final_tr_radius": FINAL_RADIUS,
                            "maxfev": MAX_EVALUATIONS})
    theta = np.maximum(np.asarray(res.x, dtype=float), lower)
    value = fun(theta) if not np.array_equal(theta, res.x) else float(res.fun)
    theta, value = _boundary(fun, theta, value, lower)
    return Optimum(theta=theta, value=float(value), success=bool(res.success),
                   message=str(res.message), optimizer="COBYQA (scipy)")
