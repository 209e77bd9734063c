"""Which data columns a model needs, so data loading and `na: common` can check them.

Variables are read off the parsed R expressions (`runner.formula.rexpr`), so
`log(x)`, `C(sex, contr.sum)`, `I(age^2)` and `poly(Time, 2)` give `x`, `sex`, `age` and
`Time`, never the names of functions, contrasts or constants.
"""

from __future__ import annotations

from functools import lru_cache

from runner.formula.functions import DATA_ARGS, canonical_function
from runner.formula.model import ModelFormula
from runner.formula.rexpr import CONSTANTS, Binary, Call, Name, Node, Paren, Unary, parse_expression



def _names(node: Node) -> list[str]:
    if isinstance(node, Name):
        return [] if node.name in CONSTANTS or node.name == "pi" else [node.name]
    if isinstance(node, Paren):
        return _names(node.inner)
    if isinstance(node, Unary):
        return _names(node.operand)
    if isinstance(node, Binary):
        return _names(node.left) + _names(node.right)
    if isinstance(node, Call):
        fn = canonical_function(node.fn)
        if fn == "c":
            return []
        # past DATA_ARGS come constants (degree, base, ref, contrasts), never columns
        args = node.args[: DATA_ARGS[fn]] if fn in DATA_ARGS else (*node.args, *(v for _, v in node.kwargs))
        return [n for a in args for n in _names(a)]
    return []


@lru_cache(maxsize=4096)
def expression_variables(expr: str) -> frozenset[str]:
    """The data columns one expression or term reads (`log(x) + a:b` -> x, a, b)."""
    return frozenset(_names(parse_expression(expr)))


def grouping_variables(mf: ModelFormula) -> set[str]:
    """The grouping factors' columns (`(1|a/b)` -> a, b)."""
    return {name for term in mf.random for name in term.group}


def slope_variables(mf: ModelFormula) -> set[str]:
    """The columns in random-effects left-hand sides (`(age | g)` -> age)."""
    return {name for term in mf.random for text in term.terms for name in expression_variables(text)}


def fixed_variables(mf: ModelFormula) -> set[str]:
    """The columns the fixed-effects terms read."""
    return {name for text in mf.fixed_terms for name in expression_variables(text)}


def response_variables(mf: ModelFormula) -> set[str]:
    """The columns the response reads (`log(y)` -> y)."""
    return set(expression_variables(mf.response))


def required_variables(mf: ModelFormula) -> set[str]:
    """Every data column the model uses: response, fixed terms, random lhs, grouping factors."""
    return response_variables(mf) | fixed_variables(mf) | slope_variables(mf) | grouping_variables(mf)
