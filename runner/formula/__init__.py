"""lme4 formula text <-> ModelFormula: parse, render, edit, and the variables a model needs."""

from runner.formula.edit import add_terms, drop_terms
from runner.formula.errors import FormulaError
from runner.formula.model import ModelFormula, RandomTerm
from runner.formula.parser import parse_formula
from runner.formula.render import render
from runner.formula.structured import structured_formula
from runner.formula.variables import grouping_variables, required_variables, slope_variables

__all__ = [
    "FormulaError",
    "ModelFormula",
    "RandomTerm",
    "add_terms",
    "drop_terms",
    "grouping_variables",
    "parse_formula",
    "render",
    "required_variables",
    "slope_variables",
    "structured_formula",
]
