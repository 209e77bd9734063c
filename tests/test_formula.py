"""The lme4 formula parser: constructs, errors (with caret positions), render, round trip,
variables, variant edits and the structured form.

Expected expansions were produced with lme4 1.1-31's findbars (see R_FINDBARS), and the
group names are checked against the reference fits in tests/reference/.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.covariance import COVARIANCES
from runner.formula import (
    FormulaError,
    ModelFormula,
    RandomTerm,
    add_terms,
    drop_terms,
    grouping_variables,
    parse_formula,
    render,
    required_variables,
    slope_variables,
    structured_formula,
)
from runner.formula.expand import random_term

REFERENCE = Path(__file__).parent / "reference"


def bars(text: str) -> list[str]:
    """The random terms as `lhs | group`, in the spelling R's findbars prints."""
    out = []
    for t in parse_formula(text).random:
        lhs = t.lhs if not t.intercept or not t.terms else "1 + " + " + ".join(t.terms)
        out.append(f"{lhs} | {t.group_name}")
    return out


# Output of lme4 1.1-31: findbars(formula), each bar deparsed as "lhs | group".
R_FINDBARS = {
    "y ~ x + (x|g) + (1|a/b)": ["1 + x | g", "1 | b:a", "1 | a"],
    "y ~ (1|a/b/c)": ["1 | c:(b:a)", "1 | b:a", "1 | a"],
    "y ~ (1|a/b/c/d)": ["1 | d:(c:(b:a))", "1 | c:(b:a)", "1 | b:a", "1 | a"],
    "y ~ (x||g)": ["1 | g", "0 + x | g"],
    "y ~ (0+x||g)": ["0 + x | g"],
    "y ~ (x+z||a/b)": ["1 | b:a", "1 | a", "0 + x | b:a", "0 + x | a", "0 + z | b:a", "0 + z | a"],
    "y ~ (x-1||g)": ["0 + x | g"],
    "y ~ (a:b + c + x + b:a||g)": ["1 | g", "0 + c | g", "0 + x | g", "0 + a:b | g"],
    "y ~ (a*b||g)": ["1 | g", "0 + a | g", "0 + b | g", "0 + a:b | g"],
    "y ~ (1|a:b)": ["1 | a:b"],
    "y ~ (1+x|a/b)": ["1 + x | b:a", "1 + x | a"],
    "y ~ (1|a/(b:c))": ["1 | (b:c):a", "1 | a"],
    "y ~ ((1|g)) + (0+x|h)": ["1 | g", "0 + x | h"],
}


@pytest.mark.parametrize("text", sorted(R_FINDBARS))
def test_expansions_match_lme4_findbars(text: str) -> None:
    assert bars(text) == R_FINDBARS[text]


def test_double_bar_terms_are_flagged() -> None:
    mf = parse_formula("Reaction ~ Days + (Days || Subject)")
    assert mf.random == (
        RandomTerm(("Subject",), True, (), "unstructured", True),
        RandomTerm(("Subject",), False, ("Days",), "unstructured", True),
    )
    assert all(t.double_bar for t in parse_formula("y ~ (0 + x || g)").random)
    assert not any(t.double_bar for t in parse_formula("y ~ (x | g)").random)


def test_nesting_groups_and_lme4_names() -> None:
    mf = parse_formula("strength ~ 1 + (1 | batch/cask)")
    assert [t.group for t in mf.random] == [("cask", "batch"), ("batch",)]
    assert [t.group_name for t in mf.random] == ["cask:batch", "batch"]
    inner = parse_formula("y ~ (1|a/b/c)").random[0]
    assert inner.group == ("c", "b", "a") and inner.label == "c:(b:a)"
    # Written out, lme4's name of the expanded term parses to the same term.
    assert parse_formula("y ~ (1 | c:(b:a))").random[0] == inner
    interaction = parse_formula("y ~ (1 | dept:service)").random[0]
    assert interaction.group == ("dept", "service") and interaction.label is None


def test_reference_formulas_give_lme4_group_names() -> None:
    """Every reference fit's formula parses to lme4's grouping factors (names and count)."""
    with open(REFERENCE / "cases.tsv", newline="") as fh:
        cases = list(csv.DictReader(fh, delimiter="\t"))
    assert len(cases) >= 10
    for case in cases:
        ref = json.loads((REFERENCE / f"{case['id']}.json").read_text())
        mf = parse_formula(case["formula"])
        assert {t.group_name for t in mf.random} == set(ref["ngroups"]), case["id"]
        # VarCorr numbers repeated factors as lme4 does: `(x || g)` gives g and g.1.
        names = [t.group_name for t in mf.random]
        ids = {n if names[:i].count(n) == 0 else f"{n}.{names[:i].count(n)}" for i, n in enumerate(names)}
        assert ids == {g["group"] for g in ref["random_effects"] if g["group"] != "Residual"}


def test_fixed_terms_kept_whole() -> None:
    mf = parse_formula(
        "np.log(y) ~ C(sex) + a*b + I(x**2) + np.log(x) + x:z + center(age) + (a+b):c + C(x, Treatment('a'))"
    )
    assert mf.response == "np.log(y)"
    assert mf.fixed_terms == (
        "C(sex)", "a * b", "I(x^2)", "np.log(x)", "x:z", "center(age)", "(a + b):c", 'C(x, Treatment("a"))',
    )  # R's deparse: `**` is `^`, strings in double quotes
    assert mf.intercept and mf.random == ()
    # Spacing never makes two spellings differ.
    assert parse_formula("y~a * b+I( x ** 2 )") == parse_formula("y ~ a*b + I(x**2)")


@pytest.mark.parametrize(
    ("text", "intercept", "fixed"),
    [
        ("y ~ x", True, ("x",)),
        ("y ~ 0 + x", False, ("x",)),
        ("y ~ x - 1", False, ("x",)),
        ("y ~ -1 + x", False, ("x",)),
        ("y ~ 1 + x", True, ("x",)),
        ("y ~ 1", True, ()),
        ("y ~ 0 + (1|g)", False, ()),
        ("y ~ x + x", True, ("x",)),
    ],
)
def test_intercept_flag(text: str, intercept: bool, fixed: tuple[str, ...]) -> None:
    mf = parse_formula(text)
    assert (mf.intercept, mf.fixed_terms) == (intercept, fixed)


@pytest.mark.parametrize(
    ("lhs", "intercept", "terms"),
    [
        ("1", True, ()),
        ("x", True, ("x",)),
        ("1+x", True, ("x",)),
        ("0+x", False, ("x",)),
        ("-1+x", False, ("x",)),
        ("x-1", False, ("x",)),
        ("x + I(x**2) + center(z)", True, ("x", "I(x^2)", "center(z)")),
        ("0 + f + x:f", False, ("f", "x:f")),
    ],
)
def test_random_lhs(lhs: str, intercept: bool, terms: tuple[str, ...]) -> None:
    (term,) = parse_formula(f"y ~ ({lhs} | g)").random
    assert (term.intercept, term.terms, term.group) == (intercept, terms, ("g",))


@pytest.mark.parametrize(
    ("text", "covariance"),
    [
        ("(x|g)", "unstructured"),
        ("us(x|g)", "unstructured"),
        ("diag(x|g)", "diagonal"),
        ("homdiag(0+f|g)", "identity"),
        ("homcs(0+f|g)", "compound_symmetry"),
    ],
)
def test_covariance_functions(text: str, covariance: str) -> None:
    (term,) = parse_formula(f"y ~ {text}").random
    assert term.covariance == covariance
    assert term.group == ("g",)


def test_diag_with_nesting_applies_to_each_level() -> None:
    terms = parse_formula("y ~ diag(x | a/b)").random
    assert [(t.group_name, t.covariance) for t in terms] == [("b:a", "diagonal"), ("a", "diagonal")]


# (text, message fragment, caret position)
ERRORS = [
    ("y ~ (1|)", "expected a grouping factor after '|'", 7),
    ("(1|)", "expected a grouping factor after '|'", 3),
    ("y ~ (|g)", "expected the random-effects terms before '|'", 5),
    ("y ~ (x|g", "'(' is never closed", 4),
    ("y ~ x + (x|g))", "unmatched ')'", 13),
    ("y ~ (x + z", "'(' is never closed", 4),
    ("y ~", "expected terms after '~'", 3),
    ("~ x", "expected a response before '~'", 0),
    ("", "the formula is empty", 0),
    ("   ", "the formula is empty", 0),
    ("y ~ x ~ z", "exactly one '~'", 6),
    ("y ~ (1|g/)", "expected a grouping factor after '/'", 9),
    ("y ~ (1|/g)", "expected a grouping factor before '/'", 7),
    ("y ~ foo(1|g)", "unknown covariance function 'foo'", 4),
    ("y ~ cs(1|g)", "cs() is not supported; use one of us(), diag(), homdiag(), homcs() (glmmTMB's cs() has a variance per column", 4),
    ("y ~ diag(x||g)", "'||' cannot be used inside diag()", 10),
    ("y ~ homcs(0 + f || g)", "'||' cannot be used inside homcs()", 16),
    ("y ~ x +", "expected a term after '+'", 7),
    ("y ~ x + + z", "expected a term after '+'", 8),
    ("y ~ (1|g):z", "must stand alone", 9),
    ("y ~ z:(1|g)", "'|' may only appear inside a random-effects term", 8),
    ("y ~ -z + x", "nothing to remove", 4),
    ("y ~ x - x", "removing 'x' leaves no terms", 8),
    ("y ~ (0|g)", "has no columns", 5),
    ("y ~ (1|2)", "grouping factor must be a column name", 7),
    ("y ~ (1|a b)", "grouping factor must be a column name", 9),
    ("y ~ (1|g|h)", "has one '|'", 8),
    ("y ~ I(x**)", "not valid formula syntax", 9),
    ("y ~ x + 2", "not valid formula syntax", 8),
    ("y ~ x + ns(x, 3)", "splines are not supported yet", 8),
    ('y ~ "abc', "never closed", 4),
    ("y ~ (1|g) + (1|g/h)", "appears twice", 12),
    ("y ~ x", None, None),
]


@pytest.mark.parametrize(("text", "message", "position"), ERRORS)
def test_errors_point_at_the_problem(text: str, message: str | None, position: int | None) -> None:
    if message is None:
        assert parse_formula(text).fixed_terms == ("x",)
        return
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert message in err.message
    assert err.position == position
    lines = str(err).splitlines()
    assert lines[0] == err.message
    assert lines[1] == "  " + text
    assert lines[2] == "  " + " " * position + "^"


def test_error_display_keeps_caret_aligned_for_multiline_text() -> None:
    with pytest.raises(FormulaError) as info:
        parse_formula("y ~ x +\n (1|)")
    assert str(info.value).splitlines()[1:] == ["  y ~ x +  (1|)", "  " + " " * 12 + "^"]


def test_formula_error_survives_pickling() -> None:
    """Errors cross process boundaries (the run executor uses a process pool)."""
    import pickle

    with pytest.raises(FormulaError) as info:
        parse_formula("y ~ (1|)")
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.message, again.text, again.position) == (info.value.message, "y ~ (1|)", 7)
    assert str(again) == str(info.value)


def test_interaction_nested_in_slash() -> None:
    """lme4 1.1-31 mangles `(1|a:b/c)` (it yields `c:(a:`:`)`); we expand it as `(a:b)/c` means."""
    terms = parse_formula("y ~ (1|a:b/c)").random
    assert [(t.group, t.group_name) for t in terms] == [(("c", "a", "b"), "c:(a:b)"), (("a", "b"), "a:b")]


def test_non_text_formula_is_a_formula_error() -> None:
    with pytest.raises(FormulaError, match="must be text"):
        parse_formula(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- render
@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("test_score~age+sex+(age|classroom)", "test_score ~ age + sex + (age | classroom)"),
        ("y ~ (1 + x | g)", "y ~ 1 + (x | g)"),
        ("y ~ x - 1 + (0+x|g)", "y ~ 0 + x + (0 + x | g)"),
        ("y ~ 1 + (1|batch/cask)", "y ~ 1 + (1 | cask:batch) + (1 | batch)"),
        ("y ~ (1|a/b/c)", "y ~ 1 + (1 | c:(b:a)) + (1 | b:a) + (1 | a)"),
        ("y ~ x + (x||g)", "y ~ x + (x || g)"),
        ("y ~ x + (0 + x + z||g)", "y ~ x + (0 + x + z || g)"),
        ("y ~ x + (a*b||g)", "y ~ x + (a + b + a:b || g)"),
        ("y ~ (I(x ** 2)*z||g)", "y ~ 1 + (I(x^2) + z + I(x^2):z || g)"),
        ("y ~ (x||a/b)", "y ~ 1 + (1 || b:a) + (1 || a) + (0 + x || b:a) + (0 + x || a)"),
        ("y ~ diag(age|classroom)", "y ~ 1 + diag(age | classroom)"),
        ("y ~ homdiag(0+f|g) + homcs(0+f|g)", "y ~ 1 + homdiag(0 + f | g) + homcs(0 + f | g)"),
        ("y ~ us(x|g)", "y ~ 1 + (x | g)"),
        ("y ~ (1|`odd name`)", "y ~ 1 + (1 | `odd name`)"),
    ],
)
def test_render(text: str, rendered: str) -> None:
    mf = parse_formula(text)
    assert render(mf) == rendered
    assert parse_formula(rendered) == mf


def test_render_reference_formulas_as_lme4_writes_them() -> None:
    """The reference cases were written in lme4's style; render reproduces them (but `/`)."""
    with open(REFERENCE / "cases.tsv", newline="") as fh:
        cases = list(csv.DictReader(fh, delimiter="\t"))
    for case in cases:
        if "/" in case["formula"] or "||" in case["formula"]:
            continue
        assert render(parse_formula(case["formula"])) == case["formula"]


# Strategies for ModelFormulas the parser can produce.
NAMES = st.sampled_from(["g", "school", "classroom", "Subject", "a", "b", "c", "x.y", "odd name", "a:b", "é"])
FIXED = st.sampled_from(
    ["x", "age", "sex", "a * b", "C(sex)", "I(x^2)", "np.log(x)", "x:z", "center(age)", "(a + b):c", "`odd name`"]
)
LHS_TERMS = st.sampled_from(["x", "age", "f", "I(x^2)", "center(age)", "x:f", "np.log(z)"])


def group_exprs() -> st.SearchStrategy:
    return st.recursive(
        NAMES,
        lambda inner: st.one_of(st.tuples(inner, inner), st.tuples(inner)),
        max_leaves=4,
    )


@st.composite
def random_terms(draw: st.DrawFn) -> list[RandomTerm]:
    group = draw(group_exprs())
    if draw(st.booleans()):  # one piece of an `(a + b || g)` expansion
        if draw(st.booleans()):
            return [random_term(group, True, (), "unstructured", True)]
        return [random_term(group, False, (draw(LHS_TERMS),), "unstructured", True)]
    terms = tuple(draw(st.lists(LHS_TERMS, max_size=3, unique=True)))
    intercept = draw(st.booleans()) or not terms
    return [random_term(group, intercept, terms, draw(st.sampled_from(COVARIANCES)))]


@st.composite
def model_formulas(draw: st.DrawFn) -> ModelFormula:
    response = draw(st.sampled_from(["y", "test_score", "np.log(y)", "`odd y`"]))
    fixed = tuple(draw(st.lists(FIXED, max_size=4, unique=True)))
    random = [t for ts in draw(st.lists(random_terms(), max_size=5)) for t in ts]
    random = list(dict.fromkeys(random))  # the parser rejects repeated terms
    return ModelFormula(response, fixed, draw(st.booleans()), tuple(random))


@settings(max_examples=100, deadline=None)
@given(model_formulas())
def test_round_trip(mf: ModelFormula) -> None:
    assert parse_formula(render(mf)) == mf


# ---------------------------------------------------------------- variables
def test_required_variables_from_expressions() -> None:
    mf = parse_formula(
        "np.log(score) ~ C(sex) + I(age**2) + center(age) + np.log(x) + a*b + scale(w) + C(q, contr.treatment)"
        " + (center(age) + I(h**2) | school/classroom) + (0 + f || `odd name`)"
    )
    assert required_variables(mf) == {
        "score", "sex", "age", "x", "a", "b", "w", "q", "h", "f", "school", "classroom", "odd name",
    }
    assert grouping_variables(mf) == {"school", "classroom", "odd name"}
    assert slope_variables(mf) == {"age", "h", "f"}


def test_required_variables_skip_functions_and_keywords() -> None:
    mf = parse_formula(
        "y ~ C(sex, Treatment(reference='M')) + log(x, base = 2) + poly(z, 2) + I(age - mean_age) + x.y + `odd name`"
    )
    assert required_variables(mf) == {"y", "sex", "x", "z", "age", "mean_age", "x.y", "odd name"}


def test_required_variables_of_reference_models() -> None:
    mf = parse_formula("y ~ service + (1 | s) + (1 | d) + (1 | dept:service)")
    assert required_variables(mf) == {"y", "service", "s", "d", "dept"}
    assert slope_variables(mf) == set()


# ---------------------------------------------------------------- edit
BASE = parse_formula("test_score ~ age + sex + (1|classroom) + (1|school) + (1|province)")


def test_add_and_drop_terms() -> None:
    more = add_terms(BASE, ["(1|student_id)", "age:sex"])
    assert render(more) == (
        "test_score ~ age + sex + age:sex + (1 | classroom) + (1 | school) + (1 | province) + (1 | student_id)"
    )
    assert drop_terms(more, ["age:sex", "( 1 | student_id )"]) == BASE
    assert render(drop_terms(BASE, ["sex"])) == "test_score ~ age + (1 | classroom) + (1 | school) + (1 | province)"
    # A second term on a grouping factor already present is allowed, as in lme4.
    slopes = add_terms(BASE, ["(0 + age | classroom)"])
    assert [t.group_name for t in slopes.random].count("classroom") == 2
    assert drop_terms(BASE, ["1"]).intercept is False
    assert add_terms(drop_terms(BASE, ["1"]), ["1"]) == BASE


def test_add_and_drop_expansions() -> None:
    nested = add_terms(parse_formula("y ~ x"), ["(1|batch/cask)"])
    assert nested == parse_formula("y ~ x + (1|batch/cask)")
    assert drop_terms(nested, ["(1|batch/cask)"]) == parse_formula("y ~ x")
    zc = parse_formula("y ~ x + (x||g)")
    assert drop_terms(zc, ["(x||g)"]).random == ()
    assert drop_terms(zc, ["(0 + x || g)"]).random == (RandomTerm(("g",), double_bar=True),)


def test_drop_missing_term_names_what_is_present() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'sex'") as info:
        drop_terms(BASE, ["sx"])
    assert "age, sex, (1 | classroom)" in str(info.value)
    with pytest.raises(ValueError, match=r"did you mean '\(1 \| school\)'"):
        drop_terms(BASE, ["(1|schol)"])
    with pytest.raises(ValueError, match="no such term"):
        drop_terms(BASE, ["(age|classroom)"])


def test_add_present_term_fails() -> None:
    with pytest.raises(ValueError, match="already in the model"):
        add_terms(BASE, ["sex"])
    with pytest.raises(ValueError, match="already in the model"):
        add_terms(BASE, ["(1 | school)"])
    with pytest.raises(FormulaError, match="expected a grouping factor"):
        add_terms(BASE, ["(1|)"])


# ---------------------------------------------------------------- structured
def test_structured_equals_text() -> None:
    structured = structured_formula(
        "test_score",
        ["age", "sex"],
        [
            {"group": "province"},
            {"group": "school", "within": "province"},
            {"group": "classroom", "within": "school", "terms": [1, "age"], "covariance": "diagonal"},
        ],
    )
    text = "test_score ~ age + sex + (1|province) + (1|school:province) + diag(age|classroom:school)"
    assert structured == parse_formula(text)


def test_structured_within_matches_lme4_nesting() -> None:
    nested = parse_formula("y ~ (1 | province/school/classroom)").random
    for within in ("province/school", ["province", "school"]):
        (term,) = structured_formula("y", [], [{"group": "classroom", "within": within}]).random
        assert term == nested[0]
        assert term.group_name == "classroom:(school:province)"
    (term,) = structured_formula("y", [], [{"group": "school", "within": "province"}]).random
    assert term == nested[1]


@pytest.mark.parametrize(
    ("item", "text"),
    [
        ({"group": "g"}, "(1|g)"),
        ({"group": "g", "terms": [1, "age"]}, "(1 + age|g)"),
        ({"group": "g", "terms": ["age"]}, "(0 + age|g)"),
        ({"group": "g", "terms": [0, "f"], "covariance": "identity"}, "homdiag(0 + f|g)"),
        ({"group": "g", "terms": ["f"], "covariance": "compound_symmetry"}, "homcs(0 + f|g)"),
        ({"group": "g", "terms": [1, "x"], "covariance": "unstructured"}, "(x|g)"),
    ],
)
def test_structured_items(item: dict, text: str) -> None:
    assert structured_formula("y", ["x"], [item]) == parse_formula(f"y ~ x + {text}")


def test_structured_plain_names_need_no_quoting() -> None:
    (term,) = structured_formula("y", [], [{"group": "class room", "within": ["school district"]}]).random
    assert term == parse_formula("y ~ (1 | `class room`:`school district`)").random[0]
    assert term.group == ("class room", "school district")


def test_structured_without_intercept() -> None:
    assert structured_formula("y", ["x"], [{"group": "g"}], intercept=False) == parse_formula("y ~ 0 + x + (1|g)")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"terms": [1]}, "needs 'group'"),
        ({"group": "g", "covariance": "banded"}, "covariance must be one of"),
        ({"group": "g", "grop": 1}, "unknown keys"),
        ({"group": "g", "terms": []}, "non-empty list"),
        ({"group": "a/b"}, "must be one factor"),
        ("g", "must be a mapping"),
    ],
)
def test_structured_errors(item: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        structured_formula("y", [], [item])  # type: ignore[list-item]
