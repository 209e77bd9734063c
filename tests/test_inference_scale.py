"""Satterthwaite's derivatives on expensive models (satterthwaite.py's gradient route):
central differences of the analytic gradient of lmerTest's deviance and of vcov(beta),
against the numDeriv route lmerTest itself takes (Richardson, four levels), and the
analytic gradient of that deviance against fourth-order differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import runner.inference.satterthwaite as sat
from runner.design.build import build_design
from runner.engines import fit_design
from runner.formula import parse_formula
from runner.inference.state import deviance_vp, deviance_vp_gradient, state_from_fit

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = "runner/data/examples"

CASES = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", "REML"),
    ("sleepstudy", "Reaction ~ Days + (Days || Subject)", "ML"),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", "REML"),
]


def _frame(name: str) -> pd.DataFrame:
    if name == "InstEval":
        return pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    return pd.read_csv(ROOT / EXAMPLES / f"{name}.csv")


def _state(name: str, formula: str, method: str):
    design = build_design(parse_formula(formula), pd.read_csv(ROOT / EXAMPLES / f"{name}.csv"))
    return state_from_fit(design, fit_design(design, method))


@pytest.mark.parametrize(("name", "formula", "method"), CASES)
def test_deviance_gradient_equals_differences(name: str, formula: str, method: str) -> None:
    st = _state(name, formula, method)
    x = st.varpar * 1.1
    g = deviance_vp_gradient(st.problem, x, st.reml)
    assert g is not None
    fd = np.empty(x.size)
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = 1e-3 * abs(x[j])
        f = [deviance_vp(st.problem, x + k * e, st.reml) for k in (2, 1, -1, -2)]
        fd[j] = (-f[0] + 8 * f[1] - 8 * f[2] + f[3]) / (12 * e[j])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7 * np.max(np.abs(fd)))


@pytest.mark.parametrize(("name", "formula", "method"), CASES)
def test_gradient_route_gives_numderivs_df(name: str, formula: str, method: str, monkeypatch) -> None:
    """The route large models take, forced on small ones: the same df and variances."""
    st = _state(name, formula, method)
    monkeypatch.setattr(sat, "_gradient_route", lambda state: False)
    slow = sat.satterthwaite(st)
    monkeypatch.setattr(sat, "_gradient_route", lambda state: True)
    fast = sat.satterthwaite(st)
    np.testing.assert_allclose(fast.vcov_varpar, slow.vcov_varpar, rtol=1e-5, atol=1e-9)
    for l in np.eye(st.beta.size):
        (v1, d1), (v2, d2) = fast.contrast(l), slow.contrast(l)
        assert v1 == pytest.approx(v2, rel=1e-12)
        assert d1 == pytest.approx(d2, rel=1e-5)


def test_route_is_chosen_by_cost_and_distance_from_the_boundary() -> None:
    st = _state("sleepstudy", "Reaction ~ Days + (Days | Subject)", "REML")
    assert not sat._gradient_route(st)  # a cheap model: lmerTest's own numDeriv route
    big = type("P", (), {"expensive": True, "lower": st.problem.lower})()
    assert sat._gradient_route(type("S", (), {"problem": big, "theta": st.theta})())
    edge = st.theta.copy()
    edge[0] = sat.EDGE / 2
    assert not sat._gradient_route(type("S", (), {"problem": big, "theta": edge})())


def test_inference_takes_over_the_problem_its_fit_built_once() -> None:
    """The engine hands its Problem to the inference step of the same design (a million rows:
    no second ~1 s set-up); once, and never to another design."""
    import runner.engines.lme.structure as structure

    frame = pd.read_csv(ROOT / EXAMPLES / "sleepstudy.csv")
    design = build_design(parse_formula("Reaction ~ Days + (Days | Subject)"), frame)
    fit = fit_design(design, "REML")
    kept = structure._HANDOVER.get("problem")
    assert kept is not None
    st = state_from_fit(design, fit)
    assert st.problem is kept and not structure._HANDOVER
    again = state_from_fit(design, fit)  # taken once: built anew, with the same numbers
    assert again.problem is not kept
    np.testing.assert_array_equal(again.problem.A_tt, kept.A_tt)
    np.testing.assert_allclose(again.vcov, st.vcov, rtol=0, atol=0)
    other = build_design(parse_formula("Reaction ~ Days + (Days | Subject)"), frame)
    fit_design(design, "REML")
    kept_again = structure._HANDOVER["problem"]
    assert state_from_fit(other, fit).problem is not kept_again  # another design object: built for it


@pytest.mark.parametrize("name,formula,method", [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", "REML"),  # dense small model
    ("InstEval", "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", "ML"),  # blocked, kept factor
])
def test_state_from_the_fits_own_beta_and_vcov_equals_a_factorization(name: str, formula: str, method: str) -> None:
    """Inference starts from the beta and vcov(beta) the engine computed at its optimum instead of
    factoring there again: the same numbers, bit for bit."""
    from runner.engines.common import one_blas_thread
    from runner.inference.state import state_at

    design = build_design(parse_formula(formula), _frame(name))
    fit = fit_design(design, method)
    assert fit.arrays is not None and fit.arrays.vcov_unscaled is not None
    from_fit = state_from_fit(design, fit)
    with one_blas_thread():  # as the engine and apply_inference factor
        factored = state_at(design, np.asarray(fit.theta), float(fit.sigma), method == "REML")
    np.testing.assert_array_equal(from_fit.beta, factored.beta)
    np.testing.assert_array_equal(from_fit.vcov, factored.vcov)

    # a Fit moved to another theta (the tests' lme4 estimates, a what-if) is factored there again
    moved = fit.model_copy(update=dict(theta=[t * 1.01 for t in fit.theta]))
    with one_blas_thread():
        again = state_from_fit(design, moved)
        expected = state_at(design, np.asarray(moved.theta), float(fit.sigma), method == "REML")
    np.testing.assert_array_equal(again.beta, expected.beta)
    assert not np.array_equal(again.beta, from_fit.beta)
