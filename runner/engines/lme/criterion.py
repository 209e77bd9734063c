"""lme4's profiled deviance (ML) and REML criterion from the blocked factor.

    ML:   log|L|^2 + n (1 + log(2 pi r2 / n))                     - sum log w
    REML: log|L|^2 + log|R_X|^2 + (n-p) (1 + log(2 pi r2 / (n-p))) - sum log w

(lme4's lmerResp::Laplace; with prior weights it subtracts sum(log w) in both.)
A failed factorization gives FAILED, a large finite value, so optimizers never see inf.
"""

from __future__ import annotations

import numpy as np

from runner.vocab import Method
from runner.engines.lme.factor import Factor, FactorError, factorize
from runner.engines.lme.structure import Problem

FAILED = 1e30


def objective_from(problem: Problem, f: Factor, method: Method) -> float:
    n, p = problem.n, problem.p
    if method == "ML":
        return f.logdet_z + n * (1.0 + np.log(2.0 * np.pi * f.r2 / n)) - problem.ldw
    nmp = n - p
    return f.logdet_z + f.logdet_x + nmp * (1.0 + np.log(2.0 * np.pi * f.r2 / nmp)) - problem.ldw


class Criterion:
    """theta (lme4 order) -> objective, counting evaluations."""

    def __init__(self, problem: Problem, method: Method, whitened: bool = False) -> None:
        self.problem = problem
        self.method = method
        self.whitened = whitened  # theta is the optimizer's phi (factor.phi_to_theta)
        self.evaluations = 0

    def __call__(self, theta: np.ndarray) -> float:
        self.evaluations += 1
        theta = np.asarray(theta, dtype=float)
        if not np.all(np.isfinite(theta)):
            return FAILED
        try:
            f = factorize(self.problem, theta, self.whitened)
        except (FactorError, np.linalg.LinAlgError):
            return FAILED
        value = objective_from(self.problem, f, self.method)
        return float(value) if np.isfinite(value) else FAILED
