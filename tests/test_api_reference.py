"""runner.fit's predictions, conditional modes/SDs, vcov and simulate against lme4 1.1-31.

References: tests/reference_api/*.json, made by make_api_references.R (lme4 run to a tight
optimum). Two levels of checks: at mixspec's own optimum (what a user gets: predictions
within 1e-6 relative, conditional SDs within 1e-4 relative), and at lme4's theta, where
the API's arithmetic alone is tested (1e-6 absolute, free of where two optimizers stop).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import runner
from runner.api.vcov import at_theta
from runner.data.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "reference_api"
CASES = sorted(p.stem for p in REF.glob("*.json") if not p.stem.startswith("glmm_"))


def reference(case: str) -> dict:
    return json.loads((REF / f"{case}.json").read_text())


def newdata(case: str) -> pd.DataFrame:
    return pd.read_csv(REF / f"{case}_newdata.csv")


@cache
def model(case: str) -> runner.FittedModel:
    ref = reference(case)
    data = pd.read_csv(ROOT / "runner" / "data" / "examples" / f"{ref['dataset']}.csv")
    return runner.fit(ref["formula"], data, method=ref["method"])


@cache
def model_at_lme4_theta(case: str) -> runner.FittedModel:
    m = model(case)
    return runner.FittedModel(at_theta(m.context, m.fit, np.asarray(reference(case)["theta"], float)), m.context)


def ranef_long(m: runner.FittedModel) -> dict[tuple[str, str, str], tuple[float, float]]:
    out = {}
    for group, frame in m.ranef().items():
        for term in frame["mode"].columns:
            for level in frame.index:
                out[(group, term, level)] = (frame.loc[level, ("mode", term)], frame.loc[level, ("cond_sd", term)])
    return out


def test_cases_present() -> None:
    assert len(CASES) == 5


@pytest.mark.parametrize("case", CASES)
def test_optimum_matches(case: str) -> None:
    ref, m = reference(case), model(case)
    assert m.objective == pytest.approx(ref["objective"], abs=1e-6)
    assert m.theta == pytest.approx(np.atleast_1d(ref["theta"]), abs=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_predict_new_levels(case: str) -> None:
    ref, m = reference(case), model(case)
    got = m.predict(newdata(case)).to_numpy()
    np.testing.assert_allclose(got, ref["predict_new_levels"], rtol=1e-6, atol=0)
    exact = model_at_lme4_theta(case).predict(newdata(case)).to_numpy()
    np.testing.assert_allclose(exact, ref["predict_new_levels"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_predict_population(case: str) -> None:
    ref, m = reference(case), model(case)
    got = m.predict(newdata(case), random_effects=False).to_numpy()
    np.testing.assert_allclose(got, ref["predict_population"], rtol=1e-6, atol=0)
    exact = model_at_lme4_theta(case).predict(newdata(case), random_effects=False).to_numpy()
    np.testing.assert_allclose(exact, ref["predict_population"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_fitted_and_residuals(case: str) -> None:
    ref, m = reference(case), model(case)
    np.testing.assert_allclose(m.fitted().to_numpy(), ref["fitted"], rtol=1e-6)
    np.testing.assert_allclose(m.predict().to_numpy(), ref["fitted"], rtol=1e-6)
    exact = model_at_lme4_theta(case)
    np.testing.assert_allclose(exact.residuals().to_numpy(), ref["residuals"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_ranef_cond_var(case: str) -> None:
    ref = reference(case)
    for m, sd_rtol in ((model(case), 1e-4), (model_at_lme4_theta(case), 1e-7)):
        got = ranef_long(m)
        assert len(got) == len(ref["ranef"])
        for r in ref["ranef"]:
            mode, sd = got[(r["grpvar"], r["term"], r["grp"])]
            assert sd == pytest.approx(r["condsd"], rel=sd_rtol)
            assert mode == pytest.approx(r["condval"], abs=1e-6 if sd_rtol < 1e-4 else 1e-3)


@pytest.mark.parametrize("case", CASES)
def test_vcov(case: str) -> None:
    ref = reference(case)
    V = np.atleast_2d(np.asarray(ref["vcov"], float))
    np.testing.assert_allclose(model(case).vcov().to_numpy(), V, rtol=1e-4)
    np.testing.assert_allclose(model_at_lme4_theta(case).vcov().to_numpy(), V, rtol=1e-7)
    names = ref["beta_names"] if isinstance(ref["beta_names"], list) else [ref["beta_names"]]
    assert list(model(case).vcov().index) == names


@pytest.mark.parametrize("case", CASES)
def test_simulate_moments(case: str) -> None:
    """Mean and variance of 4000 draws per row within Monte-Carlo error of lme4's exact
    moments (X beta; diag(Z Sigma Z') + sigma^2), like lme4's own simulate draws."""
    ref = reference(case)
    sim = ref["simulate"]
    draws = model_at_lme4_theta(case).simulate(sim["nsim"], seed=7).to_numpy()
    mean_exact, var_exact = np.asarray(sim["mean_exact"]), np.asarray(sim["var_exact"])
    n = sim["nsim"]
    z_mean = (draws.mean(axis=1) - mean_exact) / np.sqrt(var_exact / n)
    z_var = (draws.var(axis=1, ddof=1) - var_exact) / (var_exact * np.sqrt(2 / (n - 1)))
    # rows share random effects, so use the largest |z| and a bound of 5 standard errors
    assert np.abs(z_mean).max() < 5 and np.abs(z_var).max() < 5
    # lme4's own draws pass the same check (the reference moments are right)
    z_lme4 = (np.asarray(sim["mean"]) - mean_exact) / np.sqrt(var_exact / n)
    assert np.abs(z_lme4).max() < 5
    again = model_at_lme4_theta(case).simulate(3, seed=7).to_numpy()
    np.testing.assert_array_equal(again, model_at_lme4_theta(case).simulate(3, seed=7).to_numpy())


def test_new_levels_error_names_the_level() -> None:
    m = model("sleepstudy_slopes")
    with pytest.raises(DataError, match="'1000'.*'999'|'999'.*'1000'") as info:
        m.predict(newdata("sleepstudy_slopes"), new_levels="error")
    assert "Subject" in str(info.value)
    known = newdata("sleepstudy_slopes").query("Subject < 999")
    assert m.predict(known, new_levels="error").notna().all()


def test_nested_new_inner_level_keeps_outer_effect() -> None:
    """(1|batch/cask): batch A with a cask never seen gets A's effect and the population cask."""
    m = model("pastes_nested")
    pred = m.predict(pd.DataFrame({"batch": ["A", "Z"], "cask": ["z", "z"]})).to_numpy()
    batch_a = m.ranef()["batch"].loc["A", ("mode", "(Intercept)")]
    assert pred[0] == pytest.approx(m.coef["(Intercept)"] + batch_a, abs=1e-10)
    assert pred[1] == pytest.approx(m.coef["(Intercept)"], abs=1e-10)
