"""The pieces of the formula language against R: deparse, terms(), model.matrix coding, poly.

Numbers and names come from R (tests/reference_rformula/coding.R -> coding.json) or from
R sessions quoted in the cases; nothing here needs R to run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.design.build import DesignError, build_design
from runner.design.model_matrix import materialize, columns_of
from runner.formula import FormulaError, parse_formula, required_variables
from runner.formula.contrasts import contrast_matrix
from runner.formula.poly import poly_coefs, poly_predict
from runner.formula.rexpr import deparse, format_number, parse_expression
from runner.formula.rterms import expand

CODING = json.loads((Path(__file__).parent / "reference_rformula" / "coding.json").read_text())
FRAME = pd.DataFrame({
    "a": ["p", "q", "r"] * 4, "b": ["u"] * 6 + ["v"] * 6,
    "x": [1.5, 2, 3.25, 4, 5, 6.5, 7, 8, 9.5, 10, 11, 12.75],
    "n": [0.5, 10, 2, 1e5, 2, 0.5, 10, 2, 1e5, 2, 0.5, 10], "s": ["10", "2.5", "7"] * 4,
})


def matrix(rhs: str, frame: pd.DataFrame = FRAME):
    node = parse_expression(rhs)
    terms = expand(node, rhs)
    return terms, columns_of(terms, materialize(terms, frame, {}))


@pytest.mark.parametrize("case", CODING["cases"], ids=[c["formula"] for c in CODING["cases"]])
def test_model_matrix_coding_and_names_as_r(case: dict) -> None:
    terms, mm = matrix(case["formula"].lstrip("~ "))
    labels = [case["labels"]] if isinstance(case["labels"], str) else case["labels"]
    assert terms.labels == labels
    assert mm.names == case["columns"]
    np.testing.assert_allclose(mm.X, np.asarray(case["X"], dtype=float), rtol=1e-12, atol=1e-12)


# R: deparse(str2lang(text))
DEPARSE = [
    ("I(x**2)", "I(x^2)"), ("I(x*2)", "I(x * 2)"), ("I(x/2)", "I(x/2)"), ("log(x,base=2)", "log(x, base = 2)"),
    ("relevel(factor(x),ref='b')", 'relevel(factor(x), ref = "b")'), ("I(x>3)", "I(x > 3)"),
    ("I(x%%2)", "I(x%%2)"), ("I(x %in% y)", "I(x %in% y)"), ("I(-x^2)", "I(-x^2)"), ("I((x+1)^2)", "I((x + 1)^2)"),
    ("I(x*100000)", "I(x * 1e+05)"), ("I(x*10000)", "I(x * 10000)"), ("I(x*1e-10)", "I(x * 1e-10)"),
    ("I(!x)", "I(!x)"), ("I(x&y)", "I(x & y)"), ("I(x==2L)", "I(x == 2L)"), ("I(x - -1)", "I(x - -1)"),
    ("I(`a b`^2)", "I(`a b`^2)"), ("I(2^-1)", "I(2^-1)"), ("I(x<=3 | y)", "I(x <= 3 | y)"), ("I(1/3)", "I(1/3)"),
    ("I(x*123456789012)", "I(x * 123456789012)"), ("poly(x, 2, raw = TRUE)", "poly(x, 2, raw = TRUE)"),
]


@pytest.mark.parametrize(("text", "r"), DEPARSE)
def test_deparse_as_r(text: str, r: str) -> None:
    assert deparse(parse_expression(text)) == r


def test_numbers_as_r_as_character() -> None:
    assert [format_number(v) for v in (1, 2, 10, 0.5, 1e5, 1e4, 1 / 3, 1e-4, 1.5e20)] == [
        "1", "2", "10", "0.5", "1e+05", "10000", "0.333333333333333", "1e-04", "1.5e+20"]


# R: attr(terms(y ~ ...), "term.labels") and "intercept"
TERMS = [
    ("b + a:b", ["b", "b:a"], True), ("a:b + b", ["b", "a:b"], True),
    ("(a+b+c)^2 - a:b", ["a", "b", "c", "a:c", "b:c"], True), ("a/b", ["a", "a:b"], True),
    ("(a+b)/c", ["a", "b", "a:b:c"], True), ("a %in% b", ["a:b"], True), ("x^2", ["x"], True),
    ("c + a*b + offset(w)", ["c", "a", "b", "a:b"], True), ("-1 + a", ["a"], False), ("a - 1 + 1", ["a"], True),
    ("0 + a", ["a"], False), ("a + a", ["a"], True), ("a:a", ["a"], True),
    ("a + b*c", ["a", "b", "c", "b:c"], True), ("a*b + c:d*e", ["a", "b", "e", "a:b", "c:d", "c:d:e"], True),
    ("a:b^2", ["a:b"], True), ("a - b + b", ["a", "b"], True),
]


@pytest.mark.parametrize(("rhs", "labels", "intercept"), TERMS)
def test_terms_as_r(rhs: str, labels: list[str], intercept: bool) -> None:
    t = expand(parse_expression(rhs), rhs)
    assert (t.labels, t.intercept) == (labels, intercept)


def test_offset_is_not_a_term_and_power_outside_I_warns() -> None:
    t = expand(parse_expression("x^2 + offset(log(n))"), "")
    assert [deparse(o) for o in t.offsets] == ["log(n)"] and t.labels == ["x"]
    assert t.warnings == ("'x^2' in a formula means the term x (as in R), not a square; did you mean I(x^2)?",)


def test_poly_coefficients_and_prediction_as_r() -> None:
    p = CODING["poly"]
    alpha, norm2 = poly_coefs(np.asarray(p["x"]), 3)
    np.testing.assert_allclose(alpha, p["alpha"], rtol=1e-12)
    np.testing.assert_allclose(norm2, p["norm2"], rtol=1e-12)
    np.testing.assert_allclose(poly_predict(np.asarray(p["new"]), 3, alpha, norm2),
                               np.asarray(p["predicted"]), rtol=1e-10)


def test_contrast_matrices_as_r() -> None:
    np.testing.assert_allclose(contrast_matrix("poly", list("abcde"))[0], CODING["contr_poly5"], atol=1e-15)
    assert contrast_matrix("poly", list("abcde"))[1] == [".L", ".Q", ".C", "^4"]
    np.testing.assert_array_equal(contrast_matrix("helmert", list("abcd"))[0],
                                  [[-1, -1, -1], [1, -1, -1], [0, 2, -1], [0, 0, 3]])
    np.testing.assert_array_equal(contrast_matrix("sum", list("abc"))[0], [[1, 0], [0, 1], [-1, -1]])


def test_contrast_names_follow_how_c_was_called() -> None:
    """R: a contrast function gets the number of levels (numbered columns); a name in quotes,
    a short name or C(f) alone use the levels."""
    assert matrix("C(a, contr.treatment)")[1].names == ["(Intercept)", "C(a, contr.treatment)2",
                                                        "C(a, contr.treatment)3"]
    assert matrix("C(a, treatment)")[1].names == ["(Intercept)", "C(a, treatment)q", "C(a, treatment)r"]
    assert matrix("C(a)")[1].names == ["(Intercept)", "C(a)q", "C(a)r"]
    assert matrix("C(a, Treatment('r'))")[1].names == ["(Intercept)", 'C(a, Treatment("r"))p',
                                                      'C(a, Treatment("r"))q']


def test_python_spellings_are_aliases() -> None:
    X1 = matrix("np.log(x) + np.sqrt(x) + np.exp(x/10) + I(x**2)")[1].X
    X2 = matrix("log(x) + sqrt(x) + exp(x/10) + I(x^2)")[1].X
    np.testing.assert_array_equal(X1, X2)


def test_variables_are_columns_never_functions_or_contrasts() -> None:
    mf = parse_formula("log(y + 1) ~ C(a, contr.sum) + relevel(b, ref = 'v') + poly(x, 2, raw = TRUE) + "
                       "scale(n, center = TRUE) + I(x > 3 & TRUE) + offset(log(w)) + (0 + factor(z) | g)")
    assert required_variables(mf) == {"y", "a", "b", "x", "n", "w", "z", "g"}


STUDY = pd.DataFrame({"y": np.arange(12.0) ** 1.5, "x": [0.0, 1, 2, 3] * 3, "g": ["a", "b", "c"] * 4,
                      "k": [1, 2, 3, 4, 5, 6] * 2, "s": ["s1", "s2"] * 6})


@pytest.mark.parametrize(("formula", "message"), [
    ("y ~ log(x) + (1|g)", "term 'log(x)' gives NaN or infinite values at rows 1, 5, 9 (3 in all)"),
    ("y ~ sqrt(x - 2) + (1|g)", "term 'sqrt(x - 2)' gives NaN or infinite values at rows 1, 2, 5, 6, 9, ..."),
    ("y ~ x + (1|g)", None),
    ("cbind(y, k) ~ x + (1|g)", "needs `family: binomial`"),
    ("s ~ x + (1|g)", "is not numeric"),
    ("y ~ log(s) + (1|g)", "needs numbers, but its input is a factor"),
    ("y ~ relevel(s, ref = 'zz') + (1|g)", "'zz' is not a level"),
    ("y ~ poly(k, 6) + (1|g)", "the degree must be less than the number of distinct values (6)"),
])
def test_data_errors_name_the_term_and_rows(formula: str, message: str | None) -> None:
    if message is None:
        assert build_design(parse_formula(formula), STUDY).X.shape == (12, 2)
        return
    with pytest.raises(DesignError) as info:
        build_design(parse_formula(formula), STUDY)
    assert message in str(info.value)


@pytest.mark.parametrize(("formula", "message", "position"), [
    ("y ~ x + ns(x, 3) + (1|g)", "unknown function ns() in term 'ns(x, 3)': splines are not supported yet", 8),
    ("y ~ x + foo(x) + (1|g)", "supported: I(), log(x)", 8),
    ("y ~ . + (1|g)", "'.' (all other columns) needs the data", 4),
    ("y ~ x +\n  C(g, contr.bogus) + (1|g)", "unknown contrast 'contr.bogus'", 15),
    ("y ~ x + I(x @ 2) + (1|g)", "unexpected character '@'", 12),
    ("y ~ log(x, bse = 2) + (1|g)", "log() has no argument 'bse' (allowed: base)", 4),
    ("y ~ x > 3 + (1|g)", "'>' is not a formula operator; to compute a value write it in I()", 6),
    ("y ~ log(offset(x)) + (1|g)", "offset() must stand alone as a term", 8),
    ("y ~ x + (cbind(x, y) | g)", "cbind() is only for a binomial response", 9),
])
def test_formula_errors_point_at_the_term(formula: str, message: str, position: int) -> None:
    with pytest.raises(FormulaError) as info:
        parse_formula(formula)
    assert message in info.value.message
    assert info.value.position == position


def test_state_is_plain_data_and_reused_on_new_rows() -> None:
    """scale() and poly() learned on the training rows give the same columns on new rows."""
    mf = parse_formula("y ~ scale(x) + poly(k, 2) + g + (1|s)")
    d = build_design(mf, STUDY)
    state = json.loads(json.dumps(d.formula_state))
    terms = expand(parse_expression(" + ".join(mf.fixed_terms)), "")
    new = STUDY.iloc[[3, 7]].reset_index(drop=True)
    X_new = columns_of(terms, materialize(terms, new, state, predict=True)).X
    np.testing.assert_allclose(X_new, d.X[[3, 7]], rtol=1e-12)


def test_on_new_rows_reuses_the_fit() -> None:
    """New rows get the fit's scale/poly parameters, factor coding and kept columns."""
    from runner.design.build import on_new_rows

    mf = parse_formula("y ~ scale(x) + poly(k, 2) + g + offset(log(k)) + (1 + g | s)")
    d = build_design(mf, STUDY)
    rows = [5, 0, 11]
    X, offset, blocks = on_new_rows(mf, d, STUDY.iloc[rows].reset_index(drop=True))
    np.testing.assert_allclose(X, d.X[rows], rtol=1e-12)
    np.testing.assert_allclose(offset, d.offset[rows], rtol=1e-12)
    np.testing.assert_allclose(blocks[0], d.blocks[0].X[rows], rtol=1e-12)
    with pytest.raises(DesignError, match="level zz not in the fitted data"):
        on_new_rows(mf, d, STUDY.iloc[[0]].assign(g="zz"))


def test_removal_between_terms_as_r() -> None:
    """R: y ~ a*b - a:b + x keeps a, b, x; the removal and the terms before it are one term."""
    mf = parse_formula("y ~ a*b - a:b + x + (1|g)")
    assert mf.fixed_terms == ("a * b - a:b", "x")
    from runner.design.build import fixed_terms
    from runner.formula import render

    assert fixed_terms(mf).labels == ["a", "b", "x"]
    assert parse_formula(render(mf)) == mf


def test_factor_levels_learned_on_all_rows_then_dropped_as_lme4() -> None:
    """factor(z) sees every filtered row (R's model.frame); levels only in rows dropped for
    missing values are then dropped (lme4's drop.unused.levels), and the state says so."""
    full = pd.DataFrame({"y": [1.0, 2, 3, 4, 5, 6, np.nan, 8], "z": [1, 2, 3, 1, 2, 3, 9, 1],
                         "g": ["a", "b"] * 4})
    kept = full.dropna().reset_index(drop=True)
    d = build_design(parse_formula("y ~ factor(z) + (1|g)"), kept, learn_frame=full)
    assert [c.lme4_name for c in d.fixed] == ["(Intercept)", "factor(z)2", "factor(z)3"]
    assert d.formula_state["factor(z)"] == {"levels": ["1", "2", "3", "9"]}
    assert d.formula_state["factors"]["factor(z)"]["levels"] == ["1", "2", "3"]


def test_membership_center_and_logical_columns() -> None:
    _, mm = matrix("I(a %in% c('p', 'q')) + center(x) + I(!(x > 4))")
    assert mm.names == ["(Intercept)", 'I(a %in% c("p", "q"))TRUE', "center(x)", "I(!(x > 4))TRUE"]
    np.testing.assert_array_equal(mm.X[:3, 1], [1, 1, 0])
    np.testing.assert_allclose(mm.X[:, 2], FRAME["x"] - FRAME["x"].mean())
    np.testing.assert_array_equal(mm.X[:4, 3], [1, 1, 1, 1 * (not 4 > 4)])


def test_power_in_a_random_term_warns_too() -> None:
    d = build_design(parse_formula("y ~ x + (x^2 | g)"), STUDY)
    assert any("did you mean I(x^2)?" in w.message for w in d.warnings)


def test_spec_contrast_key_and_learning_on_filtered_rows(tmp_path: Path) -> None:
    """data.categorical.<col>.contrast codes the column in every model; scale() is learned
    on the rows after the filter, before rows with a missing response are dropped."""
    from runner.validate import validate_spec

    d = pd.read_csv(Path(__file__).resolve().parents[1] / "runner" / "data" / "examples" / "sleepstudy.csv")
    d["half"] = np.where(d["Days"] < 5, "early", "late")
    d.loc[[0, 1, 2], "Reaction"] = np.nan
    d.to_csv(tmp_path / "s.csv", index=False)
    (tmp_path / "s.yaml").write_text(
        "data:\n  path: s.csv\n  filter: \"Days >= 1\"\n  categorical: {half: {contrast: sum}}\n"
        "models:\n  m: {formula: \"Reaction ~ half + scale(Days) + (1 | Subject)\"}\n")
    design = validate_spec(tmp_path / "s.yaml").designs["m"]
    assert [c.lme4_name for c in design.fixed] == ["(Intercept)", "half1", "scale(Days)"]
    np.testing.assert_array_equal(np.unique(design.X[:, 1]), [-1.0, 1.0])
    days = d.loc[d["Days"] >= 1, "Days"]  # 162 filtered rows, one of them with a missing response
    assert design.nobs == 160
    assert design.formula_state["scale(Days)"] == pytest.approx({"center": days.mean(), "scale": days.std()})


def test_variant_drops_an_interaction_out_of_a_crossing() -> None:
    from runner.formula import drop_terms

    mf = drop_terms(parse_formula("y ~ a*b + x + (1|g)"), ["a:b"])
    assert mf.fixed_terms == ("a * b + x - a:b",)
    from runner.design.build import fixed_terms

    assert fixed_terms(mf).labels == ["a", "b", "x"]
    with pytest.raises(ValueError, match="no such term"):
        drop_terms(parse_formula("y ~ a*b + (1|g)"), ["c"])


@pytest.mark.parametrize(("rhs", "message"), [
    ("(" + " + ".join(f"v{i}" for i in range(30)) + ")^30", "more than 10,000 terms"),
    ("*".join(f"v{i}" for i in range(20)), "more than 10,000 terms"),
])
def test_expansions_are_bounded(rhs: str, message: str) -> None:
    with pytest.raises(FormulaError, match=message):
        expand(parse_expression(rhs), rhs)


def test_power_beyond_the_variables_is_cheap_and_poly_degree_bounded() -> None:
    assert expand(parse_expression("(a + b)^1000"), "").labels == ["a", "b", "a:b"]
    with pytest.raises(DesignError, match="from 1 to 25"):
        build_design(parse_formula("y ~ poly(x, 1e9, raw = TRUE) + (1|g)"), STUDY)


def test_deep_or_huge_formulas_are_errors_or_fast() -> None:
    """Nesting beyond 100 levels is a FormulaError (never a RecursionError); thousands of terms are linear."""
    import time

    for text in ["y ~ " + "(" * 3000 + "x" + ")" * 3000 + " + (1|g)",
                 "y ~ I(" + "+".join(["x"] * 3000) + ") + (1|g)"]:
        with pytest.raises(FormulaError, match="nested more than 100 levels"):
            parse_formula(text)
    start = time.perf_counter()
    from runner.design.build import fixed_terms

    mf = parse_formula("y ~ " + " + ".join(f"x{i}" for i in range(3000)) + " + (1|g)")
    assert len(fixed_terms(mf).labels) == 3000
    assert time.perf_counter() - start < 5


def test_expect_reads_schema_1_names_against_r_names() -> None:
    """Schema 2 records carry R's names; a spec written for schema 1 still finds them."""
    from runner.compare.expectations import evaluate_expectations
    from runner.fit import FixedEffect
    from runner.results import SCHEMA_VERSION, ModelRecord
    from runner.spec.expect import parse_expectations

    assert SCHEMA_VERSION == 2
    fixed = [FixedEffect(term=n, lme4_name=n, estimate=v, std_error=1.0, statistic=v, p_value=0.5,
                         ci_low=v - 2, ci_high=v + 2)
             for n, v in {"(Intercept)": 1.0, "sexM": -2.0, "age:sexM": 0.5, "I(age^2)": 0.1}.items()]
    record = ModelRecord(status="ok", formula="y ~ ...", engine="lme", method="ML", converged=True,
                         singular=False, fixed_effects=fixed)
    exps = parse_expectations({"fixed": ["Intercept > 0", "sex[T.M] < -1.5", "age:sex[T.M] > 0",
                                         "I(age ** 2) > 0", "sexM < 0"]})
    got = [r.passed for r in evaluate_expectations(exps, {"m": record}, [])]
    assert got == [True, True, True, True, True]


def test_poly_default_degree_is_one() -> None:
    _, mm = matrix("poly(x)")
    _, one = matrix("poly(x, 1)")
    assert mm.names == ["(Intercept)", "poly(x)"]
    np.testing.assert_array_equal(mm.X, one.X)


def test_design_errors_point_at_the_term_as_written(tmp_path: Path) -> None:
    from runner.formula.rexpr import find_expression
    from runner.validate import validate_spec
    from runner.data.errors import DataError

    assert find_expression("y ~ x + I( x ** 2 ) + (1|g)", "I(x^2)") == 8
    assert find_expression("y ~ relevel(f, ref='b')", 'relevel(f, ref = "b")') == 4
    assert find_expression("y ~ x", "log(x)") is None
    (tmp_path / "s.yaml").write_text(
        'data: {example: sleepstudy}\nmodels:\n  m:\n    formula: "Reaction ~ Days + log(Days) + (1 | Subject)"\n')
    with pytest.raises(DataError) as info:
        validate_spec(tmp_path / "s.yaml")
    (issue,) = info.value.errors
    assert (issue.line, issue.col) == (4, 33) and "term 'log(Days)' gives NaN" in issue.message


@pytest.mark.parametrize(("formula", "message"), [
    ("y ~ scale(x, center = z) + (1|g)", "argument 'center' of scale() must be a constant"),
    ("y ~ poly(x, z) + (1|g)", "argument 2 of poly() must be a constant"),
    ("y ~ C(a, contr.treatment, base = z) + (1|g)", "argument 'base' of C() must be a constant"),
    ("y ~ relevel(a, ref = b) + (1|g)", "argument 'ref' of relevel() must be a constant"),
])
def test_constant_arguments_cannot_read_columns(formula: str, message: str) -> None:
    with pytest.raises(FormulaError, match=re.escape(message)):
        parse_formula(formula)


def test_constant_arguments_are_typed() -> None:
    with pytest.raises(DesignError, match="raw = in 'poly"):
        build_design(parse_formula("y ~ poly(x, 2, raw = 'yes') + (1|g)"), STUDY)
    with pytest.raises(DesignError, match="center = in 'scale"):
        build_design(parse_formula("y ~ scale(x, center = 'a') + (1|g)"), STUDY)
