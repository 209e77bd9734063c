"""The statsmodels engine against lme4 1.1-31 (tests/reference) and the native engine.

Every case of tests/reference/cases.tsv is either fitted by MixedLM and compared with
lme4's numbers, or refused with InexpressibleModel. BLUPs have no lme4 reference file,
so they are compared with the native engine, whose fits tests/test_lme_reference.py
checks against lme4. students_repeated(_ml) take ~30 s each in MixedLM: marked slow.
"""

from __future__ import annotations

import csv
import json
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.tools.sm_exceptions import ConvergenceWarning

import runner.engines.statsmodels.engine as sm_engine
from runner.design.build import build_design
from runner.design.model import Design
from runner.engines import fit_design
from runner.engines.statsmodels import DEFAULT_MAX_BYTES, InexpressibleModel, StatsmodelsEngine, translate
from runner.fit import Fit
from runner.formula import parse_formula

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "reference"

with open(REF / "cases.tsv", newline="") as fh:
    CASES = {c["id"]: c for c in csv.DictReader(fh, delimiter="\t")}

# What MixedLM cannot express, and the words its error must contain.
INEXPRESSIBLE = {
    "students_slopes": ["(age | classroom)", "correlated", "grouping factor", "'lme'"],
    "students_slopes_repeated_ml": ["(age | classroom)", "correlated", "grouping factor", "'lme'"],
    "insteval_crossed": ["GiB", "dense", "crossed", "'lme'"],  # dense all-rows group too large
}
SLOW = {"students_repeated", "students_repeated_ml"}  # ~30 s each in MixedLM (students_intercepts: ~1 s)
EXPRESSIBLE = [c for c in CASES if c not in INEXPRESSIBLE]


def _params(ids: list[str]) -> list:
    return [pytest.param(i, id=i, marks=[pytest.mark.slow] if i in SLOW else []) for i in ids]


@cache
def frame(dataset: str) -> pd.DataFrame:
    if dataset == "InstEval":
        return pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    return pd.read_csv(ROOT / "runner" / "data" / "examples" / f"{dataset}.csv")


def design_of(formula: str, dataset: str) -> Design:
    return build_design(parse_formula(formula), frame(dataset))


@cache
def case_design(case_id: str) -> Design:
    c = CASES[case_id]
    return design_of(c["formula"], c["dataset"])


@cache
def sm_fit(case_id: str) -> Fit:
    c = CASES[case_id]
    return fit_design(case_design(case_id), c["method"], engine="statsmodels", formula_text=c["formula"])


@cache
def lme_fit(case_id: str) -> Fit:
    c = CASES[case_id]
    return fit_design(case_design(case_id), c["method"], engine="lme", formula_text=c["formula"])


def reference(case_id: str) -> dict:
    return json.loads((REF / f"{case_id}.json").read_text())


def close(a: float, b: float, rel: float, abs_: float = 0.0) -> bool:
    return abs(a - b) <= max(rel * abs(b), abs_)


def test_every_reference_case_is_classified() -> None:
    assert set(EXPRESSIBLE) | set(INEXPRESSIBLE) == set(CASES)
    assert set(INEXPRESSIBLE) <= set(CASES)


# ------------------------------------------------------------------ against lme4


@pytest.mark.parametrize("case_id", _params(EXPRESSIBLE))
def test_objective_and_fixed_effects_match_lme4(case_id: str) -> None:
    ref, fit = reference(case_id), sm_fit(case_id)
    assert fit.engine == "statsmodels" and fit.method == CASES[case_id]["method"]
    assert fit.converged
    assert fit.objective == pytest.approx(ref["objective"], rel=1e-4)
    assert fit.objective <= ref["objective"] + 1e-4  # at lme4's optimum, not short of it
    assert fit.nobs == ref["nobs"] and fit.npar == ref["df"]
    assert fit.ngroups == ref["ngroups"] and list(fit.ngroups) == list(ref["ngroups"])
    assert fit.singular == ref["singular"]
    for mine, theirs in zip(fit.fixed_effects, ref["fixed_effects"], strict=True):
        assert mine.lme4_name == theirs["term"]
        assert close(mine.estimate, theirs["estimate"], 1e-4, 1e-4 * theirs["std_error"])
        assert close(mine.std_error, theirs["std_error"], 1e-3)


@pytest.mark.parametrize("case_id", _params(EXPRESSIBLE))
def test_loglik_aic_bic_as_lme4_computes_them(case_id: str) -> None:
    """statsmodels gives NaN AIC/BIC under REML; lme4 computes them from the REML logLik."""
    ref, fit = reference(case_id), sm_fit(case_id)
    # absolute tolerances: an npar off by one would move AIC by 2, BIC by log(n)
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-3)
    assert fit.objective == pytest.approx(-2 * fit.loglik, rel=1e-12)
    assert fit.aic == pytest.approx(ref["aic"], abs=1e-3)
    assert fit.bic == pytest.approx(ref["bic"], abs=1e-3)
    assert np.isfinite([fit.aic, fit.bic]).all()


@pytest.mark.parametrize("case_id", _params(EXPRESSIBLE))
def test_variance_components_named_and_valued_as_lme4(case_id: str) -> None:
    ref, fit = reference(case_id), sm_fit(case_id)
    sds = [r["sd"] for r in ref["random_effects"] if "sd" in r]
    assert len(fit.random_effects) == len(ref["random_effects"])
    for mine, theirs in zip(fit.random_effects, ref["random_effects"], strict=True):
        assert (mine.id, mine.term, mine.term2) == (theirs["group"], theirs["term"], theirs.get("term2"))
        if "sd" in theirs:
            assert close(mine.sd, theirs["sd"], 1e-3, 1e-4 * max(sds))
            assert close(mine.variance, theirs["variance"], 2e-3, (1e-4 * max(sds)) ** 2)
        else:
            assert abs(mine.corr - theirs["corr"]) <= 1e-3
            assert close(mine.covariance, theirs["covariance"], 2e-3, 1e-3 * max(sds) ** 2)
    assert close(fit.sigma, ref["sigma"], 1e-3)
    theta = np.atleast_1d(np.asarray(ref["theta"], dtype=float))
    assert len(fit.theta) == theta.size
    for mine, theirs in zip(fit.theta, theta):  # theta is relative: 1e-4 is lme4's singular tolerance
        assert close(mine, theirs, 1e-3, 1e-4 * max(float(np.max(np.abs(theta))), 1.0))


def test_sleepstudy_correlation_and_theta_names() -> None:
    fit, ref = sm_fit("sleepstudy_reml"), reference("sleepstudy_reml")
    corr = next(r for r in fit.random_effects if r.term2 is not None)
    assert (corr.id, corr.term, corr.term2) == ("Subject", "(Intercept)", "Days")
    assert corr.corr == pytest.approx(next(r["corr"] for r in ref["random_effects"] if "corr" in r), abs=1e-4)
    assert fit.theta_names == ["Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]


# ---------------------------------------------------------- against the native engine


@pytest.mark.parametrize("case_id", _params(EXPRESSIBLE))
def test_blups_and_fitted_values_match_native_engine(case_id: str) -> None:
    """Conditional modes (lme4's ranef) and their conditional SDs; lme4 itself is checked in test_lme_*."""
    mine, native = sm_fit(case_id), lme_fit(case_id)
    assert mine.arrays is not None and native.arrays is not None
    sigma = native.sigma
    assert len(mine.arrays.ranef) == len(native.arrays.ranef)
    for a, b in zip(mine.arrays.ranef, native.arrays.ranef, strict=True):
        assert (a.id, a.group, a.columns, a.levels) == (b.id, b.group, b.columns, b.levels)
        assert a.modes.shape == b.modes.shape
        scale = max(float(np.max(np.abs(b.modes))), sigma)
        assert np.max(np.abs(a.modes - b.modes)) <= 1e-4 * scale
        scale = max(float(np.max(b.cond_sd)), sigma)
        assert np.max(np.abs(a.cond_sd - b.cond_sd)) <= 1e-4 * scale
    assert np.max(np.abs(mine.arrays.fitted - native.arrays.fitted)) <= 1e-4 * sigma
    assert np.max(np.abs(mine.arrays.residuals - native.arrays.residuals)) <= 1e-4 * sigma


# ---------------------------------------------------------------- inexpressible


@pytest.mark.parametrize("case_id", ["students_slopes", "students_slopes_repeated_ml"])
def test_correlated_slope_below_top_level_is_refused(case_id: str) -> None:
    c = CASES[case_id]
    with pytest.raises(InexpressibleModel) as err:
        fit_design(case_design(case_id), c["method"], engine="statsmodels", formula_text=c["formula"])
    msg = str(err.value)
    for word in INEXPRESSIBLE[case_id]:
        assert word in msg
    assert "'classroom' lies below 'province'" in msg  # why
    assert "different model" in msg  # never a silent approximation


def test_insteval_crossed_refused_for_memory_without_fitting() -> None:
    design = case_design("insteval_crossed")
    with pytest.raises(InexpressibleModel) as err:
        translate(design)  # refuses before anything dense is built
    msg = str(err.value)
    for word in INEXPRESSIBLE["insteval_crossed"]:
        assert word in msg
    need = float(msg.split("about ")[1].split(" GiB")[0])
    assert need * 1024**3 > DEFAULT_MAX_BYTES
    assert "73421 rows" in msg


def test_memory_limit_is_a_parameter_with_estimate_in_message() -> None:
    design = case_design("penicillin_crossed")  # 144 rows x 30 effects in one all-rows group
    with pytest.raises(InexpressibleModel) as err:
        StatsmodelsEngine(max_bytes=10_000).fit(design, "REML")
    msg = str(err.value)
    assert "KiB of memory" in msg and "limit 9.8 KiB" in msg
    assert "144 rows x 30 random effects" in msg and "one all-rows group" in msg and "'lme'" in msg
    assert translate(design).estimated_bytes < DEFAULT_MAX_BYTES


def test_crossed_factors_with_correlated_slope_are_refused() -> None:
    design = design_of("Reaction ~ Days + (Days | Subject) + (1 | Days)", "sleepstudy")
    with pytest.raises(InexpressibleModel) as err:
        fit_design(design, "REML", engine="statsmodels")
    msg = str(err.value)
    assert "(Days | Subject)" in msg and "crossed" in msg and "all-rows group" in msg and "'lme'" in msg


def test_inexpressible_is_an_engine_error_and_a_value_error() -> None:
    from runner.engines import EngineError

    assert issubclass(InexpressibleModel, EngineError) and issubclass(InexpressibleModel, ValueError)


# ------------------------------------------------------------ crossed vs nested trap


def test_pastes_repeated_cask_labels_are_crossed_not_nested() -> None:
    """cask labels a, b, c recur in every batch: `(1|batch) + (1|cask)` is crossed (lme4's reading)."""
    crossed = design_of("strength ~ 1 + (1|batch) + (1|cask)", "Pastes")
    nested = case_design("pastes_nested")
    assert len(translate(crossed).group_rows) == 1  # one all-rows group: crossed
    assert len(translate(nested).group_rows) == 10  # one group per batch: nested
    mine = fit_design(crossed, "REML", engine="statsmodels")
    native = fit_design(crossed, "REML", engine="lme")
    assert mine.objective == pytest.approx(native.objective, abs=1e-6)
    assert list(mine.ngroups) == ["batch", "cask"] and mine.ngroups["cask"] == 3
    assert abs(mine.objective - reference("pastes_nested")["objective"]) > 10  # 301.47 vs 246.99


# ------------------------------------------------- (x||g), nesting as components


def _sleep_with_cohort(shift: float = 30.0) -> pd.DataFrame:
    """sleepstudy with Subject nested in 3 cohorts, shifted by `shift` ms per cohort (a real cohort variance)."""
    df = frame("sleepstudy").copy()
    subjects = sorted(df["Subject"].unique())
    cohort = df["Subject"].map({s: i % 3 for i, s in enumerate(subjects)})
    df["cohort"] = "c" + cohort.astype(str)
    df["Reaction"] = df["Reaction"] + shift * cohort
    return df


def test_zerocorr_on_top_factor_uses_diagonal_free_mask() -> None:
    plan = translate(case_design("sleepstudy_zerocorr_reml"))
    assert plan.k_re == 2 and plan.exog_vc is None
    cov_mask = plan.free.cov_re
    assert cov_mask[0, 1] == 0 and cov_mask[1, 0] == 0 and cov_mask[0, 0] == cov_mask[1, 1] == 1


def test_zerocorr_below_top_factor_as_variance_components() -> None:
    formula = "Reaction ~ Days + (1|cohort) + (Days||Subject)"
    design = build_design(parse_formula(formula), _sleep_with_cohort())
    plan = translate(design)
    assert len(plan.group_rows) == 3 and plan.k_re == 1  # cohort is the grouping factor
    assert plan.exog_vc is not None and len(plan.vc_slots) == 2  # (1|Subject) and (0+Days|Subject)
    mine = fit_design(design, "REML", engine="statsmodels")
    native = fit_design(design, "REML", engine="lme")
    assert mine.objective == pytest.approx(native.objective, rel=1e-7)
    for a, b in zip(mine.random_effects, native.random_effects, strict=True):
        assert (a.id, a.term) == (b.id, b.term)
        assert close(a.sd, b.sd, 1e-3, 1e-4 * native.sigma)


def test_diagonal_structure_below_top_factor_as_variance_components() -> None:
    formula = "Reaction ~ Days + (1|cohort) + diag(Days|Subject)"
    design = build_design(parse_formula(formula), _sleep_with_cohort())
    assert len(translate(design).vc_slots) == 2
    mine = fit_design(design, "ML", engine="statsmodels")
    native = fit_design(design, "ML", engine="lme")
    assert mine.objective == pytest.approx(native.objective, rel=1e-7)


def test_statsmodels_own_deviation_is_reported() -> None:
    """statsmodels' deviation, documented: an uncorrelated slope on a 3-level cohort under ML.
    MixedLM's gradient optimizers stop short and say so (its Powell fallback is not used for a
    diagonal structure, whose `free` mask Powell ignores); the native engine reaches lme4's
    optimum, which is lower. The fit says converged=False with its warnings."""
    design = build_design(parse_formula("Reaction ~ Days + (Days||cohort) + (1|Subject)"), _sleep_with_cohort(0.0))
    mine = fit_design(design, "ML", engine="statsmodels")
    native = fit_design(design, "ML", engine="lme")
    assert native.converged
    assert not mine.converged and "convergence" in {w.code for w in mine.warnings}
    assert native.objective < mine.objective < native.objective + 1e-1


def test_powell_reaches_a_zero_variance_where_gradient_optimizers_stall() -> None:
    """No cohort variance in the data: BFGS and CG stop short of the boundary (cohort SD 0.7
    instead of 0); statsmodels' Powell reaches the native engine's singular optimum and the fit
    says which optimizer it is from."""
    design = build_design(parse_formula("Reaction ~ Days + (1|cohort) + (Days||Subject)"), _sleep_with_cohort(0.0))
    mine = fit_design(design, "REML", engine="statsmodels")
    native = fit_design(design, "REML", engine="lme")
    assert native.singular and native.converged
    assert mine.converged and "optimizer" in {w.code for w in mine.warnings}
    assert mine.objective == pytest.approx(native.objective, abs=1e-5)


def test_powell_is_never_used_where_it_would_ignore_a_diagonal_structure() -> None:
    """statsmodels ignores `free` under Powell (it fitted a correlation into an (x||g) model):
    a returned covariance outside the diagonal pattern is an error, never a silent other model."""
    from types import SimpleNamespace

    from runner.engines.statsmodels.engine import _check_free_pattern
    from runner.engines.statsmodels.errors import EngineError

    plan = translate(case_design("sleepstudy_zerocorr_reml"))
    assert plan.free is not None
    _check_free_pattern(SimpleNamespace(cov_re=np.diag([3.0, 0.5])), plan)
    with pytest.raises(EngineError, match="diagonal structure excludes"):
        _check_free_pattern(SimpleNamespace(cov_re=np.array([[3.0, -0.15], [-0.15, 0.5]])), plan)


# ----------------------------------------------------------------------- warnings


def test_dyestuff2_boundary_becomes_fit_warnings() -> None:
    fit = sm_fit("dyestuff2_singular")
    codes = [w.code for w in fit.warnings]
    assert "boundary" in codes and "singular" in codes
    boundary = next(w for w in fit.warnings if w.code == "boundary")
    assert boundary.message.startswith("statsmodels:") and "scale of y" in boundary.message
    assert fit.singular and fit.theta[0] < 1e-4


def test_statsmodels_convergence_warning_becomes_fit_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("Gradient optimization failed, |grad| = 0.3", ConvergenceWarning, stacklevel=1)
        warnings.warn("Gradient optimization failed, |grad| = 0.3", ConvergenceWarning, stacklevel=1)  # deduplicated
        warnings.warn("The MLE may be on the boundary of the parameter space.", ConvergenceWarning, stacklevel=1)
        warnings.warn("Maximum Likelihood optimization failed to converge. Check mle_retvals", ConvergenceWarning, stacklevel=1)
    out = sm_engine._fit_warnings(caught)
    assert [w.code for w in out] == ["convergence", "boundary", "convergence"]
    assert out[0].message == "statsmodels: Gradient optimization failed, |grad| = 0.3"
    # MixedLM results have no mle_retvals: the pointer to it is dropped
    assert out[2].message == "statsmodels: Maximum Likelihood optimization failed to converge."


# ----------------------------------------------------------------------- pitfalls


class _SpyMixedLM(sm_engine.MixedLM):
    calls: list = []

    def __init__(self, endog, exog, groups, *args, **kwargs):
        type(self).calls.append(("init", (endog, exog, groups, *args), kwargs))
        super().__init__(endog, exog, groups, *args, **kwargs)

    def fit(self, *args, **kwargs):
        type(self).calls.append(("fit", args, kwargs))
        return super().fit(*args, **kwargs)


def test_mixedlm_gets_arrays_and_safe_options(monkeypatch) -> None:
    """No formulas (caller-namespace lookup, `0 +` vc trap), no pandas categories, no sparse, no lbfgs."""
    _SpyMixedLM.calls = []
    monkeypatch.setattr(sm_engine, "MixedLM", _SpyMixedLM)
    C = "a local named C broke statsmodels' C(...) in formulas"  # noqa: N806, F841
    fit = fit_design(case_design("pastes_nested"), "REML", engine="statsmodels")
    assert fit.objective == pytest.approx(reference("pastes_nested")["objective"], rel=1e-6)
    inits = [c for c in _SpyMixedLM.calls if c[0] == "init"]
    fits = [c for c in _SpyMixedLM.calls if c[0] == "fit"]
    assert inits and fits
    for _, args, kwargs in inits:
        for a in list(args) + list(kwargs.values()):
            assert not isinstance(a, (pd.DataFrame, pd.Series, str))
        vc = kwargs["exog_vc"]
        for mats in vc.mats:
            for m in mats:  # one indicator column per cask of the batch: no intercept column
                assert isinstance(m, np.ndarray) and m.shape[1] == 3
                assert np.all(m.sum(axis=1) == 1) and np.all(m.sum(axis=0) == 2)
    for _, _args, kwargs in fits:
        assert "use_sparse" not in kwargs
        methods = kwargs.get("method", [])
        assert "lbfgs" not in ([methods] if isinstance(methods, str) else methods)


def test_category_columns_give_the_same_fit() -> None:
    df = frame("Pastes").copy()
    for col in ("batch", "cask"):
        df[col] = df[col].astype("category")
    design = build_design(parse_formula(CASES["pastes_nested"]["formula"]), df)
    fit = fit_design(design, "REML", engine="statsmodels")
    assert fit.objective == pytest.approx(reference("pastes_nested")["objective"], rel=1e-6)


def test_variance_components_model_reports_standard_errors_without_bse_re() -> None:
    fit = sm_fit("pastes_nested")  # MixedLM's bse_re raises ValueError with variance components
    assert all(np.isfinite(fe.std_error) and fe.std_error > 0 for fe in fit.fixed_effects)
    assert fit.convergence.converged  # from `converged`: MixedLM results have no mle_retvals


def test_engine_refuses_unknown_method() -> None:
    with pytest.raises(ValueError, match="REML or ML"):
        StatsmodelsEngine().fit(case_design("dyestuff"), "MLE")
