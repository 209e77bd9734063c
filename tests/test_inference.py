"""Satterthwaite df, Wald t intervals, R2 and ICC against lmerTest 3.1.3 / performance 0.10.2
(tests/reference_inference/inference.json, made by /work/shared/tools/lme4_inference*.R)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from runner.design.build import build_design
from runner.engines import fit_design
from runner.fit import Fit
from runner.formula import parse_formula
from runner.inference.apply import InferenceSettings, apply_inference
from runner.inference.satterthwaite import fstat_ddf, satterthwaite
from runner.inference.state import state_at

ROOT = Path(__file__).resolve().parents[1]
REF = json.loads((ROOT / "tests" / "reference_inference" / "inference.json").read_text())
# lme4's default optimizer stopped early on students_slopes (tests/test_lme_reference.py):
# lmerTest's numbers are compared at lme4's own estimates there
AT_LME4 = {"students_slopes"}


@cache
def frame(dataset: str) -> pd.DataFrame:
    return pd.read_csv(ROOT / "runner" / "data" / "examples" / f"{dataset}.csv")


@cache
def design_fit(case: str) -> tuple[object, Fit]:
    c = REF[case]
    design = build_design(parse_formula(c["formula"]), frame(c["dataset"]))
    fit = fit_design(design, c["method"], formula_text=c["formula"])
    if case in AT_LME4:
        lme4 = json.loads((ROOT / "tests" / "reference" / f"{case}.json").read_text())
        fit = fit.model_copy(update=dict(theta=lme4["theta"], sigma=lme4["sigma"]))
    return design, fit


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b != 0 else abs(a)


@pytest.mark.parametrize("case", list(REF))
def test_satterthwaite_matches_lmertest(case: str) -> None:
    design, fit = design_fit(case)
    out = apply_inference(design, fit, InferenceSettings())
    assert out.p_method == "satterthwaite"
    for fe, ref in zip(out.fixed_effects, REF[case]["satterthwaite"], strict=True):
        assert fe.lme4_name == ref["term"]
        assert rel(fe.df, ref["df"]) < 1e-3, (fe.lme4_name, fe.df, ref["df"])
        assert rel(fe.p_value, ref["p_value"]) < 2e-3, (fe.lme4_name, fe.p_value, ref["p_value"])
        assert rel(fe.statistic, ref["t"]) < 1e-4
        q = stats.t.ppf(0.975, ref["df"])
        assert fe.ci_low == pytest.approx(ref["estimate"] - q * ref["std_error"], rel=1e-4)
        assert fe.ci_high == pytest.approx(ref["estimate"] + q * ref["std_error"], rel=1e-4)
    rows = {r.parameter: r for r in out.confint}
    for fe in out.fixed_effects:
        assert (rows[fe.lme4_name].low, rows[fe.lme4_name].high) == (fe.ci_low, fe.ci_high)


@pytest.mark.parametrize("case", list(REF))
def test_r2_icc_match_performance(case: str) -> None:
    design, fit = design_fit(case)
    out = apply_inference(design, fit, InferenceSettings(df="none"))
    r2, icc = REF[case]["r2_nakagawa"], REF[case]["icc"]
    assert out.r2.marginal == pytest.approx(r2["marginal"], rel=1e-3, abs=1e-9)
    assert out.r2.conditional == pytest.approx(r2["conditional"], rel=1e-3)
    assert out.icc.adjusted == pytest.approx(icc["adjusted"], rel=1e-3)
    assert out.icc.unadjusted == pytest.approx(icc["unadjusted"], rel=1e-3)


def test_df_none_is_wald_z_with_normal_intervals() -> None:
    design, fit = design_fit("sleepstudy_reml")
    out = apply_inference(design, fit, InferenceSettings(df="none", level=0.9))
    assert out.p_method == "wald-z"
    fe = out.fixed_effects[1]
    assert fe.df is None
    assert fe.ci_high == pytest.approx(fe.estimate + stats.norm.ppf(0.95) * fe.std_error, rel=1e-12)
    names = [r.parameter for r in out.confint]
    assert names == ["sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "sd_Days|Subject", "sigma",
                     "(Intercept)", "Days"]


def test_fstat_ddf_as_lmertest() -> None:
    assert fstat_ddf(np.array([7.5])) == 7.5
    assert fstat_ddf(np.array([10.0, 10.0])) == 10.0
    assert fstat_ddf(np.array([1.5, 30.0])) == 2.0
    E = 10 / 8 + 20 / 18
    assert fstat_ddf(np.array([10.0, 20.0])) == pytest.approx(2 * E / (E - 2))


def test_singular_fit_steps_through_zero() -> None:
    """Dyestuff2: theta = 0; the Hessian is taken through the boundary and the df stay finite."""
    design = build_design(parse_formula("Yield ~ 1 + (1 | Batch)"), frame("Dyestuff2"))
    fit = fit_design(design, "REML")
    assert fit.theta[0] == 0.0
    sat = satterthwaite(state_at(design, np.array(fit.theta), fit.sigma, True))
    var, df = sat.contrast(np.array([1.0]))
    # with theta = 0 the intercept's variance is sigma^2 / n: df = n - 1 = 29 (lmerTest: 29)
    assert df == pytest.approx(29.0, rel=1e-3)


KR_CASES = [c for c in REF if REF[c].get("kenward_roger")]


@pytest.mark.parametrize("case", KR_CASES)
def test_kenward_roger_matches_pbkrtest(case: str) -> None:
    design, fit = design_fit(case)
    out = apply_inference(design, fit, InferenceSettings(df="kenward-roger"))
    assert out.p_method == "kenward-roger"
    for fe, ref in zip(out.fixed_effects, REF[case]["kenward_roger"], strict=True):
        assert fe.lme4_name == ref["term"]
        assert rel(fe.std_error_adjusted, ref["std_error"]) < 1e-3
        assert rel(fe.df, ref["df"]) < 1e-3, (fe.lme4_name, fe.df, ref["df"])
        assert rel(fe.p_value, ref["p_value"]) < 2e-3, (fe.lme4_name, fe.p_value, ref["p_value"])


def test_kenward_roger_refusals() -> None:
    from runner.inference.apply import InferenceRefused, check_settings

    with pytest.raises(InferenceRefused, match="needs a REML fit"):
        check_settings(InferenceSettings(df="kenward-roger"), "ML", 180)
    with pytest.raises(InferenceRefused, match="above 10,000 rows"):
        check_settings(InferenceSettings(df="kenward-roger"), "REML", 11_520)
    check_settings(InferenceSettings(df="kenward-roger"), "REML", 10_000)
    check_settings(InferenceSettings(df="satterthwaite"), "ML", 11_520)


def test_kenward_roger_failure_falls_back_to_satterthwaite(monkeypatch) -> None:
    import runner.inference.kenward_roger as kr
    from runner.inference.state import InferenceError

    def broken(state):
        raise InferenceError("singular information matrix")

    monkeypatch.setattr(kr, "kenward_roger", broken)
    design, fit = design_fit("sleepstudy_reml")
    out = apply_inference(design, fit, InferenceSettings(df="kenward-roger"))
    assert out.p_method == "satterthwaite"
    assert any(w.message == "Unable to compute Kenward-Roger t-test: using Satterthwaite instead "
               "(singular information matrix)" for w in out.warnings)
    assert out.fixed_effects[1].std_error_adjusted is None
    assert rel(out.fixed_effects[1].df, REF["sleepstudy_reml"]["satterthwaite"][1]["df"]) < 1e-3


def test_prior_weights_satterthwaite_as_lmertest_kr_on_the_weighted_model() -> None:
    """sleepstudy with weights Days + 1. lmerTest: df 16.99742 and 16.99930 (at lme4's slightly
    different optimum). pbkrtest ignores prior weights (residual covariance sigma^2 I): 43.07 df;
    here KR is computed for the weighted model, whose balanced design gives 17 exactly."""
    data = frame("sleepstudy").assign(w=lambda d: d.Days + 1)
    design = build_design(parse_formula("Reaction ~ Days + (Days|Subject)"), data, weights="w")
    fit = fit_design(design, "REML")
    sat = apply_inference(design, fit, InferenceSettings())
    assert [fe.df for fe in sat.fixed_effects] == pytest.approx([16.99742195, 16.99929820], rel=1e-3)
    kr = apply_inference(design, fit, InferenceSettings(df="kenward-roger"))
    assert [fe.df for fe in kr.fixed_effects] == pytest.approx([17.0, 17.0], rel=1e-6)
    assert any("prior weights" in w.message for w in kr.warnings)


def test_correlation_of_a_zero_sd_is_undefined() -> None:
    from runner.inference import varpar

    design, fit = design_fit("sleepstudy_reml")
    st = state_at(design, np.array([0.0, 0.0, 0.2]), 25.0, True)
    v = varpar.to_sdcor(st.problem, st.theta, st.sigma)
    assert v[0] == 0.0 and np.isnan(v[1]) and v[2] == pytest.approx(5.0) and v[3] == 25.0
    theta, sigma = varpar.from_sdcor(st.problem, np.array([10.0, -0.5, 5.0, 25.0]))
    back = varpar.to_sdcor(st.problem, theta, sigma)
    assert back == pytest.approx([10.0, -0.5, 5.0, 25.0])


def test_statsmodels_fits_get_satterthwaite_too() -> None:
    design, _ = design_fit("sleepstudy_reml")
    fit = fit_design(design, "REML", engine="statsmodels")
    out = apply_inference(design, fit, InferenceSettings())
    assert out.p_method == "satterthwaite"
    for fe, ref in zip(out.fixed_effects, REF["sleepstudy_reml"]["satterthwaite"]):
        assert rel(fe.df, ref["df"]) < 1e-3


@pytest.mark.parametrize("dataset, formula, ses, dfs, anova", [
    # lmerTest 3.1.3 / pbkrtest 0.5.2: summary(m, ddf = "Kenward-Roger"), anova(m, type = 3, ddf = ...)
    ("Dyestuff2", "Yield ~ 1 + (1|Batch)", [0.678388031233], [5.0], None),  # singular: theta = 0
    ("Pastes", "strength ~ cask + (1|batch) + (1|batch:cask)", [1.034364603, 1.354717785, 1.354717785],
     [25.94867665, 18.0, 18.0], (2, 18.0, 0.56009, 0.5808)),
])
def test_kenward_roger_singular_and_nested(dataset, formula, ses, dfs, anova) -> None:
    design = build_design(parse_formula(formula), frame(dataset))
    out = apply_inference(design, fit_design(design, "REML"), InferenceSettings(df="kenward-roger"))
    assert out.p_method == "kenward-roger"
    assert [fe.std_error_adjusted for fe in out.fixed_effects] == pytest.approx(ses, rel=1e-3)
    assert [fe.df for fe in out.fixed_effects] == pytest.approx(dfs, rel=1e-3)
    if anova:
        row = out.anova[0]
        assert (row.num_df, row.den_df, row.F, row.p_value) == pytest.approx(anova, rel=1e-3)


def test_kenward_roger_refuses_a_model_too_large_for_its_dense_products(monkeypatch) -> None:
    """pbkrtest's q x q products: above MAX_RANDOM_EFFECTS the run says why and keeps
    Satterthwaite, instead of allocating ~6 q^2 doubles (an out-of-memory kill at a million rows)."""
    import runner.inference.kenward_roger as kr

    monkeypatch.setattr(kr, "MAX_RANDOM_EFFECTS", 30)  # sleepstudy (Days | Subject): q = 36
    design, fit = design_fit("sleepstudy_reml")
    out = apply_inference(design, fit, InferenceSettings(df="kenward-roger"))
    assert out.p_method == "satterthwaite"
    messages = [w.message for w in out.warnings if w.code == "kenward_roger"]
    assert len(messages) == 1 and "36 random effects (at most 30)" in messages[0]
    assert "use inference: {df: satterthwaite}" in messages[0]

