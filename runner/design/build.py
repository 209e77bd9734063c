"""ModelFormula + cleaned DataFrame -> Design (y, X, random blocks in lme4's order).

The fixed part and every random-term lhs are expanded with R's terms() algebra
(`runner.formula.rterms`), their variables evaluated by mixspec's own interpreter
(`runner.formula.evaluate`, no Python eval) and coded as R's model.matrix does
(`runner.design.model_matrix`), so names and coding match lme4's. Stateful transforms
(scale, poly, factor levels) learn their parameters on the rows R's model.frame sees.
Random terms are sorted as lme4's mkReTrms sorts them, because theta, VarCorr rows and
reports follow that order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from runner.design.blas import one_blas_thread
from runner.design.checks import rank_keep, scale_warning
from runner.design.glmm_response import GlmmResponseError, from_cbind, from_factor
from runner.design.grouping import group_factor
from runner.design.model import Design, DesignWarning, FixedColumn, RandomBlock
from runner.design.model_matrix import ModelMatrix, materialize, columns_of
from runner.formula import rexpr, rterms
from runner.formula.evaluate import State, evaluate
from runner.formula.values import Block, EvalError
from runner.formula.model import ModelFormula, RandomTerm


class DesignError(ValueError):
    """The data cannot give the model's design (bad values, unidentifiable terms).

    `term` names the formula variable at fault when there is one (for a caret under it)."""

    def __init__(self, message: str, term: str | None = None) -> None:
        super().__init__(message)
        self.term = term


def _as_factors(frame: pd.DataFrame, used: set[str]) -> pd.DataFrame:
    """Text columns in `used` as categoricals with code-point sorted levels (as the evaluator
    orders them). Kept for runner/api/newdata.py, which still builds matrices on new rows
    itself; the design no longer needs it."""
    text = [c for c in frame.columns if c in used and pd.api.types.is_string_dtype(frame[c].dtype)
            and not isinstance(frame[c].dtype, pd.CategoricalDtype)]
    if not text:
        return frame
    return frame.assign(**{c: pd.Categorical(frame[c], categories=sorted(pd.unique(frame[c].dropna())))
                           for c in text})


def fixed_terms(mf: ModelFormula) -> rterms.Terms:
    """R's terms() of the model's fixed part."""
    return rterms.expand([rexpr.parse_expression(t) for t in mf.fixed_terms], "", intercept=mf.intercept)


def _lhs_terms(term: RandomTerm) -> rterms.Terms:
    return rterms.expand([rexpr.parse_expression(t) for t in term.terms], "", intercept=term.intercept)


def _matrix(terms: rterms.Terms, frame: pd.DataFrame, state: State, learn: pd.DataFrame | None,
            contrasts: dict[str, str] | None, what: str) -> ModelMatrix:
    try:
        return columns_of(terms, materialize(terms, frame, state, learn, contrasts), len(frame))
    except EvalError as exc:
        raise DesignError(f"cannot build the {what}: {exc}", exc.term) from None


def response_matrix(mf: ModelFormula, frame: pd.DataFrame) -> np.ndarray:
    """The response evaluated as R does (any expression: `log(y + 1)`, `cbind(s, f)`): n x k."""
    try:
        v = evaluate(rexpr.parse_expression(mf.response), frame, {}, learning=True)
    except EvalError as exc:
        raise DesignError(f"the response '{mf.response}': {exc}") from None
    if not isinstance(v, Block):
        raise DesignError(f"the response '{mf.response}' is not numeric (it is a factor or text)")
    return v.values


def _response(mf: ModelFormula, frame: pd.DataFrame) -> np.ndarray:
    Y = response_matrix(mf, frame)
    if Y.shape[1] == 2:
        raise DesignError(f"the response '{mf.response}' has two columns (successes, failures): that is a binomial "
                          "model, which needs `family: binomial`; mixspec fits gaussian models here")
    if Y.shape[1] != 1:
        raise DesignError(f"the response '{mf.response}' must be one numeric column")
    y = Y[:, 0]
    bad = ~np.isfinite(y)
    if bad.any():
        rows = ", ".join(str(int(r) + 1) for r in np.flatnonzero(bad)[:5])
        raise DesignError(f"the response '{mf.response}' has NaN or infinite values (rows {rows} of the model's rows)")
    return y


def _binomial_response(mf: ModelFormula, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """A binomial response as glm reads it: (y, trials or None, success level or None).

    A two-level factor, text or logical column gives 0/1 with the second level as success;
    `cbind(successes, failures)` gives proportions with the trials as prior weights; a
    number column (0/1, or proportions with `weights:` as trials) is taken as it is."""
    column = frame[mf.response] if mf.response in frame.columns else None
    factor_like = column is not None and (pd.api.types.is_bool_dtype(column.dtype)
                                          or not pd.api.types.is_numeric_dtype(column.dtype))
    try:
        if factor_like:
            y, success = from_factor(column, name=mf.response)
            return y, None, success
        Y = response_matrix(mf, frame)
        if Y.shape[1] == 2:
            names = _cbind_names(mf.response)
            y, trials = from_cbind(Y[:, 0], Y[:, 1], names)
            return y, trials, None
    except GlmmResponseError as exc:
        raise DesignError(str(exc)) from None
    if Y.shape[1] != 1:
        raise DesignError(f"the response '{mf.response}' must be one column or cbind(successes, failures)")
    return Y[:, 0], None, None


def _cbind_names(response: str) -> tuple[str, str]:
    """The two argument texts of `cbind(a, b)`, for messages."""
    node = rexpr.parse_expression(response)
    args: tuple[rexpr.Node, ...] = tuple(getattr(node, "args", ()))
    if len(args) == 2:
        return rexpr.deparse(args[0]), rexpr.deparse(args[1])
    return ("successes", "failures")


def _fixed(terms: rterms.Terms, frame: pd.DataFrame, state: State, learn: pd.DataFrame | None,
           contrasts: dict[str, str] | None
           ) -> tuple[np.ndarray, list[FixedColumn], list[str], list[DesignWarning]]:
    """X with rank-deficient columns dropped (named, lme4's rule) and the scale warning;
    `terms`: the fixed part's `fixed_terms`."""
    mm = _matrix(terms, frame, state, learn, contrasts, "fixed-effects model matrix")
    X, cols = mm.X, mm.columns
    warnings = [DesignWarning("design", w) for w in terms.warnings]
    keep = rank_keep(X)
    kept = set(keep.tolist())
    dropped = [cols[j].name for j in range(X.shape[1]) if j not in kept]
    if dropped:
        warnings.append(DesignWarning("rank_deficient",
            "fixed-effect model matrix is rank deficient so dropping "
            f"{len(dropped)} column{'s' if len(dropped) > 1 else ''} / coefficient"
            f"{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}"))
        X = X[:, keep]
        cols = [cols[j] for j in keep]
    msg = scale_warning(X)
    if msg:
        warnings.append(DesignWarning("scale_x", msg))
    fixed = [FixedColumn(term=c.name, lme4_name=c.name, variable=c.variable, level=c.level) for c in cols]
    return np.ascontiguousarray(X), fixed, dropped, warnings


def _offset(terms: rterms.Terms, frame: pd.DataFrame, state: State, learn: pd.DataFrame | None) -> np.ndarray | None:
    """The sum of the formula's offset() terms (R adds them all to the linear predictor)."""
    total = None
    for node in terms.offsets:
        label = f"offset({rexpr.deparse(node)})"
        try:
            if learn is not None:
                evaluate(node, learn, state, learning=True)
            v = evaluate(node, frame, state, learning=learn is None)
        except EvalError as exc:
            raise DesignError(f"the term '{label}': {exc}") from None
        if not isinstance(v, Block) or v.values.shape[1] != 1:
            raise DesignError(f"the term '{label}' must be one numeric column")
        x = v.values[:, 0]
        if not np.all(np.isfinite(x)):
            raise DesignError(f"the term '{label}' has NaN or infinite values")
        total = x if total is None else total + x
    return total


def _block(term: RandomTerm, frame: pd.DataFrame, state: State, learn: pd.DataFrame | None,
           contrasts: dict[str, str] | None) -> RandomBlock:
    absent = [g for g in term.group if g not in frame.columns]
    if absent:
        raise DesignError(f"grouping factor column '{absent[0]}' is not in the data")
    codes, levels = group_factor(frame, term.group)
    where = f"random term ({term.lhs} | {term.group_name})"
    if term.lhs == "1":
        X, names = np.ones((len(frame), 1)), ["(Intercept)"]
    else:
        mm = _matrix(_lhs_terms(term), frame, state, learn, contrasts, where)
        X, names = mm.X, mm.names
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
    return RandomBlock(id=term.group_name, group=term.group_name, covariance=term.covariance,
                       column_names=list(names), codes=codes, levels=levels, X=np.ascontiguousarray(X))


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


def _shared_columns(blocks: list[RandomBlock]) -> list[DesignWarning]:
    """Two terms on one grouping factor with a column in common (`(1|a) + (x|a)`: two
    intercept variances for a): only their sum is identified. lme4 fits it and reports a
    degenerate Hessian; say why before fitting."""
    seen: dict[str, dict[str, str]] = {}
    out = []
    for b in blocks:
        cols = seen.setdefault(b.group, {})
        for name in b.column_names:
            if name in cols:
                out.append(DesignWarning("design", (
                    f"two terms on '{b.group}' both have the column {name} ({cols[name]} and {b.id}): "
                    "only the sum of their variances is identifiable; write it in one term, "
                    f"e.g. (1 + x | {b.group})")))
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
                 offset: str | None = None, learn_frame: pd.DataFrame | None = None,
                 contrasts: dict[str, str] | None = None, family: str = "gaussian") -> Design:
    """Numeric design of one model on the rows of `frame` (already cleaned of missing values).

    `learn_frame` holds the rows R's model.frame evaluates variables on (after the filter,
    before rows with missing values are dropped): scale(), poly() and factor() learn their
    parameters there. Without it they learn on `frame`. `contrasts` maps a column to its
    coding from the spec (`data.categorical.<col>.contrast`). `family` other than gaussian
    reads the response as glm does (factor, `cbind()`) and allows lme4's observation-level
    random effects (`(1|obs)`, for overdispersion).

    Runs with one BLAS thread, as the engines' fits do (runner.design.blas says why).
    """
    with one_blas_thread():
        return _build_design(mf, frame, weights, offset, learn_frame, contrasts, family)


def _build_design(mf: ModelFormula, frame: pd.DataFrame, weights: str | None, offset: str | None,
                  learn_frame: pd.DataFrame | None, contrasts: dict[str, str] | None, family: str) -> Design:
    if not mf.random:
        raise DesignError("no random-effects terms: a mixed model needs at least one (…|group) term")
    state: dict[str, Any] = {}
    glmm = family != "gaussian"
    trials, success = None, None
    if family == "binomial":
        y, trials, success = _binomial_response(mf, frame)
    else:
        y = _response(mf, frame)
    terms = fixed_terms(mf)  # parsed and expanded once per design
    X, fixed, dropped, warnings = _fixed(terms, frame, state, learn_frame, contrasts)
    off = _offset(terms, frame, state, learn_frame)
    if not glmm:
        _check_response_varies(mf.response, y if off is None else y - off, X)
    raw = [_block(t, frame, state, learn_frame, contrasts) for t in mf.random]
    for i, b in enumerate(raw):
        b.term_index = i
    blocks = [raw[i] for i in lme4_order([b.nlevels for b in raw])]
    for b, ident in zip(blocks, _unique_ids([b.group for b in blocks])):
        b.id = ident
    if not glmm:  # a GLMM's variance is the family's: one level per row is lme4's overdispersion term
        _check_identifiable(blocks, len(y))
    warnings += _shared_columns(blocks)
    for t in mf.random:
        lhs = [DesignWarning("design", w) for w in _lhs_terms(t).warnings]
        warnings += [w for w in lhs if w not in warnings]
    w = _vector(frame, weights, "weights")
    if w is not None and np.any(w <= 0):
        raise DesignError(f"weights column '{weights}' must be positive")
    if trials is not None:  # cbind(): the trials are prior weights, times any given
        w = trials if w is None else w * trials
    spec_off = _vector(frame, offset, "offset")
    if spec_off is not None:
        off = spec_off if off is None else off + spec_off
    return Design(response=mf.response, y=y, X=X, fixed=fixed, blocks=blocks, weights=w,
                  offset=off, dropped_fixed=dropped, warnings=warnings, formula_state=state,
                  success_level=success)


def design_for(prepared: Any, name: str, mf: ModelFormula, weights: str | None = None,
               offset: str | None = None, family: str = "gaussian") -> Design:
    """The design of model `name` on its rows of `prepared` data (a PreparedData): variables
    are learned on all filtered rows, as R's model.frame, with the spec's contrasts."""
    return build_design(mf, prepared.frame_for(name), weights=weights, offset=offset,
                        learn_frame=getattr(prepared, "frame", None), contrasts=getattr(prepared, "contrasts", None),
                        family=family)


def on_new_rows(mf: ModelFormula, design: Design, frame: pd.DataFrame
                ) -> tuple[np.ndarray, np.ndarray | None, list[np.ndarray]]:
    """The fitted model's fixed columns, formula offset and each block's columns (in
    `design.blocks` order) on new rows, with every parameter, level and contrast the fit
    learned (`design.formula_state`): nothing is relearned from the new rows."""
    state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in design.formula_state.items()}

    def columns(terms: rterms.Terms, names: list[str], what: str) -> np.ndarray:
        try:
            mm = columns_of(terms, materialize(terms, frame, state, predict=True), len(frame))
        except EvalError as exc:
            raise DesignError(f"cannot build the {what} on the new rows: {exc}") from None
        index = {n: j for j, n in enumerate(mm.names)}
        return mm.X[:, [index[n] for n in names]] if len(frame) else np.zeros((0, len(names)))

    X = columns(fixed_terms(mf), [c.lme4_name for c in design.fixed], "fixed-effects model matrix")
    offset = None
    for node in fixed_terms(mf).offsets:
        try:
            v = evaluate(node, frame, state, learning=False)
        except EvalError as exc:
            raise DesignError(f"the term 'offset({rexpr.deparse(node)})' on the new rows: {exc}") from None
        x = v.values[:, 0] if isinstance(v, Block) else np.full(len(frame), np.nan)
        offset = x if offset is None else offset + x
    blocks = []
    for b in design.blocks:
        term = mf.random[b.term_index]
        if term.lhs == "1":
            blocks.append(np.ones((len(frame), 1)))
        else:
            blocks.append(columns(_lhs_terms(term), b.column_names, f"random term ({term.lhs} | {term.group_name})"))
    return X, offset, blocks
