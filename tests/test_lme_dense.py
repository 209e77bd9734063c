"""The dense evaluation of small models (runner/engines/lme/dense.py) against the blocked one.

Both factor the same scaled system; they must agree to rounding on the criterion and on
the gradient's balances Q_k, for every kind of term, whitened or not, ML and REML, with
prior weights and an offset. A fit through the dense path must reach lme4's optimum
(tests/reference) and the blocked path's to rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import runner.engines.lme.criterion as criterion_module
from runner.design.build import build_design
from runner.engines import fit_design
from runner.engines.lme.criterion import Criterion, objective_from
from runner.engines.lme.dense import dense_balances, dense_factorize, dense_size, use_dense
from runner.engines.lme.factor import FactorError, factorize
from runner.engines.lme.gradient import balances
from runner.engines.lme.structure import build_problem
from runner.formula import parse_formula

EXAMPLES = Path(__file__).resolve().parents[1] / "runner" / "data" / "examples"
REFERENCE = Path(__file__).resolve().parent / "reference"

CASES = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),  # unstructured 2 x 2, whitened
    ("sleepstudy", "Reaction ~ Days + (Days || Subject)"),  # two scalar terms
    ("Pastes", "strength ~ 1 + (1 | batch/cask)"),  # nested
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),  # crossed
    ("sleepstudy", "Reaction ~ Days + (Days | Subject) + (1 | Days)"),  # a vector term and a scalar one
    ("sleepstudy", "Reaction ~ Days + (1 + Days + I(Days^2) | Subject)"),  # 3 x 3 unstructured
]


def _problem(dataset: str, formula: str, weighted: bool = False):
    df = pd.read_csv(EXAMPLES / f"{dataset}.csv")
    design = build_design(parse_formula(formula), df)
    if weighted:  # prior weights and an offset change every Gram block
        rng = np.random.default_rng(7)
        design.weights = rng.uniform(0.5, 2.0, design.nobs)
        design.offset = rng.normal(0.0, 5.0, design.nobs)
    return design, build_problem(design)


def _points(problem, rng, count=3):
    for _ in range(count):
        free = problem.lower != 0  # off-diagonal entries of unstructured factors
        yield problem.start + np.where(free, rng.normal(0.0, 0.3, problem.start.size),
                                       rng.uniform(-0.5, 1.0, problem.start.size))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dataset,formula", CASES)
def test_dense_equals_blocked(dataset: str, formula: str, weighted: bool) -> None:
    _, problem = _problem(dataset, formula, weighted)
    assert use_dense(problem) or dense_size(problem) > 72
    rng = np.random.default_rng(11)
    checked = 0
    for theta in _points(problem, rng):
        for whitened in (False, True):
            try:
                blocked = factorize(problem, theta, whitened)
            except FactorError:
                continue
            dense = dense_factorize(problem, theta, whitened)
            for method in ("ML", "REML"):
                a, b = objective_from(problem, blocked, method), objective_from(problem, dense, method)
                assert b == pytest.approx(a, rel=1e-12, abs=1e-9)
                for Qa, Qb in zip(balances(problem, blocked, method), dense_balances(problem, dense, method)):
                    scale = max(1.0, float(np.abs(Qa).max()))
                    np.testing.assert_allclose(Qb / scale, Qa / scale, rtol=0, atol=1e-10)
                checked += 1
    assert checked >= 6


def test_dense_gradient_matches_differences() -> None:
    """The criterion's analytic gradient through the dense route against central differences."""
    _, problem = _problem("sleepstudy", "Reaction ~ Days + (Days | Subject) + (1 | Days)")
    crit = Criterion(problem, "REML", whitened=True)
    assert crit.dense
    theta = np.array([0.9, 0.1, 0.3, 0.4])
    _, grad = crit.value_and_gradient(theta)
    h = 1e-5
    numeric = [(crit(theta + h * e) - crit(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


def test_large_models_stay_blocked() -> None:
    """students_intercepts (hundreds of random effects) keeps the blocked evaluation."""
    df = pd.read_csv(EXAMPLES / "students.csv")
    design = build_design(parse_formula("test_score ~ age + sex + (1 | classroom) + (1 | school)"), df)
    problem = build_problem(design)
    assert dense_size(problem) > 120 and not use_dense(problem)
    assert not Criterion(problem, "REML").dense


def _reference(case: str) -> dict:
    return json.loads((REFERENCE / f"{case}.json").read_text())


@pytest.mark.parametrize("case,dataset,formula,method", [
    ("sleepstudy_reml", "sleepstudy", "Reaction ~ Days + (Days | Subject)", "REML"),
    ("sleepstudy_zerocorr_reml", "sleepstudy", "Reaction ~ Days + (Days || Subject)", "REML"),
    ("pastes_nested", "Pastes", "strength ~ 1 + (1 | batch/cask)", "REML"),
    ("penicillin_crossed", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", "REML"),
])
def test_dense_fit_reaches_lme4_and_blocked_optimum(case: str, dataset: str, formula: str, method: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    df = pd.read_csv(EXAMPLES / f"{dataset}.csv")
    dense = fit_design(build_design(parse_formula(formula), df), method, formula_text=formula)
    monkeypatch.setattr(criterion_module, "use_dense", lambda problem: False)
    blocked = fit_design(build_design(parse_formula(formula), df), method, formula_text=formula)
    ref = _reference(case)
    assert dense.converged and blocked.converged
    assert dense.objective == pytest.approx(ref["objective"], abs=1e-6)
    assert dense.objective == pytest.approx(blocked.objective, abs=1e-8)
    np.testing.assert_allclose(dense.theta, blocked.theta, atol=2e-5)


@pytest.mark.parametrize("dataset,formula", CASES)
def test_dense_solution_equals_blocked(dataset: str, formula: str) -> None:
    """beta, (R_X'R_X)^{-1}, modes and conditional variances at a theta from both factors."""
    from runner.engines.lme.dense import dense_solution
    from runner.engines.lme.factor import raw_factors
    from runner.engines.lme.solve import solve

    _, problem = _problem(dataset, formula, weighted=True)
    theta = next(_points(problem, np.random.default_rng(3), 1))
    raw = raw_factors(problem, theta)
    blocked = solve(problem, factorize(problem, theta), raw)
    dense = dense_solution(problem, dense_factorize(problem, theta), raw)
    np.testing.assert_allclose(dense.beta, blocked.beta, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dense.vcov_unscaled, blocked.vcov_unscaled, rtol=1e-10, atol=1e-14)
    for a, b in zip(dense.modes, blocked.modes):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    for a, b in zip(dense.cond_var, blocked.cond_var):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("dataset,formula", CASES)
def test_small_gram_equals_sparse_build(dataset: str, formula: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small model's Gram blocks from one dense W'W equal the sparse build's, and the update
    structure it defers is built on the first blocked factorization, with the same criterion."""
    import runner.engines.lme.structure as structure

    design, small = _problem(dataset, formula, weighted=True)
    assert small.update_pending
    monkeypatch.setattr(structure, "DENSE_BUILD_CELLS", 0)
    sparse = build_problem(design)
    assert not sparse.update_pending
    np.testing.assert_allclose(small.A11, sparse.A11, rtol=1e-13, atol=1e-9)
    np.testing.assert_allclose(small.A_t1.toarray(), sparse.A_t1.toarray(), rtol=1e-13, atol=1e-9)
    np.testing.assert_allclose(small.A_tt, sparse.A_tt, rtol=1e-13, atol=1e-9)
    theta = next(_points(small, np.random.default_rng(5), 1))
    a = objective_from(small, factorize(small, theta), "REML")
    assert not small.update_pending and small.S_eval.nnz == sparse.S_eval.nnz
    assert a == pytest.approx(objective_from(sparse, factorize(sparse, theta), "REML"), rel=1e-12)


def test_model_without_fixed_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    """`y ~ 0 + (1 | g)` (p = 0) through both routes: lme4 1.1-31 gives REML criterion 370.0789,
    theta 30.86147, sigma 49.5101 (lmer(Yield ~ 0 + (1|Batch), Dyestuff))."""
    df = pd.read_csv(EXAMPLES / "Dyestuff.csv")
    formula = "Yield ~ 0 + (1 | Batch)"
    fits = [fit_design(build_design(parse_formula(formula), df), "REML")]
    import runner.engines.lme.results as results_module

    monkeypatch.setattr(criterion_module, "use_dense", lambda problem: False)
    monkeypatch.setattr(results_module, "use_dense", lambda problem: False)
    fits.append(fit_design(build_design(parse_formula(formula), df), "REML"))
    for fit in fits:
        assert fit.converged and fit.fixed_effects == []
        assert fit.objective == pytest.approx(370.0789, abs=1e-4)
        assert fit.theta[0] == pytest.approx(30.86147, rel=1e-5)
        assert fit.sigma == pytest.approx(49.5101, rel=1e-5)
