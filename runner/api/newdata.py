"""A fitted model's design on new rows: the fixed-effects matrix, each random term's
columns, and each row's level of every grouping factor (-1 for a level not fitted).

Why one module: this is the only place that re-evaluates a formula on data other than
the fitted rows, so what was learned at fit time (factor levels, contrasts and reference
levels, scale()/poly() parameters, a spec's centring) is reused, never relearned.

The hook into the formula engine is `_matrix`: R's terms() of the formula part
(`runner.design.build.fixed_terms`/`_lhs_terms`), each variable evaluated by
`runner.formula.evaluate.evaluate` with `learning=False` over the design's
`formula_state` (a copy), factors re-coded to the levels, contrast and base the fit
recorded in `formula_state["factors"]`, then `runner.design.model_matrix.model_matrix`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from runner.api.context import ModelContext, block_terms
from runner.data.errors import DataError
from runner.formula.variables import expression_variables, fixed_variables
from runner.spec.errors import SpecIssue
from runner.spec.validation_issues import suggest


@dataclass
class NewDesign:
    """The model's matrices on new rows; `missing` marks rows with a missing predictor."""

    X: np.ndarray  # (n, p) in the fit's fixed-effect order
    offset: np.ndarray | None
    blocks: list[tuple[np.ndarray, np.ndarray]]  # per design block: (n, q) columns, (n,) level codes or -1
    missing: np.ndarray  # (n,) bool
    new_levels: dict[str, list[str]]  # block group -> labels not among the fitted levels


def _issue(path: str, message: str) -> SpecIssue:
    return SpecIssue(None, None, None, path, message)


def _label(value: Any) -> str:
    from runner.design.grouping import _label as label

    return label(value)


def _recode(value: Any, info: dict[str, Any] | None, label: str) -> Any:
    """A factor on new rows with the fitted levels, contrast and reference (unused levels are
    kept: the new rows may not show every level, the columns must stay the fit's)."""
    from runner.formula.evaluate import Factor

    if not isinstance(value, Factor) or info is None:
        return value
    levels = list(info["levels"])
    index = {lv: j for j, lv in enumerate(levels)}
    labels = [value.levels[c] if c >= 0 else None for c in value.codes]
    unseen = sorted({lb for lb in labels if lb is not None and lb not in index})
    if unseen:
        raise DataError([_issue("newdata", f"level{'s' if len(unseen) > 1 else ''} "
                                f"{', '.join(map(repr, unseen[:5]))} of '{label}' not in the fitted data (levels: "
                                f"{', '.join(levels[:10])}); a fixed effect has no value for a new level")])
    codes = np.fromiter((index[lb] if lb is not None else -1 for lb in labels), dtype=np.int64, count=len(labels))
    return Factor(codes, levels, info.get("contrast", value.contrast), int(info.get("base", value.base)),
                  value.logical)


def _matrix(ctx: ModelContext, terms: Any, frame: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
    """R's model.matrix of `terms` on `frame` with the state learned on the fitted rows;
    also the rows where a variable is missing (their factor codes are set to the first level)."""
    from runner.design.model_matrix import columns_of
    from runner.formula.evaluate import EvalError, Factor, evaluate

    state = copy.deepcopy(ctx.design.formula_state)
    learned = state.get("factors", {})
    values: dict[int, Any] = {}
    missing = np.zeros(len(frame), bool)
    for i in sorted({i for t in terms.terms for i in t}):
        label = terms.variables[i]
        try:
            v = evaluate(terms.nodes[i], frame, state, learning=False)
        except EvalError as exc:
            raise DataError([_issue("newdata", f"term '{label}': {exc}")]) from None
        v = _recode(v, learned.get(label), label)
        if isinstance(v, Factor):
            bad = v.codes < 0
            missing |= bad
            v = Factor(np.where(bad, 0, v.codes), v.levels, v.contrast, v.base, v.logical)
        else:
            missing |= ~np.isfinite(v.values).all(axis=1)
        values[i] = v
    if not values:
        n = len(frame)
        return (np.ones((n, 1)) if terms.intercept else np.zeros((n, 0))), \
            (["(Intercept)"] if terms.intercept else []), missing
    mm = columns_of(terms, values)
    return mm.X, mm.names, missing


def _prepared(ctx: ModelContext, new: pd.DataFrame, needed: set[str],
              groups: set[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """New rows with the fit's preparation applied (centring, factor levels) and the rows
    missing a value a prediction needs (a missing grouping value means a new level, as
    lme4's allow.new.levels); a fixed-effect factor level never fitted is an error."""
    train = ctx.frame
    absent = sorted(c for c in needed | groups if c not in new.columns)
    if absent:
        raise DataError([_issue("newdata", f"column {c!r} not in the new data{suggest(c, map(str, new.columns))}")
                         for c in absent])
    out = new[[c for c in new.columns if c in needed | groups]].copy()
    values_cols = [c for c in out.columns if c in needed]
    missing = out[values_cols].isna().any(axis=1).to_numpy().copy() if values_cols else np.zeros(len(new), bool)
    issues = []
    for col in [c for c in out.columns if c in needed]:
        how = ctx.centered.get(col)
        if how is not None:
            shifted = pd.to_numeric(out[col], errors="coerce") - float(how["center"])  # type: ignore[arg-type]
            out[col] = shifted / how["scale"] if how.get("scale") else shifted
        if col in train.columns and isinstance(train[col].dtype, pd.CategoricalDtype):
            cats = list(train[col].cat.categories)
            by_label = {_label(c): c for c in cats}
            values = [None if pd.isna(v) else by_label.get(_label(v), v) for v in out[col].astype(object)]
            unseen = sorted({str(v) for v in values if v is not None and _label(v) not in by_label})
            if unseen:
                shown = ", ".join(repr(v) for v in unseen[:5])
                issues.append(_issue(f"newdata.{col}", f"level{'s' if len(unseen) > 1 else ''} {shown} of {col!r} "
                                     f"{'were' if len(unseen) > 1 else 'was'} not in the fitted data (levels: "
                                     f"{', '.join(map(str, cats[:10]))}); a fixed effect has no value for "
                                     "a new level"))
                continue
            out[col] = pd.Categorical(values, categories=cats)
        elif col in train.columns and pd.api.types.is_numeric_dtype(train[col].dtype):
            numeric = pd.to_numeric(out[col], errors="coerce")
            missing |= numeric.isna().to_numpy()
            out[col] = numeric
    if issues:
        raise DataError(issues)
    return out, missing


def group_codes(new: pd.DataFrame, columns: tuple[str, ...], levels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each new row's index among the fitted `levels` of the interaction of `columns` (-1 when
    not fitted, also for a missing value) and the labels not fitted."""
    parts = [new[c].astype(object) for c in columns]
    labels = [None if any(pd.isna(v) for v in row) else ":".join(_label(v) for v in row)
              for row in zip(*parts)] if parts else []
    index = {lv: i for i, lv in enumerate(levels)}
    codes = np.fromiter((index.get(lb, -1) if lb is not None else -1 for lb in labels), dtype=np.int64,
                        count=len(labels))
    unseen = sorted({lb for lb in labels if lb is not None and lb not in index})
    return codes, unseen


def _formula_offsets(ctx: ModelContext, frame: pd.DataFrame, offset: np.ndarray | None) -> np.ndarray | None:
    """`offset(x)` terms of the formula, added to the linear predictor as R does."""
    from runner.design.build import fixed_terms
    from runner.formula.evaluate import Block, evaluate

    for node in fixed_terms(ctx.formula).offsets:
        v = evaluate(node, frame, copy.deepcopy(ctx.design.formula_state), learning=False)
        x = v.values[:, 0] if isinstance(v, Block) else np.asarray(v, float)
        offset = x if offset is None else offset + x
    return offset


def new_design(ctx: ModelContext, newdata: pd.DataFrame, random_effects: bool = True) -> NewDesign:
    """The fit's design on `newdata` (its response is not needed)."""
    mf, design = ctx.formula, ctx.design
    needed = set(fixed_variables(mf))
    terms = block_terms(mf, design) if random_effects else []
    for t in terms:
        needed |= {v for text in t.terms for v in expression_variables(text)}
    if ctx.offset:
        needed.add(ctx.offset)
    groups = {g for t in terms for g in t.group}
    frame, missing = _prepared(ctx, newdata, needed, groups)
    frame = frame.reset_index(drop=True)
    n = len(frame)
    from runner.design.build import _lhs_terms, fixed_terms

    X_all, names, bad = _matrix(ctx, fixed_terms(mf), frame)
    missing |= bad
    pos = {nm: j for j, nm in enumerate(names)}
    X = np.column_stack([X_all[:, pos[c.term]] for c in design.fixed]) if design.fixed else np.zeros((n, 0))
    offset = pd.to_numeric(frame[ctx.offset], errors="coerce").to_numpy(float) if ctx.offset else None
    offset = _formula_offsets(ctx, frame, offset)
    blocks: list[tuple[np.ndarray, np.ndarray]] = []
    unseen: dict[str, list[str]] = {}
    for term, block in zip(terms, design.blocks):
        if term.lhs == "1":
            Z = np.ones((n, 1))
        else:
            Z, _, bad = _matrix(ctx, _lhs_terms(term), frame)
            missing |= bad
        if Z.shape[1] != block.ncols:
            raise ValueError(f"random term on {block.group}: {Z.shape[1]} columns on the new data, "
                             f"{block.ncols} fitted")
        codes, new_levels = group_codes(frame, tuple(term.group), list(block.levels))
        if new_levels:
            unseen.setdefault(block.group, [])
            unseen[block.group] += [lv for lv in new_levels if lv not in unseen[block.group]]
        blocks.append((Z, codes))
    return NewDesign(X=X, offset=offset, blocks=blocks, missing=missing, new_levels=unseen)
