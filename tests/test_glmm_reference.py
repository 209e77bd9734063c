"""GLMM fits against lme4 1.1-31's glmer (tests/reference_glmm/: the shared glmm.json and
extra.json, made by its lme4_glmm.R; tight.json: the same fits with
glmerControl(tolPwrss = 1e-13)).

Acceptance (issue 13): logLik (nAGQ > 1: lme4's own value, `loglik_lme4`) at least glmer's
minus 1e-3, fixed effects within 2% of their SE, SEs within 1%, SDs within 0.5%.
SEs: glmer's default PIRLS stops at a relative change of 1e-7 and takes log|L| from the
weights of the step before, so its Laplace deviance carries a smooth bias of ~1e-4 that
its finite-difference Hessian (step 1e-4) magnifies. mixspec iterates PIRLS to
convergence: its SEs match glmer with tolPwrss = 1e-13 within 0.1% on every case, and
default glmer within 1% except the cases in DEFAULT_SE_EXCEPTIONS (measured there).
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest

from glmm_cases import CASES, ROOT, design, references
from runner.engines.lme.glmm_engine import fit_glmm
from runner.fit import Fit

# case -> (largest relative SE difference to default glmer allowed, why)
DEFAULT_SE_EXCEPTIONS = {
    "cbpp_prop": (0.015, "glmer's default PIRLS tolerance: 1.28% off; tolPwrss=1e-13 agrees with mixspec to 6e-6"),
    "cbpp_cbind": (0.015, "as cbpp_prop"),
    "grouse_pois": (None, "HEIGHT ~ 450 uncentred: glmer's difference Hessian in raw beta is noise (intercept SE "
                          "0.48 by default, 1.61 with tolPwrss=1e-13 and from R_X); mixspec 1.61"),
}


@cache
def fitted(case_id: str) -> Fit:
    _, _, _, _, family, link, nagq = CASES[case_id]
    return fit_glmm(design(case_id), family, link, nagq)


@cache
def tight() -> dict:
    return json.loads((ROOT / "tight.json").read_text())


def _fe(ref: dict) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([f["estimate"] for f in ref["fixed_effects"]]),
            np.array([f["std_error"] for f in ref["fixed_effects"]]))


def _sds(ref_or_fit) -> np.ndarray:
    if isinstance(ref_or_fit, Fit):
        return np.array([r.sd for r in ref_or_fit.random_effects if r.term2 is None])
    return np.array([r["sd"] for r in ref_or_fit["random_effects"] if "term2" not in r])


@pytest.mark.parametrize("case_id", list(CASES))
def test_matches_glmer(case_id: str) -> None:
    fit, ref = fitted(case_id), references()[case_id]
    nagq = CASES[case_id][6]
    ll = fit.loglik_lme4 if nagq > 1 else fit.loglik
    assert ll >= ref["loglik"] - 1e-3
    assert ll <= ref["loglik"] + 0.01  # not a different model
    est, se = _fe(ref)
    got = np.array([f.estimate for f in fit.fixed_effects])
    got_se = np.array([f.std_error for f in fit.fixed_effects])
    assert np.max(np.abs(got - est) / se) < 0.02
    assert np.max(np.abs(_sds(fit) / _sds(ref) - 1)) < 0.005
    tol, _why = DEFAULT_SE_EXCEPTIONS.get(case_id, (0.01, ""))
    if tol is not None:
        assert np.max(np.abs(got_se / se - 1)) < tol
    # against glmer with a converged PIRLS: everything tighter
    t = tight()[case_id]
    t_est, t_se = _fe(t)
    assert np.max(np.abs(got_se / t_se - 1)) < 0.002
    assert np.max(np.abs(got - t_est) / t_se) < 0.002
    assert abs(ll - t["loglik"]) < 1e-5
    assert fit.nobs == ref["nobs"] and fit.npar == ref["df"]
    assert fit.singular == ref["singular"]
    assert fit.converged
    assert fit.aic == pytest.approx(-2 * fit.loglik + 2 * fit.npar)


def test_agq_loglik_keeps_the_constants() -> None:
    """nagq > 1: `loglik` includes the saturated term lme4 1.1-31 drops, so it is comparable
    with the Laplace fit of the same model; `loglik_lme4` is glmer's value."""
    lap, agq = fitted("cbpp_prop"), fitted("cbpp_agq")
    assert agq.loglik_lme4 == pytest.approx(references()["cbpp_agq"]["loglik"], abs=1e-4)
    assert agq.loglik == pytest.approx(lap.loglik, abs=0.2)
    assert agq.loglik - agq.loglik_lme4 == pytest.approx(-42.0, abs=0.1)  # sum log p(y | mu = y)
    assert lap.loglik_lme4 is None
    assert agq.objective == pytest.approx(-2 * agq.loglik)


def test_records_family_link_and_vcov_method() -> None:
    fit = fitted("cbpp_probit")
    assert (fit.family, fit.link, fit.nagq, fit.method, fit.sigma) == ("binomial", "probit", 1, "ML", 1.0)
    assert fit.vcov_method == "hessian"
    assert fitted("cbpp_nagq0").vcov_method == "rx"
    assert fitted("grouse_pois").link == "log"
    assert all(r.group != "Residual" for r in fit.random_effects)
    assert fit.p_method == "wald-z"
    f0 = fit.fixed_effects[0]
    assert f0.p_value == pytest.approx(references()["cbpp_probit"]["fixed_effects"][0]["p_value"], rel=0.02)


def test_conditional_modes_and_sds() -> None:
    fit = fitted("bin_slopes")
    (blk,) = fit.arrays.ranef
    assert blk.modes.shape == (60, 2) and blk.cond_sd.shape == (60, 2)
    assert np.all(blk.cond_sd > 0) and np.all(blk.cond_sd < _sds(fit)[:, None].T * 1.0001)
    crossed = fitted("bin_crossed")
    assert [b.group for b in crossed.arrays.ranef] == ["subject", "item"]
    assert crossed.arrays.fitted.min() > 0 and crossed.arrays.fitted.max() < 1
    corr = [r.corr for r in fit.random_effects if r.term2 is not None]
    ref_corr = [r for r in references()["bin_slopes"]["random_effects"] if "term2" in r][0]["corr"]
    assert corr[0] == pytest.approx(ref_corr, abs=0.01)


@pytest.mark.parametrize("case_id", ["cbpp_prop", "bin_crossed", "bin_slopes", "pois_agq"])
def test_conditional_modes_match_ranef(case_id: str) -> None:
    """ranef(m, condVar = TRUE) of glmer (tests/reference_glmm/lme4_ranef.R -> ranef.json)."""
    ref = json.loads((ROOT / "ranef.json").read_text())[case_id]
    fit = fitted(case_id)
    assert [b.group for b in fit.arrays.ranef] == [r["group"] for r in ref]
    for blk, r in zip(fit.arrays.ranef, ref):
        assert blk.columns == ([r["columns"]] if isinstance(r["columns"], str) else r["columns"])
        assert sorted(blk.levels) == sorted(r["levels"])  # R sorts herd 1..15 numerically, mixspec as text
        order = [r["levels"].index(level) for level in blk.levels]
        modes = np.asarray(r["modes"], dtype=float).reshape(blk.modes.shape)[order]
        sds = np.asarray(r["cond_sd"], dtype=float)
        sds = (sds.T.reshape(blk.cond_sd.shape) if sds.shape[0] == 1 else sds.reshape(blk.cond_sd.shape))[order]
        assert np.max(np.abs(blk.modes - modes) / sds) < 0.02
        assert np.max(np.abs(blk.cond_sd / sds - 1)) < 0.01
