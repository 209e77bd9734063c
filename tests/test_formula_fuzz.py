"""Fuzzing the parser: any text gives a ModelFormula or a FormulaError, never a crash.

Every formula that parses must also render back to itself and name its variables,
since the spec loader calls all three on whatever a user wrote. Texts are valid
formulas put together from real pieces and then mutated, so the fuzzer reaches
deep into the grammar as well as the tokenizer.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.formula import FormulaError, parse_formula, render, required_variables

FRAGMENTS = st.sampled_from(
    [
        "y", "x", "g", "~", " ~ ", "+", " + ", "-", "0", "1", "(", ")", "|", "||", "/", ":", "*", "**", ",",
        " ", "diag(", "homcs(", "us(", "foo(", "I(", "C(", "np.log(", "`a b`", "'s'", '"', "`", "[", "]",
        "{", "}", ".", "2", "(1|g)", "(x||g)", "(1|a/b)", "\n", "$", "#", "é",
        "^", "%in%", "%%", "log(", "poly(", "offset(", "relevel(", "factor(", ">", "!", "&", "=", "TRUE",
    ]
)
TERMS = st.sampled_from(
    [
        "x", "age", "a*b", "C(sex)", "I(x**2)", "np.log(x)", "x:z", "center(age)", "(a+b):c", "0", "1", "-1",
        "(1|g)", "(x|g)", "(0+x|g)", "(x-1|g)", "(x||g)", "(a*b||g)", "(1|a/b)", "(1|a/b/c)", "(x||a/b)",
        "(1|a:b)", "(1|c:(b:a))", "diag(x|g)", "homdiag(0+f|h)", "homcs(0+f|k)", "us(1+x|m)", "((1|q))",
        "(1|`odd name`)", "(center(age) + I(x**2)|s)", "(I(x ** 2)*z||g)",
        "poly(x, 2)", "log(x, base = 2)", "relevel(f, ref = 'b')", "C(f, contr.sum)", "offset(log(n))",
        "I(x > 3)", "(a + b + c)^2", "a*b - a:b", "scale(x)", "(0 + factor(z) | g)",
    ]
)
RESPONSES = st.sampled_from(["y", "np.log(y)", "`odd y`", "score"])


@st.composite
def formula_texts(draw: st.DrawFn) -> str:
    """A formula built from valid pieces, then given a few random edits (or none)."""
    text = draw(RESPONSES) + " ~ " + " + ".join(draw(st.lists(TERMS, min_size=1, max_size=5)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(FRAGMENTS) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 3)) :]
    return text


TEXTS = st.one_of(formula_texts(), formula_texts(), st.lists(FRAGMENTS, max_size=12).map("".join), st.text(max_size=20))


def check(text: str) -> None:
    try:
        mf = parse_formula(text)
    except FormulaError as err:
        assert 0 <= err.position <= len(text)
        assert err.message and str(err).startswith(err.message)
        return
    assert parse_formula(render(mf)) == mf
    assert mf.response in render(mf) and isinstance(required_variables(mf), set)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_any_text_parses_or_raises_formula_error(text: str) -> None:
    check(text)


def test_unmutated_pieces_all_parse() -> None:
    """The generator's base pieces are valid, so the fuzzer does reach successful parses."""
    for term in TERMS.elements:  # type: ignore[attr-defined]
        if term not in ("0", "1", "-1"):
            assert parse_formula(f"y ~ {term}").response == "y"
