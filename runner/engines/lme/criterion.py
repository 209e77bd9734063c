"""lme4's profiled deviance (ML) and REML criterion from the blocked factor.

    ML:   log|L|^2 + n (1 + log(2 pi r2 / n))                     - sum log w
    REML: log|L|^2 + log|R_X|^2 + (n-p) (1 + log(2 pi r2 / (n-p))) - sum log w

(lme4's lmerResp::Laplace; with prior weights it subtracts sum(log w) in both.)
A failed factorization gives FAILED, a large finite value, so optimizers never see inf.
`Criterion.value_and_gradient` adds the analytic gradient (gradient.py), or forward
differences where that formula does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runner.vocab import Method
from runner.engines.lme.dense import DenseFactor, dense_factorize, use_dense
from runner.engines.lme.factor import Factor, FactorError, factorize
from runner.engines.lme.gradient import balances, balances_from, criterion_gradient, em_step, template_derivatives
from runner.engines.lme.inverse import InverseBlocks, inverse_blocks
from runner.engines.lme.parallel import map_evaluations
from runner.engines.lme.solve import Modes, spherical_modes
from runner.engines.lme.structure import Problem

FAILED = 1e30
DIFF_STEP = 3e-6  # forward-difference step where the analytic gradient does not apply


def objective_from(problem: Problem, f: Factor | DenseFactor, method: Method) -> float:
    n, p = problem.n, problem.p
    if method == "ML":
        return f.logdet_z + n * (1.0 + np.log(2.0 * np.pi * f.r2 / n)) - problem.ldw
    nmp = n - p
    return f.logdet_z + f.logdet_x + nmp * (1.0 + np.log(2.0 * np.pi * f.r2 / nmp)) - problem.ldw


@dataclass
class KeptPoint:
    """The last gradient evaluation's factor, modes and (ML) inverse blocks over [Z]: at the
    optimum they are what the post-fit numbers need (results.precompute_at), which would
    otherwise factor and invert the tail once more (~0.9 s on a million rows)."""

    theta: np.ndarray
    factor: Factor
    modes: Modes
    blocks: InverseBlocks | None  # over [Z] (ML's gradient uses these); None under REML


class Criterion:
    """theta (lme4 order) -> objective, counting evaluations.

    With `keep` (set by the optimizer for expensive models without whitened terms, where
    the optimizer's parameters are lme4's theta) the last gradient evaluation's factor is
    kept until the next evaluation starts (so never two factors at once) or until
    `take_kept` hands it over."""

    def __init__(self, problem: Problem, method: Method, whitened: bool = False) -> None:
        self.problem = problem
        self.method = method
        self.whitened = whitened  # theta is the optimizer's phi (factor.phi_to_theta)
        self.evaluations = 0
        self.derivatives = [template_derivatives(t, whitened) for t in problem.terms]
        # the analytic gradient and EM apply (every template covered; EM on the optimizer's
        # whitened parameters or where nothing is whitened)
        self.exact = all(d is not None for d in self.derivatives)
        self.em = self.exact and (whitened or all(t.basis is None for t in problem.terms))
        self._last: tuple[np.ndarray, tuple[float, np.ndarray, np.ndarray | None]] | None = None
        # small models: one dense matrix per evaluation (dense.py), the same criterion
        self.dense = use_dense(problem)
        self.keep = False
        self.kept: KeptPoint | None = None

    def __call__(self, theta: np.ndarray) -> float:
        return self._evaluate(theta)[0]

    def _evaluate(self, theta: np.ndarray) -> tuple[float, Factor | DenseFactor | None]:
        self.kept = None  # dropped before the next factor is allocated
        self.evaluations += 1
        theta = np.asarray(theta, dtype=float)
        if not np.all(np.isfinite(theta)):
            return FAILED, None
        try:
            f: Factor | DenseFactor = (dense_factorize if self.dense else factorize)(
                self.problem, theta, self.whitened)
        except (FactorError, np.linalg.LinAlgError):
            return FAILED, None
        value = objective_from(self.problem, f, self.method)
        return (float(value), f) if np.isfinite(value) else (FAILED, None)

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion and its gradient (the form scipy's `jac=True` takes)."""
        value, grad, _ = self.first_order(theta, em_step_wanted=False)
        return value, grad

    def first_order(self, theta: np.ndarray, em_step_wanted: bool = True
                    ) -> tuple[float, np.ndarray, np.ndarray | None]:
        """The criterion, its gradient (analytic, or forward differences where that formula
        does not apply) and the EM step from theta (None where it does not apply or is not
        wanted: only the EM start uses it)."""
        theta = np.asarray(theta, dtype=float)
        if self._last is not None and np.array_equal(self._last[0], theta) and (
                self._last[1][2] is not None or not em_step_wanted or not self.em):
            kept_value, kept_grad, kept_em = self._last[1]  # the check starts where the optimizer stopped
            return kept_value, kept_grad.copy(), None if kept_em is None else kept_em.copy()
        value, f = self._evaluate(theta)
        grad = em = None
        if f is not None and self.exact:
            try:
                if self.keep and isinstance(f, Factor):
                    ml = self.method == "ML"
                    modes = spherical_modes(self.problem, f)
                    # ML's blocks are the post-fit's too, so its inverse may overwrite the factor's
                    # random rows (the post-fit still reads the X block after them); REML's may not
                    blocks = inverse_blocks(self.problem, f, with_x=not ml, consume=ml)
                    Qs = balances_from(self.problem, f, self.method, blocks, modes)
                    self.kept = KeptPoint(theta.copy(), f, modes, blocks if ml else None)
                    grad = criterion_gradient(self.problem, f, self.method, self.whitened, Qs, self.derivatives)
                else:
                    Qs, grad = self._exact_gradient(f)
                if self.em and em_step_wanted:
                    em = em_step(self.problem, f, theta, Qs)
            except np.linalg.LinAlgError:
                grad = em = None
        if grad is None:  # near the boundary, a failed point or compound symmetry: differences
            grad = np.empty(theta.size)
            for j in range(theta.size):
                step = np.zeros(theta.size)
                step[j] = DIFF_STEP
                grad[j] = (self(theta + step) - value) / DIFF_STEP
        self._last = (theta.copy(), (value, grad.copy(), None if em is None else em.copy()))
        return value, grad, em

    def take_kept(self, theta: np.ndarray) -> KeptPoint | None:
        """The kept point if it is at theta (handed over once), else None."""
        kept, self.kept = self.kept, None
        return kept if kept is not None and np.array_equal(kept.theta, theta) else None

    def gradients_at(self, points: list[np.ndarray]) -> list[tuple[float, np.ndarray]]:
        """`value_and_gradient` at each point. For an expensive blocked model the points are
        evaluated two at a time (parallel.py: the same bits as one after the other); a point
        where the analytic gradient does not apply takes the serial route (differences)."""
        if not (self.problem.expensive and self.exact and not self.dense) or len(points) < 2:
            return [self.value_and_gradient(p) for p in points]
        self.kept = None
        found = map_evaluations(self._independent_first_order, [np.asarray(p, dtype=float) for p in points])
        self.evaluations += sum(r is not None for r in found)
        return [r if r is not None else self.value_and_gradient(p) for p, r in zip(points, found)]

    def _independent_first_order(self, theta: np.ndarray) -> tuple[float, np.ndarray] | None:
        """The criterion and its analytic gradient at theta without touching this object's state
        (safe on a worker thread); None where either fails."""
        try:
            f = factorize(self.problem, theta, self.whitened)
            value = objective_from(self.problem, f, self.method)
            if not np.isfinite(value):
                return None
            grad = self._exact_gradient(f)[1]
        except (FactorError, np.linalg.LinAlgError):
            return None
        return None if grad is None else (float(value), grad)

    def _exact_gradient(self, f: Factor | DenseFactor) -> tuple[list[np.ndarray], np.ndarray | None]:
        """The balances Q_k and the analytic gradient (None where it does not apply) from a factor
        nothing reads afterwards (its inverse may overwrite it)."""
        Qs = balances(self.problem, f, self.method, consume=True)
        return Qs, criterion_gradient(self.problem, f, self.method, self.whitened, Qs, self.derivatives)
