"""The Python API's behaviour: inputs, errors, records, display, GLMM predictions, laziness."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import runner
from runner.data.errors import DataError
from runner.spec.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
SLEEP = pd.read_csv(ROOT / "runner" / "data" / "examples" / "sleepstudy.csv")
PASTES = pd.read_csv(ROOT / "runner" / "data" / "examples" / "Pastes.csv")
FORMULA = "Reaction ~ Days + (Days | Subject)"
REF = json.loads((ROOT / "tests" / "reference" / "sleepstudy_reml.json").read_text())


@pytest.fixture(scope="module")
def slopes() -> runner.FittedModel:
    return runner.fit(FORMULA, SLEEP)


def test_numbers_and_frames(slopes: runner.FittedModel) -> None:
    assert slopes.objective == pytest.approx(REF["objective"], abs=1e-6)
    assert slopes.loglik == pytest.approx(REF["loglik"], abs=1e-6)
    assert (slopes.aic, slopes.bic) == (pytest.approx(REF["aic"], abs=1e-6), pytest.approx(REF["bic"], abs=1e-6))
    assert slopes.nobs == 180 and slopes.converged and not slopes.singular
    assert slopes.sigma == pytest.approx(REF["sigma"], rel=1e-5)
    assert slopes.theta == pytest.approx(REF["theta"], abs=1e-4)
    fe = slopes.fixed_effects
    assert list(fe["lme4_name"]) == ["(Intercept)", "Days"]
    assert fe["std_error"].tolist() == pytest.approx([r["std_error"] for r in REF["fixed_effects"]], rel=1e-5)
    re_ = slopes.random_effects
    assert re_.loc[re_["group"] == "Residual", "variance"].item() == pytest.approx(REF["random_effects"][-1]["variance"],
                                                                                   rel=1e-5)
    assert slopes.residuals().add(slopes.fitted()).to_numpy() == pytest.approx(SLEEP["Reaction"].to_numpy())


def test_summary_is_laid_out_like_lme4(slopes: runner.FittedModel) -> None:
    text = slopes.summary()
    for line in ("Linear mixed model fit by REML ['lmerMod']", "Formula: Reaction ~ Days + (Days | Subject)",
                 "REML criterion at convergence: 1743.6", "Scaled residuals:", "Random effects:",
                 "Number of obs: 180, groups:  Subject, 18", "Fixed effects:", "Correlation of Fixed Effects:"):
        assert line in text
    assert " (Intercept)  251.405      6.825  36.838" in text
    assert " Days -0.138" in text  # lme4: Days -0.138
    assert repr(slopes) == text
    html = slopes._repr_html_()
    assert html.startswith("<div") and "251.405" in html and "<table" in html


def test_index_of_the_data_given_is_kept() -> None:
    data = SLEEP.set_index(pd.Index([f"r{i}" for i in range(len(SLEEP))]))
    data.loc["r5", "Reaction"] = np.nan  # dropped as a missing value
    m = runner.fit(FORMULA, data)
    assert m.nobs == 179 and "r5" not in m.fitted().index and m.fitted().index[0] == "r0"
    assert m.simulate(2, seed=1).index.equals(m.fitted().index)


def test_pyarrow_and_polars_inputs(slopes: runner.FittedModel) -> None:
    pa = pytest.importorskip("pyarrow")
    m = runner.fit(FORMULA, pa.Table.from_pandas(SLEEP))
    assert m.objective == slopes.objective
    class FakePolars:  # polars is optional: its conversion path is to_pandas(), checked without it
        __module__ = "polars.dataframe.frame"
        schema = None

        def to_pandas(self) -> pd.DataFrame:
            return SLEEP.copy()

    assert runner.fit(FORMULA, FakePolars()).objective == slopes.objective


def test_real_polars(slopes: runner.FittedModel) -> None:
    pl = pytest.importorskip("polars")
    m2 = runner.fit(FORMULA, pl.from_pandas(SLEEP))
    assert m2.objective == slopes.objective
    assert m2.predict(pl.from_pandas(SLEEP.head(3))).to_numpy() == pytest.approx(slopes.fitted().head(3).to_numpy())


def test_categorical_order_is_the_level_order() -> None:
    data = PASTES.assign(cask=pd.Categorical(PASTES["cask"], categories=["c", "a", "b"]))
    m = runner.fit("strength ~ cask + (1 | batch)", data)
    assert list(m.fixed_effects["lme4_name"]) == ["(Intercept)", "caska", "caskb"]
    same = runner.fit("strength ~ cask + (1 | batch)", PASTES, categorical={"cask": {"reference": "c"}})
    assert same.objective == pytest.approx(m.objective, abs=1e-10)
    pred = m.predict(pd.DataFrame({"cask": ["b"], "batch": ["A"]}))
    assert pred.item() == pytest.approx(same.predict(pd.DataFrame({"cask": ["b"], "batch": ["A"]})).item())


def test_weights_and_offset_as_values() -> None:
    w = np.linspace(0.5, 2.0, len(SLEEP))
    by_values = runner.fit(FORMULA, SLEEP, weights=w, offset=0.1 * SLEEP["Days"].to_numpy())
    by_column = runner.fit(FORMULA, SLEEP.assign(w=w, o=0.1 * SLEEP["Days"]), weights="w", offset="o")
    assert by_values.objective == by_column.objective
    new = pd.DataFrame({"Days": [3.0], "Subject": [308], "o": [0.3]})
    assert by_column.predict(new).item() == pytest.approx(
        by_column.coef @ [1, 3.0] + 0.3 + by_column.ranef()["Subject"].loc["308", "mode"] @ [1, 3.0])


def test_formula_error_has_the_caret() -> None:
    with pytest.raises(SpecError) as info:
        runner.fit("Reaction ~ Days + (Days | Subject", SLEEP)
    text = str(info.value)
    assert "<formula>:1:19: formula: '(' is never closed" in text and "^" in text


def test_column_error_has_did_you_mean() -> None:
    with pytest.raises(DataError, match="column 'Dayz' not in the data; did you mean 'Days'"):
        runner.fit("Reaction ~ Dayz + (1 | Subject)", SLEEP)


def test_option_errors() -> None:
    with pytest.raises(SpecError, match="method must be one of REML, ML, got 'REM'; did you mean 'REML'"):
        runner.fit(FORMULA, SLEEP, method="REM")
    with pytest.raises(SpecError, match="did you mean 'poisson'"):
        runner.fit(FORMULA, SLEEP, family="poison")
    with pytest.raises(SpecError, match="unknown key 'dff'; did you mean 'df'"):
        runner.fit(FORMULA, SLEEP, inference={"dff": "satterthwaite"})
    with pytest.raises(Exception, match="expected a pandas DataFrame"):
        runner.fit(FORMULA, [1, 2, 3])


def test_predict_missing_values_and_new_fixed_level(slopes: runner.FittedModel) -> None:
    new = pd.DataFrame({"Days": [1.0, np.nan, 2.0], "Subject": [308, 308, None]})
    pred = slopes.predict(new)
    assert np.isnan(pred.iloc[1]) and np.isfinite(pred.iloc[0])
    assert pred.iloc[2] == pytest.approx(slopes.coef @ [1, 2.0])  # a missing group: the population value
    m = runner.fit("strength ~ cask + (1 | batch)", PASTES)
    with pytest.raises(DataError, match="'d' of 'cask' was not in the fitted data"):
        m.predict(pd.DataFrame({"cask": ["d"], "batch": ["A"]}))
    with pytest.raises(DataError, match="column 'Days' not in the new data"):
        slopes.predict(pd.DataFrame({"Subject": [308]}))


def test_stateful_transforms_reuse_fitted_parameters() -> None:
    """scale() and poly() on new rows use the fitted rows' centre, scale and coefficients."""
    m = runner.fit("Reaction ~ scale(Days) + poly(Days, 2) + (1 | Subject)", SLEEP)
    rows = SLEEP.iloc[[0, 15, 77]]
    np.testing.assert_allclose(m.predict(rows.reset_index(drop=True)).to_numpy(), m.fitted().iloc[[0, 15, 77]],
                               rtol=1e-12)


def test_compare_ranks_and_tests() -> None:
    m1 = runner.fit("Reaction ~ Days + (1 | Subject)", SLEEP, name="intercept")
    m2 = runner.fit("Reaction ~ Days + (Days || Subject)", SLEEP, name="uncorrelated")
    m3 = runner.fit(FORMULA, SLEEP, name="slopes")
    c = runner.compare(m1, m2, m3)
    assert list(c.ranking.index) == ["uncorrelated", "slopes", "intercept"]
    assert c.ranking.loc["uncorrelated", "value"] == pytest.approx(1762.0033, abs=1e-3)  # README, lme4's anova
    first = c.tests.iloc[0]
    assert (first["small"], first["large"]) == ("intercept", "uncorrelated")
    assert first["chisq"] == pytest.approx(42.075, abs=1e-3)
    assert runner.compare(a=m1, b=m3).ranking.index.tolist() == ["b", "a"]


def test_confint_and_anova(slopes: runner.FittedModel) -> None:
    ci = slopes.confint()
    assert ci.loc["Days", "2.5 %"] == pytest.approx(7.437607, abs=1e-3)  # lme4 confint(method = "Wald")
    table = slopes.anova()
    assert table.loc["Days", "F"] == pytest.approx(45.8534, rel=1e-4)


def test_to_record_is_the_results_record(slopes: runner.FittedModel) -> None:
    record = slopes.to_record()
    assert record.status == "ok" and record.objective == slopes.objective
    assert record.ml_refit is not None and record.ml_refit.aic == pytest.approx(1763.9393, abs=1e-3)


def test_glmm_predictions_match_glmer() -> None:
    """cbpp binomial: glmer's predict(type = "link"/"response", allow.new.levels = TRUE) and
    re.form = NA. Tolerance 5e-5 relative: the GLMM engine's optimum differs from glmer's
    tight one by ~1e-5 in theta (tests/reference_glmm); the arithmetic is exact in LMMs."""
    ref = json.loads((ROOT / "tests" / "reference_api" / "glmm_cbpp_binomial.json").read_text())
    cbpp = pd.read_csv(ROOT / "tests" / "reference_glmm" / "data" / "cbpp.csv", dtype={"herd": str, "period": str})
    m = runner.fit("prop ~ period + (1 | herd)", cbpp.assign(prop=cbpp["incidence"] / cbpp["size"]),
                   family="binomial", weights="size")
    nd = pd.read_csv(ROOT / "tests" / "reference_api" / "cbpp_binomial_newdata.csv", dtype=str)
    np.testing.assert_allclose(m.predict(nd).to_numpy(), ref["predict_link"], rtol=5e-5)
    np.testing.assert_allclose(m.predict(nd, type="response").to_numpy(), ref["predict_response"], rtol=5e-5)
    np.testing.assert_allclose(m.predict(nd, type="response", random_effects=False).to_numpy(),
                               ref["predict_population_response"], rtol=5e-5)
    np.testing.assert_allclose(m.fitted().to_numpy(), ref["fitted"], rtol=5e-5)
    assert "Family: binomial  ( logit )" in m.summary()
    # simulate: the proportion of `size` trials per row, moments as glmer's simulate()
    sim = ref["simulate"]
    draws = m.simulate(sim["nsim"], seed=3).to_numpy()
    counts = draws * cbpp["size"].to_numpy()[:, None]
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)
    se = np.sqrt((np.asarray(sim["var"]) + draws.var(axis=1, ddof=1)) / sim["nsim"])
    assert np.abs((draws.mean(axis=1) - sim["mean"]) / se).max() < 5


def test_import_is_lazy() -> None:
    code = ("import sys, runner; assert callable(runner.fit) and callable(runner.run) and callable(runner.compare);"
            "heavy = [m for m in ('numpy', 'pandas', 'scipy', 'pydantic') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    # runner.fit is the runner/fit.py module made callable; it imports pydantic and numpy, not pandas/scipy
    assert "pandas" not in out.stdout and "scipy" not in out.stdout
    plain = subprocess.run([sys.executable, "-c", "import sys, runner; print('numpy' in sys.modules)"],
                           capture_output=True, text=True, check=True, cwd=ROOT)
    assert plain.stdout.strip() == "False"


def test_glmm_vcov_matches_glmer() -> None:
    """cbpp binomial: vcov() is glmer's (2 H^-1 of the Laplace deviance in (theta, beta)); against
    glmer with tolPwrss = 1e-13, since default glmer stops PIRLS early here (tests/reference_glmm)."""
    ref = json.loads((ROOT / "tests" / "reference_api" / "glmm_cbpp_vcov.json").read_text())
    cbpp = pd.read_csv(ROOT / "tests" / "reference_glmm" / "data" / "cbpp.csv", dtype={"herd": str, "period": str})
    m = runner.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    V = m.vcov()
    assert list(V.index) == ref["names"]
    np.testing.assert_allclose(V.to_numpy(), np.asarray(ref["vcov"]), rtol=2e-3)
    np.testing.assert_allclose(np.sqrt(np.diag(V.to_numpy())), m.fixed_effects["std_error"].to_numpy(), rtol=1e-12)
