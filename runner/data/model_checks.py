"""lme4's pre-fit checks on one model's rows, and the small helpers the data steps share.

Everything lme4 would refuse before fitting (a non-numeric response, bad weights, a
grouping factor with one level, more random effects than observations) becomes a
located issue; the crossed-labels trap and '||' on a factor are warnings.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from runner.formula import required_variables
from runner.formula.variables import expression_variables
from runner.spec.errors import SpecIssue

if TYPE_CHECKING:
    from runner.spec.load import ResolvedModel


def issue(path: str, message: str, severity: str = "error", offset: int | None = None) -> SpecIssue:
    return SpecIssue(None, None, None, path, message, severity, offset)  # type: ignore[arg-type]


def is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not isinstance(series.dtype, pd.CategoricalDtype)


def is_text(series: pd.Series) -> bool:
    return (pd.api.types.is_string_dtype(series.dtype) or series.dtype == object) and not isinstance(
        series.dtype, pd.CategoricalDtype)


def model_path(model: ResolvedModel) -> str:
    return ".".join(model.spec_path)


def offset_in_formula(model: ResolvedModel, name: str) -> int | None:
    """Where a column name first appears in the formula as written (for the caret)."""
    if model.spec_path[-1:] != ("formula",):
        return None
    from runner.formula import render

    text = model.written or render(model.formula)
    m = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text)
    return m.start() if m else None


def model_columns(model: ResolvedModel) -> set[str]:
    cols = set(required_variables(model.formula))
    cols |= {c for c in (model.weights, model.offset) if c}
    return cols


def _random_columns(model: ResolvedModel, frame: pd.DataFrame, term: Any) -> int:
    """Columns of a random term's lhs (a factor gives its levels, minus one with an intercept)."""
    p = 1 if term.intercept else 0
    for i, text in enumerate(term.terms):
        col = frame[text] if text in frame.columns else None
        if col is not None and isinstance(col.dtype, pd.CategoricalDtype):
            k = len(col.cat.categories)
            p += k if (not term.intercept and i == 0) else k - 1
        else:
            p += 1
    return max(p, 1)


def count_levels(frame: pd.DataFrame, group: tuple[str, ...]) -> int:
    """Levels of a grouping factor (an interaction of columns) present in `frame`."""
    return int(frame.groupby(list(group), observed=True, dropna=True, sort=False).ngroups)


def check_model(model: ResolvedModel, frame: pd.DataFrame, issues: list[SpecIssue],
                warnings: list[SpecIssue], memo: dict[Any, Any] | None = None) -> None:
    """lme4's pre-fit checks on one model's rows (`memo`: verdicts shared by models with the same rows)."""
    memo = {} if memo is None else memo
    if len(frame) == 0:
        issues.append(issue(model_path(model), "no rows left after the filter and missing values"))
        return
    _check_response(model, frame, issues)
    for key in ("weights", "offset"):
        _check_weights_offset(model, frame, key, issues)
    _check_groups(model, frame, issues, warnings, memo)
    _crossed_trap(model, frame, warnings, memo)


def _check_response(model: ResolvedModel, frame: pd.DataFrame, issues: list[SpecIssue]) -> None:
    """A response lme4 can fit is numeric (a factor response is glm's 0/1 under binomial)."""
    mf = model.formula
    binomial = getattr(model, "family", "gaussian") == "binomial"
    if mf.response in frame.columns and not is_numeric(frame[mf.response]) and not binomial:
        example = frame[mf.response].dropna().astype(str).head(1).tolist()
        issues.append(issue(model_path(model), f"response {mf.response!r} is not numeric"
                            + (f" (e.g. {example[0]!r})" if example else ""),
                            offset=offset_in_formula(model, mf.response)))


def _check_weights_offset(model: ResolvedModel, frame: pd.DataFrame, key: str, issues: list[SpecIssue]) -> None:
    """Weights must be positive and finite, an offset finite (lme4 refuses them otherwise)."""
    col = getattr(model, key)
    if not col:
        return
    where = f"{model_path(model).rsplit('.formula', 1)[0]}.{key}"
    if not is_numeric(frame[col]):
        issues.append(issue(where, f"{key} column {col!r} is not numeric"))
        return
    values = frame[col].to_numpy(dtype=float)
    bad = ~np.isfinite(values) | ((values < 0) if key == "weights" else False)
    if bad.any():
        what = "positive and finite" if key == "weights" else "finite"
        issues.append(issue(where, f"{key} column {col!r} must be {what}: {int(bad.sum())} rows are not "
                            f"(first: {values[bad][0]!r})"))
    elif key == "weights" and (values == 0).any():
        issues.append(issue(where, f"weights column {col!r} has {int((values == 0).sum())} zero weights: "
                            "a zero prior weight makes the criterion infinite (lme4 returns Inf); "
                            f"drop those rows with `filter: \"{col} > 0\"`"))


def _check_groups(model: ResolvedModel, frame: pd.DataFrame, issues: list[SpecIssue],
                  warnings: list[SpecIssue], memo: dict[Any, Any]) -> None:
    """lme4's check.nobs.vs.nlev and check.nobs.vs.nRE per random term, and '||' on a factor."""
    path, n = model_path(model), len(frame)
    seen_groups: dict[str, int] = {}
    for term in model.formula.random:
        name = term.group_name
        if name not in seen_groups:
            if ("levels", term.group) not in memo:
                memo["levels", term.group] = count_levels(frame, term.group)
            seen_groups[name] = memo["levels", term.group]
        nlev = seen_groups[name]
        at = offset_in_formula(model, term.group[0])
        if nlev <= 1:
            issues.append(issue(path, f"grouping factor {name!r} has {nlev} level in the rows used; "
                                "a grouping factor needs at least 2", offset=at))
            continue
        if nlev >= n:
            issues.append(issue(path, f"grouping factor {name!r} has {nlev} levels for {n} observations: random "
                                "effect not identifiable from the residual (lme4's check.nobs.vs.nlev)", offset=at))
            continue
        q = nlev * _random_columns(model, frame, term)
        if q >= n:
            issues.append(issue(path, f"term on {name!r} has {q} random effects for {n} observations: random "
                                "effect not identifiable from the residual (lme4's check.nobs.vs.nRE)", offset=at))
        if term.double_bar:
            _double_bar_factor(path, name, term, frame, warnings)


def _double_bar_factor(path: str, name: str, term: Any, frame: pd.DataFrame, warnings: list[SpecIssue]) -> None:
    """'||' on a factor keeps its columns' correlations in lme4: say so, with the diag() spelling."""
    factors = [t for t in term.terms
               if any(v in frame.columns and isinstance(frame[v].dtype, pd.CategoricalDtype)
                      for v in expression_variables(t))]
    if factors:
        warnings.append(issue(path, f"'||' on factor {factors[0]!r} in the term on {name!r} keeps the "
                              "correlations among the factor's columns (lme4's meaning); for independent "
                              f"columns write diag(0 + {factors[0]} | {name})", "warning"))


def _crossed_trap(model: ResolvedModel, frame: pd.DataFrame, warnings: list[SpecIssue],
                  memo: dict[Any, Any] | None = None) -> None:
    """Warn when labels of one grouping factor repeat inside every level of another.

    `(1|batch) + (1|cask)` with casks a, b, c in every batch is read as crossed (as
    lme4 does); when each batch-cask cell has replicates, nesting was probably meant.
    """
    singles = sorted({t.group[0] for t in model.formula.random if len(t.group) == 1})
    pairs = {frozenset(t.group) for t in model.formula.random if len(t.group) == 2}
    for outer in singles:
        for inner in singles:
            if inner == outer or frozenset((outer, inner)) in pairs:
                continue
            memo = {} if memo is None else memo
            if ("trap", outer, inner) not in memo:
                memo["trap", outer, inner] = _labels_repeat(frame, outer, inner)
            if memo["trap", outer, inner]:
                warnings.append(issue(
                    model_path(model),
                    f"labels of {inner!r} repeat in every level of {outer!r}, so ({'1'}|{inner}) is crossed with "
                    f"({'1'}|{outer}) (lme4's reading); if each {outer} has its own {inner}s, write "
                    f"(1|{outer}/{inner})", "warning"))


def _labels_repeat(frame: pd.DataFrame, outer: str, inner: str) -> bool:
    """The crossed-labels trap for one pair of grouping columns (see _crossed_trap), on integer
    codes (three pandas group-bys over millions of text labels took seconds)."""
    a, n_a = _codes(frame[outer])
    b, n_b = _codes(frame[inner])
    keep = (a >= 0) & (b >= 0)
    a, b = a[keep], b[keep]
    present_a, present_b = np.bincount(a, minlength=n_a) > 0, np.bincount(b, minlength=n_b) > 0
    n_outer, n_inner = int(present_a.sum()), int(present_b.sum())
    if not (n_inner < n_outer and n_inner >= 2):
        return False
    cells, counts = np.unique(a * np.int64(n_b) + b, return_counts=True)
    spread = np.bincount(cells % n_b, minlength=n_b)[present_b]  # outer levels per inner label
    within = np.bincount(cells // n_b, minlength=n_a)[present_a]  # inner labels per outer level
    return bool(spread.min() > 1 and within.min() > 1 and counts.min() >= 2)


def _codes(column: pd.Series) -> tuple[np.ndarray, int]:
    """Integer codes (-1: missing) and their count, from a categorical's own codes if it is one."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(dtype=np.int64), len(column.cat.categories)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return codes.astype(np.int64), len(uniques)
