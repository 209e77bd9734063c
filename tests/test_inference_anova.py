"""Type III F tests, coefficient df, R2 and ICC against lmerTest 3.1.3 / pbkrtest 0.5.2 /
performance 0.10.2 on models with factors, covariates and their interactions
(tests/reference_inference/anova.json, made by make_inference_refs.R there). Compared at
lme4's own estimates (theta, sigma), so optimizer differences do not enter."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.design.build import build_design
from runner.fit import Convergence, Fit
from runner.formula import parse_formula
from runner.inference.anova import type3_contrasts, zapsmall
from runner.inference.apply import InferenceSettings, apply_inference
from runner.inference.state import state_at
from runner.inference.terms import structure_from_design
from runner.engines.lme.results import fixed_effects, variance_components
from runner.engines.lme.factor import raw_factors
from runner.engines.lme.solve import solve

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "tests" / "reference_inference"
REF = json.loads((HERE / "anova.json").read_text())


@cache
def frame(dataset: str) -> pd.DataFrame:
    local = HERE / f"{dataset}.csv"
    return pd.read_csv(local if local.exists() else ROOT / "runner" / "data" / "examples" / f"{dataset}.csv")


@cache
def case_fit(case: str) -> tuple[object, Fit]:
    """A Fit at lme4's estimates (the engine's post-fit code on lme4's theta and sigma)."""
    c = REF[case]
    design = build_design(parse_formula(c["formula"]), frame(c["dataset"]))
    st = state_at(design, np.atleast_1d(c["theta"]), c["sigma"], c["method"] == "REML")
    from runner.engines.lme.factor import factorize

    f = factorize(st.problem, st.theta)
    sol = solve(st.problem, f, raw_factors(st.problem, st.theta))
    inv = np.argsort([t.index for t in st.problem.terms])
    raw = raw_factors(st.problem, st.theta)
    fit = Fit(engine="lme", method=c["method"], formula=c["formula"], nobs=design.nobs, npar=0, ngroups={},
              theta=list(st.theta), theta_names=[], sigma=c["sigma"], loglik=0.0, objective=0.0, aic=0.0, bic=0.0,
              fixed_effects=fixed_effects(design, sol, c["sigma"] ** 2),
              random_effects=variance_components(design, [raw[i] for i in inv], c["sigma"] ** 2),
              converged=True, singular=False, convergence=Convergence(converged=True, optimizer="lme4"))
    return design, fit


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b != 0 else abs(a)


def check_rows(rows: list, refs: list) -> None:
    assert [r.term for r in rows] == [r["term"] for r in refs]
    for r, ref in zip(rows, refs):
        assert r.num_df == ref["num_df"]
        assert rel(r.den_df, ref["den_df"]) < 1e-3, (r.term, r.den_df, ref["den_df"])
        assert rel(r.F, ref["F"]) < 1e-4, (r.term, r.F, ref["F"])
        assert rel(r.p_value, ref["p_value"]) < 2e-3, (r.term, r.p_value, ref["p_value"])


@pytest.mark.parametrize("case", list(REF))
def test_type3_satterthwaite(case: str) -> None:
    design, fit = case_fit(case)
    out = apply_inference(design, fit, InferenceSettings())
    check_rows(out.anova, REF[case]["anova_satterthwaite"])
    for fe, ref in zip(out.fixed_effects, REF[case]["satterthwaite"], strict=True):
        assert fe.lme4_name == ref["term"]
        assert rel(fe.df, ref["df"]) < 1e-3
        assert rel(fe.p_value, ref["p_value"]) < 2e-3


@pytest.mark.parametrize("case", [c for c in REF if "anova_kenward_roger" in REF[c]])
def test_type3_kenward_roger(case: str) -> None:
    design, fit = case_fit(case)
    out = apply_inference(design, fit, InferenceSettings(df="kenward-roger"))
    assert out.p_method == "kenward-roger"
    check_rows(out.anova, REF[case]["anova_kenward_roger"])
    for fe, ref in zip(out.fixed_effects, REF[case]["kenward_roger"], strict=True):
        assert rel(fe.std_error_adjusted, ref["std_error"]) < 1e-3
        assert rel(fe.df, ref["df"]) < 1e-3
        assert rel(fe.p_value, ref["p_value"]) < 2e-3


@pytest.mark.parametrize("case", list(REF))
def test_r2_icc(case: str) -> None:
    design, fit = case_fit(case)
    out = apply_inference(design, fit, InferenceSettings(df="none"))
    r2, icc = REF[case]["r2_nakagawa"], REF[case]["icc"]
    assert rel(out.r2.marginal, r2["marginal"]) < 1e-3
    assert rel(out.r2.conditional, r2["conditional"]) < 1e-3
    assert rel(out.icc.adjusted, icc["adjusted"]) < 1e-3
    assert rel(out.icc.unadjusted, icc["unadjusted"]) < 1e-3


def test_type3_is_not_the_treatment_wald_test() -> None:
    """age's type III hypothesis in age * sex averages the slope over sex (SAS-style): its
    contrast puts weight 1/2 on age:sexM, unlike the Wald test of age's own column."""
    design, _ = case_fit("students_age_sex")
    L = type3_contrasts(structure_from_design(design), design.X)
    names = [c.lme4_name for c in design.fixed]
    row = L["age"][0] / L["age"][0][names.index("age")]
    assert row[names.index("age:sexM")] == pytest.approx(0.5)
    assert row[names.index("sexM")] == pytest.approx(0.0)


def test_zapsmall_as_r() -> None:
    assert zapsmall(np.array([1.0, 1e-9]))[1] == 0.0
    assert zapsmall(np.array([123.456789, 1e-5]))[1] == 0.0


@pytest.mark.parametrize("coding", ["contr.sum", "contr.helmert"])
def test_type3_is_coding_invariant(coding: str) -> None:
    """lmerTest maps its treatment-coded hypotheses to the model's coding: a sum- or
    Helmert-coded province gives lmerTest's treatment-coded table (at the same theta)."""
    c = REF["students_age_province"]
    f = f"test_score ~ age * C(province, {coding}) + sex + (1 | classroom) + (1 | school)"
    design = build_design(parse_formula(f), frame("students"))
    st = state_at(design, np.atleast_1d(c["theta"]), c["sigma"], True)
    from runner.inference.anova import anova_rows
    from runner.inference.satterthwaite import satterthwaite

    rows = anova_rows(type3_contrasts(structure_from_design(design), design.X), st.beta, satterthwaite(st))
    for r in rows:
        r.term = r.term.replace(f"C(province, {coding})", "province")
    check_rows(rows, c["anova_satterthwaite"])


@pytest.mark.slow
def test_satterthwaite_on_insteval_at_lme4_estimates() -> None:
    """73,421 rows, three crossed factors: lmerTest's df (insteval.json) through the blocked
    Cholesky, never an n x n matrix."""
    ref = json.loads((HERE / "insteval.json").read_text())
    data = pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    design = build_design(parse_formula(ref["formula"]), data)
    from runner.inference.satterthwaite import satterthwaite

    st = state_at(design, np.asarray(ref["theta"]), ref["sigma"], True)
    sat = satterthwaite(st)
    for j, (df, p) in enumerate(zip(ref["df"], ref["p"])):
        var, got = sat.contrast(np.eye(st.beta.size)[j])
        assert rel(got, df) < 1e-3
        from scipy import stats

        assert rel(float(2 * stats.t.sf(abs(st.beta[j]) / np.sqrt(var), got)), p) < 2e-3


@pytest.mark.parametrize("formula, theta, sigma, expected", [
    # lmerTest 3.1.3 anova(m, type = 3) on students_p1.csv: (term, NumDF, DenDF, F)
    ("test_score ~ poly(age, 2) * sex + (1 | classroom)", 0.45095285176, 10.1073135481,
     [("poly(age, 2)", 2, 1412.287068, 26.73949), ("sex", 1, 1419.806157, 32.53755),
      ("poly(age, 2):sex", 2, 1412.959794, 0.48620)]),
    ("test_score ~ poly(age, 2, raw = TRUE) * sex + (1 | classroom)", 0.450953101626, 10.107313465083,
     [("poly(age, 2, raw = TRUE)", 2, 1412.289371, 26.73949), ("sex", 1, 1412.062980, 0.30276),
      ("poly(age, 2, raw = TRUE):sex", 2, 1412.959181, 0.48620)]),
    ("test_score ~ scale(age) * sex + (1 | classroom)", 0.451257672067, 10.1043448873,
     [("scale(age)", 1, 1414.806892, 52.37411), ("sex", 1, 1421.804920, 32.49858),
      ("scale(age):sex", 1, 1415.882785, 0.84166)]),
])
def test_type3_with_matrix_variables(formula, theta, sigma, expected) -> None:
    from runner.inference.anova import anova_rows
    from runner.inference.satterthwaite import satterthwaite

    design = build_design(parse_formula(formula), frame("students_p1"))
    st = state_at(design, np.array([theta]), sigma, True)
    rows = anova_rows(type3_contrasts(structure_from_design(design), design.X), st.beta, satterthwaite(st))
    assert [(r.term, r.num_df) for r in rows] == [(t, q) for t, q, _, _ in expected]
    for r, (_, _, ddf, F) in zip(rows, expected):
        assert rel(r.den_df, ddf) < 1e-3 and rel(r.F, F) < 1e-4
