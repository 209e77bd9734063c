"""ModelFormula -> formula text, in lme4's compact style where lme4 can say it.

Reports and results.json show models the way analysts wrote them in R:
`y ~ age + sex + (age | classroom)`; covariance structures lme4 lacks use glmmTMB's
functions (`diag(age | classroom)`); runs of `(x || g)` expansions fold back.
The output always parses back to the same ModelFormula.
"""

from __future__ import annotations

from runner.formula.model import ModelFormula, RandomTerm
from runner.covariance import FUNCTION_OF_COVARIANCE
from runner.formula.expand import expand_double_bar, quote_name


def render_group(term: RandomTerm) -> str:
    """The grouping factor as formula text (`b:a`, `c:(b:a)`)."""
    return term.label if term.label is not None else ":".join(quote_name(g) for g in term.group)


def render_lhs(intercept: bool, terms: tuple[str, ...]) -> str:
    """lme4's compact lhs: `1`, `age` (intercept implied), or `0 + age`."""
    if not terms:
        return "1" if intercept else "0"
    return " + ".join(terms) if intercept else " + ".join(("0", *terms))


def render_random(term: RandomTerm) -> str:
    """One random term: `(age | g)`, `diag(age | g)`; a lone `||` piece as `(0 + x || g)`."""
    bar = "||" if term.double_bar and _is_expansion_piece(term) else "|"
    text = f"{render_lhs(term.intercept, term.terms)} {bar} {render_group(term)}"
    if term.covariance == "unstructured":
        return f"({text})"
    return f"{FUNCTION_OF_COVARIANCE[term.covariance]}({text})"


def _is_expansion_piece(term: RandomTerm) -> bool:
    """True when `(lhs || g)` alone re-expands to exactly this term (`(1 || g)`, `(0 + x || g)`)."""
    if term.covariance != "unstructured":
        return False
    lhs_intercept = term.intercept and not term.terms
    return expand_double_bar(lhs_intercept, term.terms) == [(term.intercept, term.terms)]


def _double_bar_run(terms: tuple[RandomTerm, ...], start: int) -> int:
    """How many terms from `start` fold into one `(a + b || g)` that re-expands to them."""
    first = terms[start]
    end = start + 1
    while end < len(terms):
        t = terms[end]
        same = (t.group, t.label, t.covariance) == (first.group, first.label, first.covariance)
        if not (t.double_bar and same and not t.intercept and len(t.terms) == 1):
            break
        end += 1
    while end > start + 1:
        run = terms[start:end]
        intercept = run[0].intercept and not run[0].terms
        lhs = tuple(x for t in run for x in t.terms)
        if expand_double_bar(intercept, lhs) == [(t.intercept, t.terms) for t in run]:
            break
        end -= 1
    return end - start


def render_random_terms(terms: tuple[RandomTerm, ...]) -> list[str]:
    """Random terms as text, folding consecutive `||` expansions of one group."""
    out: list[str] = []
    i = 0
    while i < len(terms):
        term = terms[i]
        n = 1
        if term.double_bar and term.covariance == "unstructured":
            n = _double_bar_run(terms, i)
        if n > 1:
            run = terms[i : i + n]
            lhs = tuple(x for t in run for x in t.terms)
            out.append(f"({render_lhs(run[0].intercept and not run[0].terms, lhs)} || {render_group(term)})")
        else:
            out.append(render_random(term))
        i += n
    return out


def render(mf: ModelFormula) -> str:
    """The model as lme4 / glmmTMB formula text, e.g. `y ~ age + sex + (age | classroom)`."""
    parts: list[str] = []
    if not mf.intercept:
        parts.append("0")
    elif not mf.fixed_terms:
        parts.append("1")
    parts.extend(mf.fixed_terms)
    parts.extend(render_random_terms(mf.random))
    return f"{mf.response} ~ {' + '.join(parts)}"
