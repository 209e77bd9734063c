"""Numeric columns with text in some rows: an error naming the column and the rows.

A CSV column of numbers with `1,5`, `n.a.` or `<0.1` in a few rows is read as text,
and a text column in a model silently becomes a factor with one coefficient per
distinct value. Where a column is used as a number (the response, weights, offset,
or a plain fixed effect or slope), mixspec says which rows hold text instead.
Columns declared in `data.categorical`, grouping factors, and columns written as
`factor(x)`, `as.factor(x)` or `C(x)` stay factors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from runner.spec.errors import SpecIssue

if TYPE_CHECKING:
    from runner.spec.load import ResolvedModel

SHOWN_ROWS = 5


def _is_text(series: pd.Series) -> bool:
    return (pd.api.types.is_string_dtype(series.dtype) or series.dtype == object) and not isinstance(
        series.dtype, pd.CategoricalDtype)


def _as_factor(model: ResolvedModel, column: str) -> bool:
    """Whether the model's formula wraps `column` in factor(), as.factor(), ordered() or C()."""
    name = re.escape(column)
    pattern = rf"(?<![\w.])(?:factor|as\.factor|ordered|C)\(\s*(?:{name}|`{name}`)\s*[,)]"
    texts = [model.written or "", model.formula_text or "", *model.formula.fixed_terms,
             *(str(t) for term in model.formula.random for t in term.terms)]
    return any(re.search(pattern, str(t)) for t in texts)


def _numeric_roles(model: ResolvedModel, grouping: set[str], categorical: set[str]) -> dict[str, str]:
    """Column -> its numeric role in this model ("response", "weights", "offset", "fixed")."""
    from runner.formula.variables import fixed_variables, response_variables, slope_variables

    roles: dict[str, str] = {}
    for col in (*fixed_variables(model.formula), *slope_variables(model.formula)):
        if col not in grouping and col not in categorical and not _as_factor(model, col):
            roles[col] = "fixed"
    if getattr(model, "family", "gaussian") != "binomial":  # a binomial response may be a two-level factor
        for col in response_variables(model.formula):
            roles[col] = "response"
    for key, column in (("weights", model.weights), ("offset", model.offset)):
        if column:
            roles[column] = key
    return roles


def _shown(value: object) -> str:
    """The value as Python's repr shows it: control characters escaped, never sent raw to a terminal."""
    text = str(value)
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


def _where(model: ResolvedModel, role: str) -> str:
    path = ".".join(model.spec_path)
    return f"{path.rsplit('.formula', 1)[0]}.{role}" if role in ("weights", "offset") else path


def _offset(model: ResolvedModel, col: str, role: str) -> int | None:
    """Where the column first appears in the formula as written (for the caret)."""
    if role in ("weights", "offset") or model.spec_path[-1:] != ("formula",) or not model.written:
        return None
    m = re.search(rf"(?<![\w.]){re.escape(col)}(?![\w])", model.written)
    return m.start() if m else None


def text_in_number_columns(frame: pd.DataFrame, models: Iterable[ResolvedModel], grouping: set[str],
                           categorical: set[str], filtered: bool) -> tuple[list[SpecIssue], list[str]]:
    """Issues for text columns used as numbers whose values are mostly numbers, and those columns.

    The columns named are turned into numbers in `frame` (text rows missing), so later
    checks do not report them again as "not numeric"; the issues make the run fail.
    """
    issues: list[SpecIssue] = []
    done: list[str] = []
    for model in models:
        for col, role in _numeric_roles(model, grouping, categorical).items():
            if col in done or col not in frame.columns or not _is_text(frame[col]):
                continue
            values = frame[col]
            present = values.notna().to_numpy()
            parsed = pd.to_numeric(values.astype(str).str.strip().where(present), errors="coerce")
            number = parsed.notna().to_numpy()
            text = present & ~number
            if not text.any() or not number.any():
                continue  # all text: a factor or an existing "not numeric" message; all numbers: fine
            if role == "fixed" and number.sum() < text.sum():
                continue  # mostly text: a factor column with a few number-like labels
            rows = np.flatnonzero(text)
            shown = ", ".join(f"{r + 1} ({_shown(values.iloc[r])})" for r in rows[:SHOWN_ROWS])
            more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
            counted = "rows after data.filter" if filtered else "data rows"
            what = "the response" if role == "response" else f"the {role} column" if role in ("weights", "offset") \
                else "a numeric term"
            issues.append(SpecIssue(None, None, None, _where(model, role), offset=_offset(model, col, role),
                                    message=(
                f"column {col!r} is {what} but holds text in {len(rows)} of {int(present.sum())} rows "
                f"({counted}, counting from 1): {shown}{more}. Fix those values in the data (a missing value is "
                "an empty cell or NA)" + (f", or, if {col!r} is a factor, write factor({col}) or list it under "
                                          "data.categorical" if role == "fixed" else ""))))
            frame[col] = parsed.astype(float)
            done.append(col)
    return issues, done


__all__ = ["text_in_number_columns"]
