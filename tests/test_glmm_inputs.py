"""GLMM bad inputs are clear errors (issue 13, item 1), and the engine's refusals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from glmm_cases import design
from runner.engines.base import EngineError, fit_design
from runner.engines.lme.families import make_family
from runner.engines.lme.glmm_engine import GlmmFitError, fit_glmm
from runner.design.glmm_response import (GlmmResponseError, from_cbind, from_factor, glmm_response,
                                              response_problems)


def test_proportion_without_weights() -> None:
    d = design("cbpp_prop")
    with pytest.raises(GlmmResponseError, match="proportion .* no `weights:`.*number of trials"):
        fit_glmm(replace(d, weights=None), "binomial")


def test_successes_not_whole() -> None:
    d = design("cbpp_prop")
    w = d.weights.copy()
    w[3] += 1  # 0/5 stays whole; pick a row with successes
    k = int(np.flatnonzero(d.y > 0)[0])
    w[k] = w[k] + 1
    with pytest.raises(GlmmResponseError, match=r"successes = 'prop' x weights is not a whole number \(row"):
        fit_glmm(replace(d, weights=w), "binomial")


def test_trials_not_whole() -> None:
    msgs = response_problems(np.array([0.0, 1.0]), np.array([2.5, 3.0]), "binomial")
    assert any("whole numbers" in m for m in msgs)


def test_binomial_counts_outside_0_1() -> None:
    msgs = response_problems(np.array([0.0, 3.0, 1.0]), None, "binomial", "TICKS")
    assert len(msgs) == 1 and "between 0 and 1" in msgs[0] and "cbind(successes, failures)" in msgs[0]
    assert "row 2" in msgs[0]


@pytest.mark.parametrize("value, what", [(-1.0, "non-negative"), (2.5, "whole-number")])
def test_poisson_count_errors(value: float, what: str) -> None:
    d = design("pois_offset")
    y = d.y.copy()
    y[4] = value
    with pytest.raises(GlmmResponseError, match=f"family poisson needs {what} counts.*row 5"):
        fit_glmm(replace(d, y=y), "poisson")


def test_negative_cbind_column() -> None:
    with pytest.raises(GlmmResponseError, match="cbind\\(\\): 'size - incidence' is negative in row 2"):
        from_cbind(np.array([1, 5, 2]), np.array([3, -1, 0]), ("incidence", "size - incidence"))
    with pytest.raises(GlmmResponseError, match="no trials"):
        from_cbind(np.array([0, 1]), np.array([0, 1]))
    y, n = from_cbind(np.array([2, 0]), np.array([1, 4]))
    assert list(y) == [2 / 3, 0.0] and list(n) == [3, 4]


def test_factor_response_levels() -> None:
    with pytest.raises(GlmmResponseError, match="exactly 2 levels; 'answer' has 3 \\('maybe', 'no', 'yes'\\)"):
        from_factor(pd.Series(["no", "yes", "maybe"]), name="answer")
    with pytest.raises(GlmmResponseError, match="exactly 2 levels; 'answer' has 1"):
        from_factor(pd.Series(["no", "no"]), levels=["no"], name="answer")
    y, success = from_factor(pd.Series(["no", "yes", "yes"]))
    assert success == "yes" and list(y) == [0, 1, 1]
    y, success = from_factor(pd.Series(["no", "yes"]), levels=["yes", "no"])  # pinned order
    assert success == "no" and list(y) == [1, 0]
    y, success = from_factor(pd.Series([True, False]))
    assert success == "True" and list(y) == [1, 0]


def test_nagq_needs_one_scalar_term() -> None:
    with pytest.raises(GlmmFitError, match="single, scalar random-effects term"):
        fit_glmm(design("bin_crossed"), "binomial", nagq=5)
    with pytest.raises(GlmmFitError, match="nagq must be between 0 and 100"):
        fit_glmm(design("cbpp_prop"), "binomial", nagq=101)


def test_unknown_family_and_link() -> None:
    with pytest.raises(ValueError,
                       match="link 'log' is not available for family binomial \\(choose logit, probit, cloglog\\)"):
        make_family("binomial", "log")
    with pytest.raises(ValueError, match="family 'gamma' has no GLMM engine"):
        make_family("gamma")


def test_statsmodels_refuses_glmm() -> None:
    with pytest.raises(EngineError, match="statsmodels cannot fit a GLMM.*use engine: lme"):
        fit_design(design("cbpp_prop"), "ML", engine="statsmodels", family="binomial")


def test_dispatch_fits_glmm_as_ml() -> None:
    fit = fit_design(design("cbpp_nagq0"), "REML", engine="auto", family="binomial", nagq=0)
    assert fit.method == "ML" and fit.family == "binomial" and fit.nagq == 0
    assert fit.loglik == pytest.approx(-92.0543465, abs=1e-4)  # glmer nAGQ = 0 (extra.json)


def test_glmm_response_keeps_lme4_representation() -> None:
    r = glmm_response(np.array([0.5, 0.0]), np.array([4.0, 2.0]), "binomial")
    assert list(r.y) == [0.5, 0.0] and list(r.wt) == [4.0, 2.0]
    r = glmm_response(np.array([0.0, 1.0]), None, "binomial")
    assert list(r.wt) == [1.0, 1.0]


def test_vcov_falls_back_to_rx_with_lme4s_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hessian whose beta block of 2 H^-1 is not positive definite: vcov from R_X, as lme4."""
    import runner.engines.lme.glmm_engine as ge

    real = ge._derivatives

    def indefinite(dev, x, fx):  # type: ignore[no-untyped-def]
        g, H = real(dev, x, fx)
        return g, -H

    monkeypatch.setattr(ge, "_derivatives", indefinite)
    fit = fit_glmm(design("cbpp_prop"), "binomial")
    assert fit.vcov_method == "rx"
    assert any(w.code == "vcov_rx" and "falling back to var-cov estimated from RX" in w.message for w in fit.warnings)
    # glmer's vcov(m, use.hessian = FALSE) on cbpp: 0.2278524 0.3053475 0.3260012 0.4287019
    se = [f.std_error for f in fit.fixed_effects]
    assert se == pytest.approx([0.2278524, 0.3053475, 0.3260012, 0.4287019], rel=2e-3)
