"""lme4's term expansions: grouping-factor expressions, `a/b` nesting and `||`.

They follow lme4 1.1's `expandSlash` and `expandDoubleVerts` term for term, so term
order and group names match lme4's; `||` expands its lhs with R's terms()
(`runner.formula.rterms`). The formula parser (`runner.formula.parser`) calls them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Union

from runner.covariance import Covariance
from runner.formula import rexpr, rterms
from runner.formula.model import RandomTerm

_NAME = re.compile(r"[^\W\d][\w.]*")  # a name quote_name leaves bare

# A grouping-factor expression: a factor name, (left, right) for `left:right`, or
# (inner,) for parentheses as written, which R keeps in the name: `(b:c):a`.
GroupExpr = Union[str, tuple["GroupExpr", "GroupExpr"], tuple["GroupExpr"]]  # noqa: UP007 - recursive alias


def quote_name(name: str) -> str:
    """A factor name as formula text: bare when it is a plain name, else in backticks."""
    return name if _NAME.fullmatch(name) else f"`{name}`"


def group_leaves(expr: GroupExpr) -> tuple[str, ...]:
    """The factor names of an interaction, left to right (`c:(b:a)` -> c, b, a)."""
    if isinstance(expr, str):
        return (expr,)
    return tuple(name for part in expr for name in group_leaves(part))


def deparse_group(expr: GroupExpr) -> str:
    """The grouping factor as R deparses it, which is the name lme4 gives it."""
    if isinstance(expr, str):
        return quote_name(expr)
    if len(expr) == 1:
        return f"({deparse_group(expr[0])})"
    left, right = expr
    right_text = deparse_group(right)
    if isinstance(right, tuple) and len(right) == 2:
        right_text = f"({right_text})"  # `:` is left-associative, so R parenthesizes a right interaction
    return f"{deparse_group(left)}:{right_text}"


def expand_nesting(parts: list[GroupExpr]) -> list[GroupExpr]:
    """`a/b/c` as lme4's expandSlash gives it: [c:(b:a), b:a, a] (innermost first)."""
    chain = [parts[0]]
    for part in parts[1:]:
        chain.append((part, chain[-1]))
    return chain[::-1]


def random_term(
    group: GroupExpr,
    intercept: bool,
    terms: tuple[str, ...],
    covariance: Covariance = "unstructured",
    double_bar: bool = False,
) -> RandomTerm:
    """Build a RandomTerm for a group expression, recording lme4's name when it differs."""
    leaves = group_leaves(group)
    name = deparse_group(group)
    label = None if name == ":".join(leaves) else name
    return RandomTerm(leaves, intercept, terms, covariance, double_bar, label)


@lru_cache(maxsize=4096)
def term_labels(*texts: str) -> tuple[str, ...]:
    """R's term labels of terms joined by `+` (`a*b` -> a, b, a:b), intercept left out."""
    return tuple(rterms.expand([rexpr.parse_expression(t) for t in texts], "").labels)


def expand_double_bar(intercept: bool, terms: tuple[str, ...]) -> list[tuple[bool, tuple[str, ...]]]:
    """lme4's expandDoubleVert: `1` (if any) then one `0 + t` per term of the lhs.

    The terms are those of R's `terms()`, which expands `a*b` and orders by degree;
    a term written as itself keeps its spelling.
    """
    written: dict[str, str] = {}
    for t in terms:
        expanded = term_labels(t)
        if len(expanded) == 1:
            written.setdefault(expanded[0], t)
    out: list[tuple[bool, tuple[str, ...]]] = [(True, ())] if intercept else []
    if terms:
        for label in term_labels(*terms):
            out.append((False, (written.get(label) or canonical_text(label),)))
    return out


def canonical_text(text: str) -> str:
    """An expression as R deparses it, so spacing and `**` never make two terms differ."""
    return rexpr.deparse(rexpr.parse_expression(text))
