"""Coefficient names of schema 1 (formulaic's spelling) -> R's names (schema 2).

Until schema 2 a fixed effect's `term` was formulaic's name (`Intercept`, `sex[T.M]`,
`age:sex[T.M]`, `I(x ** 2)`); it is now R's (`(Intercept)`, `sexM`, `age:sexM`,
`I(x^2)`), which lme4 prints. Specs written before keep working: `expect:` maps the old
spelling to R's with `r_name`.
"""

from __future__ import annotations

import re

_FACTOR = re.compile(r"^(?P<var>.+?)\[(?:T\.)?(?P<level>.*)\]$")


def split_top_level(name: str, sep: str = ":") -> list[str]:
    """Split on `sep` outside brackets and parentheses (`I(a:b):c` keeps `I(a:b)`)."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(name):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(name[start:i])
            start = i + 1
    parts.append(name[start:])
    return parts


def _expression(text: str) -> str:
    """A variable as R deparses it (`I(x ** 2)` -> `I(x^2)`); unparsable text is kept."""
    from runner.formula.errors import FormulaError
    from runner.formula.rexpr import deparse, parse_expression

    try:
        return deparse(parse_expression(text.strip()))
    except FormulaError:
        return text


def r_name(term: str) -> str:
    """R's name of a coefficient given in either spelling (`sex[T.M]` -> `sexM`)."""
    if term.strip() == "Intercept":
        return "(Intercept)"
    if "[" not in term and "**" not in term and " " not in term:
        return term
    out = []
    for part in split_top_level(term.strip()):
        m = _FACTOR.match(part)
        out.append(_expression(m.group("var")) + m.group("level") if m else _expression(part))
    return ":".join(out)
