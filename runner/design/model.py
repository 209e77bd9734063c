"""Numeric design of one model: what an engine needs and nothing about YAML or files.

`design/` turns a `ModelFormula` and a cleaned DataFrame into these arrays; engines
(`lme`, `statsmodels`) consume them and never look at the DataFrame or the formula text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from runner.covariance import Covariance


@dataclass
class RandomBlock:
    """One random-effects term evaluated on the data: a template repeated per level.

    Blocks are listed in lme4's order (decreasing number of levels, ties in formula
    order, as mkReTrms sorts them), which is the order of theta and of reports.
    """

    id: str  # lme4's name for the term: "Subject", and "Subject.1" for a second term on Subject
    group: str  # grouping factor as lme4 names it: "cask:batch"
    covariance: Covariance
    column_names: list[str]  # lhs columns as lme4 names them: "(Intercept)", "Days", "sexM"
    codes: np.ndarray  # (n,) int64 level index of each row, 0 .. nlevels-1
    levels: list[str]  # level labels in lme4's (sorted factor) order
    X: np.ndarray  # (n, p) lhs model matrix, float64
    term_index: int = -1  # position of its term in ModelFormula.random (blocks are in lme4's order)

    @property
    def nlevels(self) -> int:
        return len(self.levels)

    @property
    def ncols(self) -> int:
        return self.X.shape[1]


@dataclass
class FixedColumn:
    """Names of one fixed-effect column in the three vocabularies users meet."""

    term: str  # R's name (schema 2; schema 1 had formulaic's "sex[T.M]"): "(Intercept)", "sexM", "age:sexM"
    lme4_name: str  # lme4's name, the same: "(Intercept)", "sexM", "age:sexM", "poly(Time, 2)1"
    variable: str | None  # the data column (None for the intercept; "age:sex" for interactions)
    level: str | None  # the factor level this column codes, when it codes one


DesignWarningCode = Literal["scale_x", "rank_deficient", "design"]


@dataclass(frozen=True)
class DesignWarning:
    """A warning found while building the design; the fit reports it under this code."""

    code: DesignWarningCode  # scale_x: lme4's check.scaleX; rank_deficient: dropped fixed columns
    message: str


@dataclass
class Design:
    """y, X and the random blocks of one model on its rows, plus prior weights and offset."""

    response: str
    y: np.ndarray  # (n,)
    X: np.ndarray  # (n, p), rank-deficient columns already dropped
    fixed: list[FixedColumn]
    blocks: list[RandomBlock]  # lme4 order
    weights: np.ndarray | None = None  # prior weights, (n,), all > 0 after cleaning
    offset: np.ndarray | None = None  # (n,)
    dropped_fixed: list[str] = field(default_factory=list)  # rank-deficient columns, lme4 pivot order
    warnings: list[DesignWarning] = field(default_factory=list)  # e.g. lme4's check.scaleX message
    # parameters scale(), poly() and factor() learned (plain JSON data), reused for new data
    formula_state: dict = field(default_factory=dict)
    # binomial with a two-level factor, text or logical response: the level counted as success
    success_level: str | None = None

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])
