"""The native engine beyond the reference cases: a dense oracle, weights and offsets
against lme4 (tests/reference_extra, made by lme4_extra.R there), templates,
rank deficiency, BLUPs and determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.design.build import DesignError, build_design
from runner.design.checks import SCALE_MESSAGE
from runner.engines import EngineError, fit_design, get_engine
from runner.engines.lme.criterion import Criterion
from runner.engines.lme.factor import phi_to_theta, theta_to_phi
from runner.engines.lme.structure import build_problem
from runner.engines.lme.templates import Template
from runner.formula import parse_formula

ROOT = Path(__file__).resolve().parents[1]
EXTRA = ROOT / "tests" / "reference_extra"
EXAMPLES = ROOT / "runner" / "data" / "examples"


def sleepstudy() -> pd.DataFrame:
    d = pd.read_csv(EXAMPLES / "sleepstudy.csv")
    d["w"] = 1 + (d["Days"] % 3) / 2  # as tests/reference_extra/lme4_extra.R
    d["off"] = 2.0 * d["Days"]
    return d


def synthetic(n: int = 240, seed: int = 1) -> pd.DataFrame:
    """a nested in b (slope on b), c crossed with both, positive weights, an offset."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 40, n)
    b = a // 5  # 8 levels, a nested in b
    c = rng.integers(0, 5, n)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(size=40)[a] + rng.normal(size=8)[b] * (1 + x) + rng.normal(size=5)[c] \
        + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "a": a, "b": b, "c": c, "f": rng.choice(["u", "v", "w"], n),
                         "w": rng.uniform(0.5, 2.0, n), "off": rng.normal(size=n),
                         "d": b // 3})  # 3 levels, b nested in d (a chain a < b < d)


def dense_z_lambda(design, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense Z and Lambda(theta) built the obvious way (lme4 order), independent of the engine."""
    n = design.nobs
    Zs, Ls, k = [], [], 0
    for b in design.blocks:
        t = Template(b.covariance, b.ncols, b.group, tuple(b.column_names))
        T = t.factor(theta[k:k + t.ntheta])
        k += t.ntheta
        Z = np.zeros((n, b.nlevels * b.ncols))
        for a in range(b.ncols):
            Z[np.arange(n), b.codes * b.ncols + a] = b.X[:, a]
        Zs.append(Z)
        Ls.append(np.kron(np.eye(b.nlevels), T))
    Z = np.hstack(Zs)
    Lam = np.zeros((Z.shape[1], Z.shape[1]))
    o = 0
    for L in Ls:
        Lam[o:o + L.shape[0], o:o + L.shape[0]] = L
        o += L.shape[0]
    return Z, Lam


def dense_criterion(design, theta: np.ndarray, method: str) -> float:
    """Marginal likelihood of y ~ N(X beta, sigma^2 (Z Lambda Lambda' Z' + W^-1)), profiled."""
    n, p = design.X.shape
    w = np.ones(n) if design.weights is None else design.weights
    y = design.y - (0 if design.offset is None else design.offset)
    Z, Lam = dense_z_lambda(design, theta)
    V = Z @ Lam @ Lam.T @ Z.T + np.diag(1 / w)
    Vi = np.linalg.inv(V)
    XtViX = design.X.T @ Vi @ design.X
    beta = np.linalg.solve(XtViX, design.X.T @ Vi @ y)
    r = y - design.X @ beta
    r2 = r @ Vi @ r
    logdetV = np.linalg.slogdet(V)[1]
    if method == "ML":
        return logdetV + n * (1 + np.log(2 * np.pi * r2 / n))
    return logdetV + np.linalg.slogdet(XtViX)[1] + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p)))


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("formula,weights,offset", [
    ("y ~ x + (1|a) + (x|b) + (1|c)", None, None),
    ("y ~ x + f + (1|a) + (x|b) + (1|c)", "w", "off"),
    ("y ~ x + (x|a) + (1|c)", "w", None),
    ("y ~ x + (1|c) + homcs(0 + f|b) + diag(x|a)", None, "off"),
    # chains of nested stages (factored level by level) before a crossed dense remainder
    ("y ~ x + (1|a) + (x|b) + (1|d) + (1|f)", "w", None),
    ("y ~ x + f + (1|a) + (x|b) + (x|d)", None, "off"),
    ("y ~ x + (1|a) + (1|b) + (0 + x|b) + (x|d)", None, None),
])
def test_criterion_equals_dense_marginal_likelihood(formula, weights, offset, method) -> None:
    design = build_design(parse_formula(formula), synthetic(), weights=weights, offset=offset)
    problem = build_problem(design)
    crit = Criterion(problem, method)
    rng = np.random.default_rng(7)
    for _ in range(3):
        theta = problem.start + rng.uniform(-0.4, 0.6, problem.start.size)
        theta = np.maximum(theta, problem.lower)
        assert crit(theta) == pytest.approx(dense_criterion(design, theta, method), rel=1e-10, abs=1e-9)


@pytest.mark.parametrize("kind", ["weights", "offset"])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_weights_and_offset_match_lme4(kind: str, method: str) -> None:
    ref = json.loads((EXTRA / f"sleepstudy_{kind}_{method.lower()}.json").read_text())
    design = build_design(parse_formula(ref["formula"]), sleepstudy(),
                          weights="w" if kind == "weights" else None,
                          offset="off" if kind == "offset" else None)
    crit = Criterion(build_problem(design), method)
    assert crit(np.asarray(ref["theta"])) == pytest.approx(ref["objective"], rel=1e-8)
    fit = fit_design(design, method)
    assert fit.objective <= ref["objective"] + 1e-4
    for mine, theirs in zip(fit.fixed_effects, ref["fixed"], strict=True):
        assert abs(mine.estimate - theirs["estimate"]) <= 1e-3 * theirs["std_error"]
        assert mine.std_error == pytest.approx(theirs["std_error"], rel=1e-3)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)


def test_conditional_modes_and_sds_match_lme4() -> None:
    ref = json.loads((EXTRA / "sleepstudy_weights_reml.json").read_text())
    design = build_design(parse_formula(ref["formula"]), sleepstudy(), weights="w")
    fit = fit_design(design, "REML")
    block = fit.arrays.ranef[0]
    assert block.levels[:3] == ["308", "309", "310"]
    # the two optima differ by ~1e-5 in theta: compare on the scale of the conditional SDs (~12)
    np.testing.assert_allclose(block.modes[:3, 0], ref["ranef_first"], atol=1e-3 * 12)
    np.testing.assert_allclose(block.cond_sd[:3, 0], ref["condsd_first"], rtol=2e-3)


def test_conditional_sds_of_a_nested_second_term_match_dense() -> None:
    """Check cond. variances of every block against sigma^2 Lambda (Lambda'Z'WZ Lambda + I)^-1 Lambda'."""
    design = build_design(parse_formula("y ~ x + (1|a) + (x|b) + (1|c)"), synthetic())
    fit = fit_design(design, "REML")
    theta = np.asarray(fit.theta)
    Z, Lam = dense_z_lambda(design, theta)
    q = Z.shape[1]
    C = fit.sigma**2 * Lam @ np.linalg.inv(Lam.T @ Z.T @ Z @ Lam + np.eye(q)) @ Lam.T
    expected = np.sqrt(np.diag(C))
    got = np.concatenate([blk.cond_sd.ravel() for blk in fit.arrays.ranef])
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    # BLUPs: fitted values reproduce X beta + Z b
    beta = np.array([fe.estimate for fe in fit.fixed_effects])
    b = np.concatenate([blk.modes.ravel() for blk in fit.arrays.ranef])
    np.testing.assert_allclose(fit.arrays.fitted, design.X @ beta + Z @ b, rtol=1e-10, atol=1e-10)


def test_compound_symmetry_equals_intercepts_on_g_and_g_by_f() -> None:
    d = synthetic(seed=3)
    cs = fit_design(build_design(parse_formula("y ~ x + homcs(0 + f|b)"), d), "REML")
    nested = fit_design(build_design(parse_formula("y ~ x + (1|b) + (1|b:f)"), d), "REML")
    assert cs.objective == pytest.approx(nested.objective, abs=1e-6)
    assert cs.npar == nested.npar
    rows = {(r.term, r.term2): r for r in cs.random_effects if r.id == "b"}
    assert rows[("fu", "fv")].corr >= 0


def test_identity_template_has_one_parameter_and_equals_its_expansion() -> None:
    d = synthetic(seed=4)
    ident = fit_design(build_design(parse_formula("y ~ x + homdiag(0 + f|b)"), d), "ML")
    assert len(ident.theta) == 1
    sds = [r.sd for r in ident.random_effects if r.id == "b"]
    assert max(sds) - min(sds) < 1e-12
    # (0+f|b) with one shared variance: same as (1|b:f) since f's cells are independent
    cell = fit_design(build_design(parse_formula("y ~ x + (1|b:f)"), d), "ML")
    assert ident.objective == pytest.approx(cell.objective, abs=1e-6)


def test_rank_deficient_column_dropped_with_its_name() -> None:
    d = sleepstudy()
    d["Days2"] = 2 * d["Days"]
    design = build_design(parse_formula("Reaction ~ Days + Days2 + (1|Subject)"), d)
    assert design.dropped_fixed == ["Days2"]
    assert [c.lme4_name for c in design.fixed] == ["(Intercept)", "Days"]
    fit = fit_design(design, "ML")
    assert "rank_deficient" in {w.code for w in fit.warnings}
    assert fit.npar == 4


def test_scale_x_warning_as_lme4() -> None:
    d = sleepstudy()
    d["big"] = 1e5 * np.random.default_rng(3).normal(size=len(d))
    fit = fit_design(build_design(parse_formula("Reaction ~ Days + big + (1|Subject)"), d), "ML")
    assert [w.message for w in fit.warnings if w.code == "scale_x"] == [SCALE_MESSAGE]
    plain = fit_design(build_design(parse_formula("Reaction ~ Days + (1|Subject)"), d), "ML")
    assert "scale_x" not in {w.code for w in plain.warnings}


def test_one_level_per_row_is_not_identifiable() -> None:
    d = sleepstudy()
    d["row"] = np.arange(len(d))
    with pytest.raises(DesignError, match="not identifiable from the residual"):
        build_design(parse_formula("Reaction ~ Days + (1|row)"), d)


def test_a_response_the_fixed_effects_fit_exactly_is_an_error() -> None:
    """lme4 returns a REML criterion of -Inf with every SD 0 here; mixspec says why instead."""
    d = sleepstudy()
    d["const"] = 5.0
    d["line"] = 3.0 + 2.0 * d["Days"]
    with pytest.raises(DesignError, match="'const' is constant"):
        build_design(parse_formula("const ~ Days + (1|Subject)"), d)
    with pytest.raises(DesignError, match="'line' is an exact linear function of the fixed effects"):
        build_design(parse_formula("line ~ Days + (1|Subject)"), d)
    d["line"] += 1e-6 * np.sin(np.arange(len(d)))  # any residual at all: fitted as usual
    assert build_design(parse_formula("line ~ Days + (1|Subject)"), d).nobs == len(d)


@pytest.mark.parametrize("formula", ["y ~ x + (1|a) + (x|b) + (1|c)", "y ~ x + (x|a) + (1|c)",
                                     "y ~ x + (1|a) + (1|b) + (0 + x|b) + (x|d)"])
def test_whitened_parameters_give_the_same_criterion(formula: str) -> None:
    """The optimizer's whitened phi is a reparametrization: same criterion, exact round trip."""
    problem = build_problem(build_design(parse_formula(formula), synthetic()))
    assert any(t.precond is not None for t in problem.terms)
    rng = np.random.default_rng(5)
    for method in ("REML", "ML"):
        plain, white = Criterion(problem, method), Criterion(problem, method, whitened=True)
        for _ in range(3):
            theta = np.maximum(problem.start + rng.uniform(-0.4, 0.6, problem.start.size), problem.lower)
            phi = theta_to_phi(problem, theta)
            np.testing.assert_allclose(phi_to_theta(problem, phi), theta, rtol=1e-12, atol=1e-12)
            assert white(phi) == pytest.approx(plain(theta), rel=1e-12)


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days|Subject)", "Reaction ~ Days + (Days||Subject)"])
def test_both_optimizers_reach_the_same_optimum(formula: str) -> None:
    """L-BFGS-B on differences (cheap evaluations), on the analytic gradient and COBYQA
    (expensive ones, e.g. InstEval) agree."""
    from runner.engines.lme.optimize import Optimizer, minimize_theta

    problem = build_problem(build_design(parse_formula(formula), sleepstudy()))
    crit = Criterion(problem, "REML", whitened=True)
    lbfgs = minimize_theta(crit, problem.start, problem.lower, Optimizer.LBFGSB)
    before = crit.evaluations
    exact = minimize_theta(crit, problem.start, problem.lower, Optimizer.LBFGSB_EXACT)
    exact_evaluations = crit.evaluations - before
    cobyqa = minimize_theta(crit, problem.start, problem.lower, Optimizer.COBYQA)
    assert lbfgs.label == "L-BFGS-B (scipy)" and cobyqa.label == "COBYQA (scipy)"
    assert exact.label == "L-BFGS-B (scipy, analytic gradient)"
    assert exact_evaluations < 40  # differences would take (1 + ntheta) per step
    for other in (cobyqa, exact):
        assert lbfgs.value == pytest.approx(other.value, abs=1e-6)
        np.testing.assert_allclose(phi_to_theta(problem, lbfgs.theta), phi_to_theta(problem, other.theta),
                                   rtol=1e-3, atol=1e-4)


def test_early_stop_is_polished_by_cobyqa(monkeypatch) -> None:
    import runner.engines.lme.optimize as optimize

    ref = json.loads((ROOT / "tests" / "reference" / "sleepstudy_reml.json").read_text())
    monkeypatch.setattr(optimize, "LBFGS_FTOL", 1e-3)  # stops far from the optimum
    fit = fit_design(build_design(parse_formula("Reaction ~ Days + (Days|Subject)"), sleepstudy()), "REML")
    assert fit.convergence.optimizer == "L-BFGS-B (scipy, analytic gradient), then COBYQA (scipy)"
    assert fit.converged and fit.objective <= ref["objective"] + 1e-4


def test_deterministic_bit_identical() -> None:
    design = build_design(parse_formula("y ~ x + (1|a) + (x|b) + (1|c)"), synthetic())
    a, b = fit_design(design, "REML"), fit_design(design, "REML")
    assert a.theta == b.theta and a.objective == b.objective
    assert [f.estimate for f in a.fixed_effects] == [f.estimate for f in b.fixed_effects]


def test_few_levels_note_and_wald_p_values() -> None:
    fit = fit_design(build_design(parse_formula("Reaction ~ Days + (Days|Subject)"), sleepstudy()), "REML")
    assert fit.p_method == "wald-z"
    assert "few_levels" in {w.code for w in fit.warnings}
    days = fit.fixed_effects[1]
    assert days.statistic == pytest.approx(days.estimate / days.std_error)
    assert days.ci_low == pytest.approx(days.estimate - 1.959964 * days.std_error, rel=1e-6)
    assert 0 < days.p_value < 1e-6


def test_engine_dispatch() -> None:
    assert get_engine("auto").name == "lme"
    with pytest.raises(ValueError, match="unknown engine"):
        get_engine("nope")
    assert issubclass(EngineError, RuntimeError)


def test_non_syntactic_names_are_spelt_as_lme4_spells_them() -> None:
    """lme4 1.1-31: coefficients `my x` and `my f`b keep R's backticks; a lone backticked
    grouping factor is named without them ("sub ject"), an interaction keeps them."""
    d = sleepstudy().rename(columns={"Reaction": "reaction time", "Subject": "sub ject"})
    d["my x"] = d["Days"]
    d["my f"] = np.where(d["Days"] < 5, "early", "late")
    design = build_design(parse_formula("`reaction time` ~ `my x` + `my f` + (`my x` | `sub ject`)"), d)
    assert [c.lme4_name for c in design.fixed] == ["(Intercept)", "`my x`", "`my f`late"]
    assert [b.group for b in design.blocks] == ["sub ject"]
    assert design.blocks[0].column_names == ["(Intercept)", "`my x`"]


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_uncentred_calendar_year_slope_fits_as_the_centred_model(method: str) -> None:
    """(year | Subject) with year = 2000 + Days is the sleepstudy model reparametrized:
    same criterion optimum, same slope SD and residual. lme4 1.1-31 stops at REML 1786.45
    (singular) here; raw Gram matrices lost ~4 digits and the fit stopped 0.04 short."""
    d = sleepstudy()
    d["year"] = 2000.0 + d["Days"]
    centred = fit_design(build_design(parse_formula("Reaction ~ Days + (Days | Subject)"), d), method)
    year = fit_design(build_design(parse_formula("Reaction ~ year + (year | Subject)"), d), method)
    assert year.objective == pytest.approx(centred.objective, abs=1e-5)
    assert year.converged and not year.singular
    slope = {(r.term, r.term2): r for r in year.random_effects if r.id == "Subject"}
    slope_c = {(r.term, r.term2): r for r in centred.random_effects if r.id == "Subject"}
    assert slope[("year", None)].sd == pytest.approx(slope_c[("Days", None)].sd, rel=1e-3)  # the tolerance
    assert year.sigma == pytest.approx(centred.sigma, rel=1e-3)
    # the BLUPs of the slope are the same too (the intercepts move to year 0)
    ranef = {b.id: b for b in year.arrays.ranef}["Subject"].modes[:, 1]
    ranef_c = {b.id: b for b in centred.arrays.ranef}["Subject"].modes[:, 1]
    np.testing.assert_allclose(ranef, ranef_c, rtol=1e-3, atol=1e-3)


def test_compound_symmetry_on_one_column_is_refused() -> None:
    """One column has one variance: homcs would count a parameter the data cannot inform."""
    with pytest.raises(DesignError, match=r"compound symmetry needs at least 2"):
        build_design(parse_formula("Reaction ~ Days + (1|Subject) + homcs(0 + Days|Subject)"), sleepstudy())


def test_two_intercepts_on_one_factor_are_flagged_before_fitting() -> None:
    """(1|Subject) + (Days|Subject): two intercept variances, only their sum identified (lme4
    fits it and reports a degenerate Hessian). (Days||Subject) has no shared column."""
    d = sleepstudy()
    design = build_design(parse_formula("Reaction ~ Days + (1|Subject) + (Days|Subject)"), d)
    assert [(w.code, w.message) for w in design.warnings] == [(
        "design", "two terms on 'Subject' both have the column (Intercept) (Subject and Subject.1): only the "
        "sum of their variances is identifiable; write it in one term, e.g. (1 + x | Subject)")]
    fit = fit_design(design, "REML")
    assert "design" in {w.code for w in fit.warnings}
    assert build_design(parse_formula("Reaction ~ Days + (Days||Subject)"), d).warnings == []


@pytest.mark.parametrize(("case_id", "steps", "gain"), [
    # a quasi-Newton run stopped at an SD of 0 on a crossed 3-level factor; the minimum is off the edge
    ("crossed_three_levels_ml", ("EDGE_RESTART",), 3.9e-4),
    # stopped on a face where a factor slope's Cholesky pivot is 0: lifted, then polished in lme4's theta
    ("factor_slope_singular", ("FACE_RESTART", "FACE_POLISH"), 2.9e-4),
    # a crossed 3-column factor term: the first run stopped on a degenerate face 0.165 above the optimum
    ("crossed_factor_term_face", ("FACE_RESTART",), 0.165),
    ("crossed_factor_term_face2", ("FACE_RESTART",), 1.1),
    # L-BFGS-B on difference gradients stopped where lme4's gradient check fails: COBYQA polishes
    ("students_zerocorr_ml", ("COBYQA_POLISH",), 0.0),
])
def test_find_optimum_takes_each_step_where_the_first_run_stops_short(case_id: str, steps: tuple[str, ...],
                                                                     gain: float, monkeypatch) -> None:
    """Each step of the strategy, on the lme4 oracle case that needs it: the first run alone
    stops `gain` (criterion units) above the optimum find_optimum reaches, which matches lme4.
    The steps are those of L-BFGS-B on differences (the optimizer of compound-symmetry
    models); the analytic-gradient run reaches each of these optima too (next test)."""
    import test_lme_oracle as oracle

    import runner.engines.lme.optimize as optimize

    monkeypatch.setattr(optimize, "choose_optimizer", lambda problem: optimize.Optimizer.LBFGSB)
    problem = build_problem(oracle.design(case_id))
    method = oracle.CASES[case_id]["method"]
    first = optimize.minimize_theta(Criterion(problem, method, whitened=True), problem.start, problem.lower,
                                    optimize.Optimizer.LBFGSB)
    opt, check = optimize.find_optimum(problem, method)
    assert tuple(s.name for s in opt.steps) == steps
    assert first.value - opt.value >= gain * 0.9
    assert check.ok and opt.value == pytest.approx(oracle.reference(case_id)["objective"], abs=2e-6)
    assert opt.label == ", ".join([opt.optimizer.value, *(s.value for s in opt.steps)])


@pytest.mark.parametrize("case_id", ["crossed_three_levels_ml", "factor_slope_singular", "crossed_factor_term_face",
                                     "crossed_factor_term_face2", "students_zerocorr_ml"])
def test_analytic_gradient_run_reaches_the_hard_optima(case_id: str) -> None:
    """The default optimizer (EM steps, then L-BFGS-B on the analytic gradient) on the cases
    where difference gradients stop short: lme4's optimum, its singular flag, a passed check."""
    import test_lme_oracle as oracle

    from runner.engines.lme.optimize import Optimizer, choose_optimizer, find_optimum

    problem = build_problem(oracle.design(case_id))
    ref = oracle.reference(case_id)
    assert choose_optimizer(problem) is Optimizer.LBFGSB_EXACT
    opt, check = find_optimum(problem, oracle.CASES[case_id]["method"])
    assert check.ok and opt.value == pytest.approx(ref["objective"], abs=2e-6)
    assert opt.optimizer is Optimizer.LBFGSB_EXACT
    np.testing.assert_allclose(opt.theta, ref["theta"], atol=2e-4)


def test_design_warnings_keep_the_code_they_were_made_with() -> None:
    """lme4's check.scaleX and the rank-deficiency drop are coded where the design finds them."""
    d = sleepstudy()
    d["big"] = d["Days"] * 1e6
    d["dup"] = 2.0 * d["Days"]
    design = build_design(parse_formula("Reaction ~ Days + big + dup + (1|Subject)"), d)
    codes = [w.code for w in design.warnings]
    assert codes.count("rank_deficient") == 1
    fit = fit_design(design, "REML")
    assert [w.code for w in fit.warnings][:len(codes)] == codes


def test_singular_fit_is_not_polished_for_a_gradient_test_lme4_skips() -> None:
    """A boundary fit whose difference gradient fails lme4's test is reported as lme4 reports it
    (singular: the test is skipped) without a COBYQA polish, which cost ~50 evaluations for
    gains below 1e-8 (71 singular synthetic fits); the optimum is the polish's to 1e-7."""
    from runner.engines.common import one_blas_thread
    from runner.engines.lme.optimize import Optimizer, Optimum, polish_with_cobyqa

    rng = np.random.default_rng(1)
    n, users, items, regions = 20000, 800, 300, 20
    region_of_user = rng.integers(regions, size=users)
    user, item = rng.integers(users, size=n), rng.integers(items, size=n)
    x = rng.normal(size=n)
    y = 10 + 0.5 * x + rng.normal(0, 0.6, regions)[region_of_user[user]] + rng.normal(0, 2.0, n)
    df = pd.DataFrame({"y": y, "x": x, "user": user.astype(str), "item": item.astype(str),
                       "region": region_of_user[user].astype(str)})
    design = build_design(parse_formula("y ~ x + (1 | user) + (1 | item) + (1 | region)"), df)
    fit = fit_design(design, "ML")
    assert fit.singular and fit.converged and "skipped" in fit.convergence.message
    assert "COBYQA" not in fit.convergence.optimizer and fit.convergence.evaluations < 45
    problem = build_problem(design)
    crit = Criterion(problem, "ML", whitened=True)
    with one_blas_thread():
        phi = theta_to_phi(problem, np.asarray(fit.theta))
        start = Optimum(theta=phi, value=crit(phi), success=True, message="", optimizer=Optimizer.LBFGSB_EXACT)
        polished = polish_with_cobyqa(crit, start, problem.lower)
    assert fit.objective <= polished.value + 1e-7
