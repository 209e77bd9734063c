"""The analytic gradient of the profiled criterion (gradient.py), its EM step, and the
optimizer that uses them on expensive models (optimize.py's LBFGSB_EXACT).

The gradient is checked against fourth-order central differences of the criterion on
every kind of term (scalar crossed and nested, unstructured with and without whitening,
diagonal), ML and REML, with prior weights and an offset.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.design.build import build_design
from runner.engines.lme.criterion import Criterion
from runner.engines.lme.optimize import Optimizer, minimize_theta
from runner.engines.lme.structure import build_problem
from runner.formula import parse_formula
from test_lme_engine import sleepstudy, synthetic

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    ("Reaction ~ Days + (Days | Subject)", "sleep", None, None),
    ("Reaction ~ Days + (Days || Subject)", "sleep", "w", "off"),
    ("y ~ x + (1|a) + (x|b) + (1|c)", "synthetic", "w", "off"),
    ("y ~ x + (1|c) + (1|a) + (1|b)", "synthetic", None, None),
    ("y ~ x + (x||a) + (1|c)", "synthetic", "w", None),
]


def _problem(formula: str, data: str, weights: str | None, offset: str | None):
    frame = sleepstudy() if data == "sleep" else synthetic()
    return build_problem(build_design(parse_formula(formula), frame, weights=weights, offset=offset))


def _differences(crit: Criterion, theta: np.ndarray, h: float = 1e-3) -> np.ndarray:
    out = np.empty(theta.size)
    for j in range(theta.size):
        e = np.zeros(theta.size)
        e[j] = h
        out[j] = (-crit(theta + 2 * e) + 8 * crit(theta + e) - 8 * crit(theta - e) + crit(theta - 2 * e)) / (12 * h)
    return out


@pytest.mark.parametrize("method", ["ML", "REML"])
@pytest.mark.parametrize("whitened", [True, False])
@pytest.mark.parametrize(("formula", "data", "weights", "offset"), CASES)
def test_gradient_equals_differences(formula, data, weights, offset, method, whitened) -> None:
    problem = _problem(formula, data, weights, offset)
    crit = Criterion(problem, method, whitened=whitened)
    rng = np.random.default_rng(7)
    for _ in range(2):
        theta = problem.start + rng.uniform(-0.3, 0.3, problem.start.size)
        theta = np.where(problem.lower == 0, np.abs(theta) + 0.1, theta)
        value, grad, _ = crit.first_order(theta)
        assert value == pytest.approx(crit(theta), rel=1e-14)
        fd = _differences(crit, theta)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.max(np.abs(fd)))


@pytest.mark.parametrize("method", ["ML", "REML"])
@pytest.mark.parametrize(("formula", "data", "weights", "offset"), CASES)
def test_em_steps_never_increase_the_criterion(formula, data, weights, offset, method) -> None:
    """EM is monotone for its own likelihood (ML) and for REML's (with X in M): five steps
    from lme4's start go down every time, and the gradient is zero where they settle."""
    problem = _problem(formula, data, weights, offset)
    crit = Criterion(problem, method, whitened=True)
    theta, values = problem.start.copy(), []
    for _ in range(5):
        value, _, em = crit.first_order(theta)
        values.append(value)
        assert em is not None
        theta = em
    assert all(b <= a + 1e-9 for a, b in zip(values, values[1:]))
    assert values[-1] < values[0]


def test_gradient_refuses_near_the_boundary_and_differences_instead() -> None:
    """At a relative SD near 0 the formula's l I - C cancels: forward differences are used."""
    problem = _problem("y ~ x + (1|c) + (1|a) + (1|b)", "synthetic", None, None)
    crit = Criterion(problem, "REML", whitened=True)
    theta = np.array([1e-6, 0.5, 0.5])
    before = crit.evaluations
    _, grad, _ = crit.first_order(theta)
    assert crit.evaluations - before == 1 + theta.size  # differences: one evaluation per parameter
    assert abs(grad[0]) < 1e-2  # the criterion is even in a scalar SD: flat at 0 (slope ~ H * step)


def test_exact_optimizer_reaches_lme4s_optimum_on_insteval_in_few_evaluations() -> None:
    """InstEval (73,421 rows, 2,972 x 1,128 crossed): EM steps then L-BFGS-B on the analytic
    gradient reach lme4's REML criterion with under 20 evaluations of the criterion."""
    ref = json.loads((ROOT / "tests" / "reference" / "insteval_crossed.json").read_text())
    frame = pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    formula = "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"
    problem = build_problem(build_design(parse_formula(formula), frame))
    crit = Criterion(problem, "REML", whitened=True)
    opt = minimize_theta(crit, problem.start, problem.lower, Optimizer.LBFGSB_EXACT)
    assert opt.label == "L-BFGS-B (scipy, analytic gradient)"
    assert crit.evaluations < 20
    assert opt.value == pytest.approx(ref["objective"], abs=1e-6)
    lme4_theta = np.asarray(ref["theta"], dtype=float)
    np.testing.assert_allclose(opt.theta, lme4_theta, rtol=2e-4)


def test_analytic_convergence_check_agrees_with_deriv12_on_insteval() -> None:
    """Expensive models check convergence on the analytic gradient and differences of it:
    the same scaled gradient and Hessian as lme4's deriv12 on the criterion, within the
    latter's own difference error."""
    from runner.engines.lme.convergence import check_convergence
    from runner.engines.lme.optimize import _analytic_check, find_optimum

    ref = json.loads((ROOT / "tests" / "reference" / "insteval_crossed.json").read_text())
    frame = pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    problem = build_problem(build_design(parse_formula(ref["formula"]), frame))
    opt, check = find_optimum(problem, "REML")
    assert check.ok and check.hessian_min_eigenvalue is not None
    crit = Criterion(problem, "REML", whitened=True)
    phi = np.asarray(opt.theta)  # no whitened terms here: phi == theta
    analytic = _analytic_check(crit, phi, problem.lower)
    fd = check_convergence(crit, phi, crit(phi), problem.lower, singular=False)
    assert analytic.ok and fd.ok
    # forward differences of the gradient (step 1e-4 on a theta of 0.09): ~1e-3 relative error
    assert analytic.hessian_min_eigenvalue == pytest.approx(fd.hessian_min_eigenvalue, rel=5e-3)
    assert analytic.max_abs_gradient == pytest.approx(fd.max_abs_gradient, rel=0.05, abs=1e-5)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_post_fit_numbers_from_the_optimizers_last_factor_equal_a_fresh_factorization(method) -> None:
    """On an expensive model without whitened terms the optimizer keeps its last factor (and,
    under ML, the gradient's inverse blocks) for the post-fit numbers: they must equal, bit
    for bit, those of a new factorization at the same theta, which the fit used before."""
    from runner.engines.common import one_blas_thread
    from runner.engines.lme.optimize import find_optimum
    from runner.engines.lme.results import estimates_at

    frame = pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    design = build_design(parse_formula("y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"), frame)
    problem = build_problem(design)
    assert problem.expensive
    with one_blas_thread():  # as the engine runs it (estimates_at always uses one thread)
        opt, check = find_optimum(problem, method)
    assert check.ok and opt.precomputed is not None
    kept = estimates_at(design, problem, opt.theta, method, opt.precomputed)
    fresh = estimates_at(design, problem, opt.theta, method)
    assert kept.objective == fresh.objective and kept.sigma2 == fresh.sigma2
    assert kept.fixed_effects == fresh.fixed_effects and kept.random_effects == fresh.random_effects
    for a, b in zip(kept.arrays.ranef, fresh.arrays.ranef):
        np.testing.assert_array_equal(a.modes, b.modes)
        np.testing.assert_array_equal(a.cond_sd, b.cond_sd)
    np.testing.assert_array_equal(kept.arrays.fitted, fresh.arrays.fitted)


def test_moment_start_is_near_the_optimum_and_saves_evaluations(monkeypatch) -> None:
    """InstEval: ANOVA's moments from the Gram blocks start within 30% of lme4's theta, and the
    fit from there reaches lme4's REML criterion in fewer evaluations than from lme4's start."""
    import runner.engines.lme.optimize as optimize
    from runner.engines.common import one_blas_thread
    from runner.engines.lme.start import moment_start

    ref = json.loads((ROOT / "tests" / "reference" / "insteval_crossed.json").read_text())
    frame = pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    problem = build_problem(build_design(parse_formula(ref["formula"]), frame))
    start = moment_start(problem)
    assert start is not None
    np.testing.assert_allclose(start, ref["theta"], rtol=0.3)
    with one_blas_thread():
        moment, check = optimize.find_optimum(problem, "REML")
        monkeypatch.setattr(optimize, "moment_start", lambda problem: None)
        lme4_start, _ = optimize.find_optimum(problem, "REML")
    assert check.ok and moment.value == pytest.approx(ref["objective"], abs=1e-6)
    assert moment.evaluations < lme4_start.evaluations


def test_moment_start_applies_to_scalar_terms_only() -> None:
    from runner.engines.lme.start import moment_start

    students = pd.read_csv(ROOT / "runner" / "data" / "examples" / "students.csv")
    scalar = build_problem(build_design(parse_formula("test_score ~ age + (1 | classroom) + (1 | school)"), students))
    assert not scalar.update_pending and moment_start(scalar) is not None
    slope = build_problem(build_design(parse_formula("test_score ~ age + (age | classroom) + (1 | school)"), students))
    assert not slope.update_pending and moment_start(slope) is None  # a vector-valued (whitened) term


def test_newton_step_on_the_checks_hessian_finishes_a_fit_stopped_short() -> None:
    """Where lme4's gradient test fails at a positive definite Hessian (a quasi-Newton run that
    stopped on rounding noise), one Newton step on the analytic check's own gradient and
    Hessian reaches the optimum: InstEval from a point 1% off lme4's theta in two (find_optimum
    allows NEWTON_STEPS), the second on the first's Hessian."""
    from runner.engines.common import one_blas_thread
    from runner.engines.lme.optimize import Optimum, Step, _analytic_derivatives, _newton_step
    from runner.engines.lme.convergence import judge

    ref = json.loads((ROOT / "tests" / "reference" / "insteval_crossed.json").read_text())
    frame = pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    problem = build_problem(build_design(parse_formula(ref["formula"]), frame))
    crit = Criterion(problem, "REML", whitened=True)
    x = np.asarray(ref["theta"]) * 1.01
    with one_blas_thread():
        value = crit(x)
        derivatives = _analytic_derivatives(crit, x)
        before = judge(*derivatives, x, problem.lower)
        opt = Optimum(theta=x, value=value, success=True, message="", optimizer=Optimizer.LBFGSB_EXACT)
        first = _newton_step(crit, problem, "REML", opt, derivatives, keep=True)
        assert first is not None and not first[1].ok  # 1% off: max|grad| 0.65 -> 0.011
        stepped = _newton_step(crit, problem, "REML", first[0], first[3], keep=True)  # the Hessian kept
    assert not before.ok and before.hessian_min_eigenvalue > 0
    assert stepped is not None
    moved, check, precomputed, _ = stepped
    assert check.ok and moved.steps == (Step.NEWTON_STEP, Step.NEWTON_STEP)
    assert moved.value < value and moved.value == pytest.approx(ref["objective"], abs=1e-5)
    assert precomputed is not None and np.array_equal(precomputed.theta, moved.theta)
