"""Which data columns a model needs, so data loading and `na: common` can check them.

Variables are pulled out of expressions with formulaic's own parser, so `np.log(x)`,
`C(sex)`, `I(age**2)` and `center(age)` give `x`, `sex`, `age`, `age` and never the
names of functions or modules.
"""

from __future__ import annotations

from functools import lru_cache

from formulaic import Formula
from formulaic.transforms import TRANSFORMS
from formulaic.utils.variables import Variable, get_expression_variables

from runner.formula.model import ModelFormula

# Names an expression may use that are never data columns.
_NAMESPACES = frozenset({"np", "numpy", "pd", "pandas", "math", "True", "False", "None"}) | frozenset(TRANSFORMS)


@lru_cache(maxsize=4096)
def expression_variables(expr: str) -> frozenset[str]:
    """The data columns one formulaic expression or term reads (`np.log(x) + a:b` -> x, a, b)."""
    names: set[str] = set()
    for term in Formula(expr):
        for factor in term.factors:
            method = factor.eval_method.value
            if method == "lookup":
                names.add(str(factor.expr))
            elif method == "python":
                variables: set[Variable] = get_expression_variables(str(factor.expr), {})
                names.update(
                    str(v) for v in variables if Variable.Role.VALUE in v.roles and v.root not in _NAMESPACES
                )
    return frozenset(names)


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
    """The columns the response reads (`np.log(y)` -> y)."""
    return set(expression_variables(mf.response))


def required_variables(mf: ModelFormula) -> set[str]:
    """Every data column the model uses: response, fixed terms, random lhs, grouping factors."""
    return response_variables(mf) | fixed_variables(mf) | slope_variables(mf) | grouping_variables(mf)
