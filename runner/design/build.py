"""ModelFormula + cleaned DataFrame -> Design (y, X, random blocks in lme4's order).

The fixed part and every random-term lhs go through formulaic, so the fixed and
random parts of a model agree on coding (treatment contrasts, first level as
reference). Random terms are sorted as lme4's mkReTrms sorts them, because theta,
VarCorr rows and reports follow that order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import formulaic

from runner.design.checks import rank_keep, scale_warning
from runner.design.grouping import group_factor
from runner.design.model import Design, FixedColumn, RandomBlock
from runner.design.naming import column_names, lme4_name
from runner.formula.model import ModelFormula, RandomTerm
from runner.formula.variables import fixed_variables, response_variables, slope_variables


class DesignError(ValueError):
    """The data cannot give the model's design (bad values, unidentifiable terms)."""


def _as_factors(frame: pd.DataFrame, used: set[str]) -> pd.DataFrame:
    """The text columns formulaic will read (`used`) become categoricals with sorted levels,
    so it codes them as factors with lme4's reference level. Grouping columns are left to
    grouping.as_factor (converting an 11,520-row id column here cost more than a small fit)."""
    text = [c for c in frame.columns if c in used and pd.api.types.is_string_dtype(frame[c].dtype)
            and not isinstance(frame[c].dtype, pd.CategoricalDtype)]
    if not text:
        return frame
    conv = {}
    for c in text:
        cat = pd.Categorical(frame[c])  # pandas sorts the categories when it can (fast path)
        levels = cat.categories.to_numpy(dtype=object)
        if levels.size > 1 and not np.all(levels[:-1] < levels[1:]):  # not as Python sorts: be explicit
            cat = pd.Categorical(frame[c], categories=sorted(pd.unique(frame[c].dropna())))
        conv[c] = cat
    return frame.assign(**conv)


def _matrix(rhs: str, frame: pd.DataFrame, what: str) -> tuple[np.ndarray, list[str], set[str]]:
    """formulaic model matrix as float64, its column names and the data columns it used."""
    try:
        mm = formulaic.model_matrix(rhs, frame, na_action="raise")
    except Exception as exc:  # formulaic raises many types; the user needs the term and why
        raise DesignError(f"cannot build the {what} from '{rhs}': {exc}") from exc
    X = np.asarray(mm.to_numpy(dtype=float), dtype=np.float64)
    if X.shape[0] != len(frame):
        raise DesignError(f"the {what} dropped rows: missing values in '{rhs}'")
    variables = set(mm.model_spec.variables_by_source.get("data", set()))
    return X, [str(c) for c in mm.columns], variables


def _response(mf: ModelFormula, frame: pd.DataFrame) -> np.ndarray:
    if mf.response in frame.columns:
        y = pd.to_numeric(frame[mf.response], errors="coerce").to_numpy(dtype=float)
    else:
        X, _, _ = _matrix(f"0 + {mf.response}", frame, "response")
        if X.shape[1] != 1:
            raise DesignError(f"the response '{mf.response}' must be one numeric column")
        y = X[:, 0]
    if not np.all(np.isfinite(y)):
        raise DesignError(f"the response '{mf.response}' has NaN or infinite values")
    return y


def _fixed(mf: ModelFormula, frame: pd.DataFrame) -> tuple[np.ndarray, list[FixedColumn], list[str], list[str]]:
    """X with rank-deficient columns dropped (named, lme4's rule) and the scale warning."""
    X, names, _ = _matrix(mf.fixed_rhs, frame, "fixed-effects model matrix")
    if not np.all(np.isfinite(X)):
        raise DesignError("the fixed-effects model matrix has NaN or infinite values")
    warnings: list[str] = []
    keep = rank_keep(X)
    dropped = [lme4_name(names[j]) for j in range(X.shape[1]) if j not in set(keep.tolist())]
    if dropped:
        warnings.append(
            "fixed-effect model matrix is rank deficient so dropping "
            f"{len(dropped)} column{'s' if len(dropped) > 1 else ''} / coefficient"
            f"{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}")
        X = X[:, keep]
        names = [names[j] for j in keep]
    msg = scale_warning(X)
    if msg:
        warnings.append(msg)
    return np.ascontiguousarray(X), [column_names(n) for n in names], dropped, warnings


def _block(term: RandomTerm, frame: pd.DataFrame) -> RandomBlock:
    codes, levels = group_factor(frame, term.group)
    if term.lhs == "1":
        X, names, variables = np.ones((len(frame), 1)), ["Intercept"], set()
    else:
        X, names, variables = _matrix(term.lhs, frame, f"random term ({term.lhs} | {term.group_name})")
    if X.shape[1] == 0:
        raise DesignError(f"random term ( {term.lhs} | {term.group_name}) has no columns")
    if not np.all(np.isfinite(X)):
        raise DesignError(f"random term ({term.lhs} | {term.group_name}) has NaN or infinite values")
    if term.covariance == "compound_symmetry" and X.shape[1] < 2:
        # one column has one variance: a shared and an own part cannot be told apart, and
        # counting two parameters would charge AIC for a parameter the data cannot inform
        raise DesignError(f"homcs({term.lhs} | {term.group_name}) has {X.shape[1]} column: compound symmetry "
                          f"needs at least 2 (e.g. homcs(0 + f | g) for a factor f); for one column write "
                          f"({term.lhs} | {term.group_name})")
    return RandomBlock(
        id=term.group_name, group=term.group_name, covariance=term.covariance,
        column_names=[lme4_name(n) for n in names], codes=codes, levels=levels,
        X=np.ascontiguousarray(X), factor_columns=tuple(term.group),
        lhs_variables=tuple(sorted(variables)), lhs_is_factor=any("[" in n for n in names))


def lme4_order(nlevels: list[int]) -> list[int]:
    """mkReTrms: if the level counts ever increase, order by rev(order(nl)) (ties reversed)."""
    nl = np.asarray(nlevels)
    if nl.size > 1 and np.any(np.diff(nl) > 0):
        return [int(i) for i in np.argsort(nl, kind="stable")[::-1]]
    return list(range(nl.size))


def _unique_ids(groups: list[str]) -> list[str]:
    """R's make.unique: Subject, Subject.1, Subject.2 in order of appearance."""
    seen: dict[str, int] = {}
    out = []
    for g in groups:
        if g in seen:
            seen[g] += 1
            out.append(f"{g}.{seen[g]}")
        else:
            seen[g] = 0
            out.append(g)
    return out


def _check_response_varies(name: str, y: np.ndarray, X: np.ndarray) -> None:
    """A response the fixed effects fit exactly leaves no residual variance: lme4 returns a
    criterion of -Inf with every SD 0; say why instead of fitting."""
    scale = float(np.max(np.abs(y))) if y.size else 0.0
    if scale == 0.0:
        resid = y
    else:
        beta = np.linalg.lstsq(X, y / scale, rcond=None)[0] if X.shape[1] else np.zeros(0)
        resid = y / scale - X @ beta
    if float(np.max(np.abs(resid), initial=0.0)) <= 1e-12:
        what = "constant" if np.ptp(y) == 0 else "an exact linear function of the fixed effects"
        raise DesignError(f"the response '{name}' is {what}: the residual variance would be 0 "
                          "and nothing can be estimated")


def _shared_columns(blocks: list[RandomBlock]) -> list[str]:
    """Two terms on one grouping factor with a column in common (`(1|a) + (x|a)`: two
    intercept variances for a): only their sum is identified. lme4 fits it and reports a
    degenerate Hessian; say why before fitting."""
    seen: dict[str, dict[str, str]] = {}
    out = []
    for b in blocks:
        cols = seen.setdefault(b.group, {})
        for name in b.column_names:
            if name in cols:
                out.append(f"two terms on '{b.group}' both have the column {name} ({cols[name]} and {b.id}): "
                           "only the sum of their variances is identifiable; write it in one term, "
                           f"e.g. (1 + x | {b.group})")
            else:
                cols[name] = b.id
    return out


def _check_identifiable(blocks: list[RandomBlock], n: int) -> None:
    for b in blocks:
        if b.nlevels >= n:
            raise DesignError(
                f"grouping factor '{b.group}' has {b.nlevels} levels for {n} observations: "
                "a random effect with one level per row is not identifiable from the residual")
        if b.nlevels * b.ncols >= n:
            raise DesignError(
                f"term on '{b.group}' has {b.nlevels * b.ncols} random effects for {n} observations: "
                "its variance and the residual variance are not identifiable")


def _vector(frame: pd.DataFrame, column: str | None, what: str) -> np.ndarray | None:
    if column is None:
        return None
    if column not in frame.columns:
        raise DesignError(f"{what} column '{column}' is not in the data")
    v = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(v)):
        raise DesignError(f"{what} column '{column}' has NaN or infinite values")
    return v


def build_design(mf: ModelFormula, frame: pd.DataFrame, weights: str | None = None,
                 offset: str | None = None) -> Design:
    """Numeric design of one model on the rows of `frame` (already cleaned of missing values)."""
    if not mf.random:
        raise DesignError("no random-effects terms: a mixed model needs at least one (…|group) term")
    frame = _as_factors(frame, response_variables(mf) | fixed_variables(mf) | slope_variables(mf))
    y = _response(mf, frame)
    X, fixed, dropped, warnings = _fixed(mf, frame)
    _check_response_varies(mf.response, y, X)
    raw = [_block(t, frame) for t in mf.random]
    blocks = [raw[i] for i in lme4_order([b.nlevels for b in raw])]
    for b, ident in zip(blocks, _unique_ids([b.group for b in blocks])):
        b.id = ident
    _check_identifiable(blocks, len(y))
    warnings += _shared_columns(blocks)
    w = _vector(frame, weights, "weights")
    if w is not None and np.any(w <= 0):
        raise DesignError(f"weights column '{weights}' must be positive")
    off = _vector(frame, offset, "offset")
    return Design(response=mf.response, y=y, X=X, fixed=fixed, blocks=blocks, weights=w,
                  offset=off, dropped_fixed=dropped, warnings=warnings)
