"""Adding and dropping terms, for spec variants (`{from: m, add: [...], drop: [...]}`).

Terms are matched by value after parsing, so `(age|classroom)` finds the term written
`(age | classroom)` and `(x||g)` finds all of its expanded pieces.
"""

from __future__ import annotations

import difflib
from dataclasses import replace

from runner.formula.model import ModelFormula, RandomTerm
from runner.formula.expand import canonical_text, term_labels
from runner.formula.parser import Rhs, parse_rhs
from runner.formula.render import render_random, render_random_terms


def _parse(text: str) -> Rhs:
    if not isinstance(text, str):
        raise ValueError(f"a term must be text such as 'sex' or '(1|g)', not {text!r}")
    return parse_rhs(text)


def _expands_to(fixed: list[str], term: str) -> bool:
    """True when every term of `term` is among the expanded terms of `fixed` (R's terms())."""
    if not fixed:
        return False
    have = set(term_labels(*fixed))
    want = term_labels(term)
    return bool(want) and all(t in have for t in want) and len(have) > len(want)


def _present(mf: ModelFormula) -> list[str]:
    """Everything a variant may drop, as it would be written."""
    return (["1"] if mf.intercept else []) + list(mf.fixed_terms) + render_random_terms(mf.random)


def _missing(what: str, mf: ModelFormula) -> ValueError:
    present = _present(mf)
    close = difflib.get_close_matches(what, present, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"cannot drop {what!r}: the model has no such term (its terms: {', '.join(present)}){hint}")


def add_terms(mf: ModelFormula, texts: list[str]) -> ModelFormula:
    """`mf` with fixed or random terms added (`sex`, `(1|student_id)`; `0` removes the intercept).

    Raises ValueError for a term already present and FormulaError for bad syntax.
    """
    fixed = list(mf.fixed_terms)
    random = list(mf.random)
    intercept = mf.intercept
    for text in texts:
        rhs = _parse(text)
        if rhs.intercept is not None:
            if rhs.intercept == intercept:
                state = "has" if intercept else "lacks"
                raise ValueError(f"cannot add {text!r}: the model {state} an intercept already")
            intercept = rhs.intercept
        for term in rhs.fixed:
            if term in fixed:
                raise ValueError(f"cannot add {text!r}: the fixed term {term!r} is already in the model")
            fixed.append(term)
        for rt in rhs.random:
            if rt in random:
                raise ValueError(f"cannot add {text!r}: the random term {render_random(rt)} is already in the model")
            random.append(rt)
    return replace(mf, fixed_terms=tuple(fixed), intercept=intercept, random=tuple(random))


def drop_terms(mf: ModelFormula, texts: list[str]) -> ModelFormula:
    """`mf` without the given fixed or random terms (`sex`, `(age|classroom)`; `1` drops the intercept).

    Raises ValueError naming the model's terms (and the closest one) when a term is absent.
    """
    fixed = list(mf.fixed_terms)
    random: list[RandomTerm] = list(mf.random)
    intercept = mf.intercept
    for text in texts:
        rhs = _parse(text)
        if rhs.intercept is not None:
            if not rhs.intercept or not intercept:
                raise ValueError(f"cannot drop {text!r}: write '1' to drop the intercept, which the model "
                                 f"{'has' if intercept else 'does not have'}")
            intercept = False
        for term in rhs.fixed:
            if term not in fixed:
                if _expands_to(fixed, term):  # `a:b` out of `a*b`: R's removal, a*b - a:b
                    fixed = [canonical_text(" + ".join(fixed) + " - " + term)]
                    continue
                raise _missing(term, replace(mf, fixed_terms=tuple(fixed), random=tuple(random)))
            fixed.remove(term)
        for rt in rhs.random:
            if rt not in random:
                what = " + ".join(render_random_terms(tuple(rhs.random)))
                raise _missing(what, replace(mf, fixed_terms=tuple(fixed), random=tuple(random)))
            random.remove(rt)
    return replace(mf, fixed_terms=tuple(fixed), intercept=intercept, random=tuple(random))
