"""R's model.matrix for the expanded terms of a formula part (fixed, or a random-term lhs).

Each term's columns are the products of its variables' columns, the first variable
varying fastest. A factor is coded by its contrasts or by indicators of every level
following R's model.c (TermCode): contrasts when the term without the factor is empty
or is contained in a preceding term, indicators otherwise; without an intercept the
first factor of the first term holding one gets indicators. Names are R's:
`(Intercept)`, `age`, `sexM`, `age:sexM`, `factor(Diet)2`, `f1` (sum, Helmert),
`f.L` (polynomial), `poly(Time, 2)1`, `I(x > 3)TRUE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from runner.design.coding import contrast_codings
from runner.formula.contrasts import contrast_matrix
from runner.formula.evaluate import State, evaluate
from runner.formula.values import Block, EvalError, Factor
from runner.formula.rterms import Terms


@dataclass
class Column:
    """One model-matrix column: R's name, the variables of its term, the factor levels it codes."""

    name: str
    variable: str | None
    level: str | None


@dataclass
class ModelMatrix:
    X: np.ndarray
    columns: list[Column]
    factors: list[str] = field(default_factory=list)  # variables that are factors

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def _bad_rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(int(r) + 1) for r in rows[:5])
    return f"row{'s' if rows.size > 1 else ''} {shown}{', ...' if rows.size > 5 else ''} ({rows.size} in all)"


def materialize(terms: Terms, frame: pd.DataFrame, state: State, learn_frame: pd.DataFrame | None = None,
                contrasts: dict[str, str] | None = None, predict: bool = False) -> dict[int, Block | Factor]:
    """Every variable a term uses, evaluated on `frame` (parameters learned on `learn_frame`).

    `predict`: `frame` holds new rows; every parameter, factor level and contrast comes from
    `state` as a fit recorded it, nothing is learned (a level never fitted is an error).
    """
    used = sorted({i for t in terms.terms for i in t})
    out: dict[int, Block | Factor] = {}
    for i in used:
        node, label = terms.nodes[i], terms.variables[i]
        try:
            if learn_frame is not None and not predict:
                evaluate(node, learn_frame, state, learning=True, contrasts=contrasts)
            v = evaluate(node, frame, state, learning=learn_frame is None and not predict, contrasts=contrasts)
            if predict and isinstance(v, Factor):
                v = _as_fitted(v, state.get("factors", {}).get(label), label)
        except EvalError as exc:
            raise EvalError(f"term '{label}': {exc}", label) from None
        if isinstance(v, Block):
            bad = ~np.isfinite(v.values).all(axis=1)
            if bad.any():
                raise EvalError(f"term '{label}' gives NaN or infinite values at {_bad_rows(bad)} of the model's "
                                "rows (e.g. log(0), sqrt(-1), division by 0, as.numeric() of text that is not a number)",
                                label)
        else:
            bad = v.codes < 0
            if bad.any():
                raise EvalError(f"term '{label}' has missing or unknown levels at {_bad_rows(bad)}", label)
            if not predict:
                v = _drop_unused(v)
                state.setdefault("factors", {})[label] = {"levels": list(v.levels), "contrast": v.contrast,
                                                          "base": v.base, "numbered": v.numbered}
        out[i] = v
    return out


def _as_fitted(f: Factor, fitted: dict[str, Any] | None, label: str) -> Factor:
    """A factor on new rows coded with the fitted levels and contrast."""
    if fitted is None:
        raise EvalError(f"term '{label}' was not a factor in the fitted model")
    levels = list(fitted["levels"])
    index = {lv: j for j, lv in enumerate(levels)}
    labels = [f.levels[c] if c >= 0 else None for c in f.codes]
    unseen = sorted({lv for lv in labels if lv is not None and lv not in index})
    if unseen:
        raise EvalError(f"term '{label}' has level{'s' if len(unseen) > 1 else ''} {', '.join(unseen[:5])} "
                        f"not in the fitted data (levels: {', '.join(levels[:10])})")
    codes = np.asarray([index[lv] if lv is not None else -1 for lv in labels], dtype=np.int64)
    return Factor(codes, levels, fitted["contrast"], int(fitted["base"]), logical=f.logical,
                  numbered=bool(fitted.get("numbered", False)))


def _drop_unused(f: Factor) -> Factor:
    """lme4's drop.unused.levels (logicals keep FALSE and TRUE, as model.matrix codes them)."""
    if f.logical:
        return f
    present = np.zeros(len(f.levels), dtype=bool)
    present[f.codes[f.codes >= 0]] = True
    if present.all():
        return f
    keep = np.flatnonzero(present)
    remap = np.full(len(f.levels), -1, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    base = int(remap[f.base]) if present[f.base] else 0
    return Factor(remap[f.codes], [f.levels[j] for j in keep], f.contrast, base, numbered=f.numbered)


def _variable_columns(label: str, value: Block | Factor, contrasted: bool | None
                      ) -> tuple[np.ndarray, list[str], list[str | None]]:
    """(n x k, names, level per column) of one variable within a term."""
    if isinstance(value, Block):  # one column keeps the bare name (R: poly(x, 1), scale(x))
        names = [label] if len(value.suffixes) == 1 else [label + s for s in value.suffixes]
        return value.values, names, [None] * len(value.suffixes)
    k = len(value.levels)
    if contrasted:
        named = [str(j + 1) for j in range(k)] if value.numbered else value.levels
        C, suffixes = contrast_matrix(value.contrast, named, value.base)
        levels: list[str | None] = list(suffixes) if value.contrast == "treatment" else [None] * len(suffixes)
        return C[value.codes], [label + s for s in suffixes], levels  # = indicators @ contrasts
    return np.eye(k)[value.codes], [label + lv for lv in value.levels], list(value.levels)


MAX_VALUES = 400_000_000  # 3.2 GB of float64: a factor with a level per row is a mistake, not a model


def _width(value: Block | Factor) -> int:
    return value.values.shape[1] if isinstance(value, Block) else len(value.levels)


def columns_of(terms: Terms, values: dict[int, Block | Factor], nrows: int | None = None) -> ModelMatrix:
    """R's model.matrix of `terms` from evaluated variables (`nrows` for `~ 1`, which has none)."""
    n = next((len(v.codes) if isinstance(v, Factor) else v.values.shape[0] for v in values.values()), nrows)
    width = sum(int(np.prod([_width(values[v]) for v in t])) for t in terms.terms)
    if (n or 0) * width > MAX_VALUES:
        raise EvalError(f"the model matrix would have {n:,} rows x up to {width:,} columns "
                        f"({(n or 0) * width * 8 / 1e9:.1f} GB); is a factor with a level per row meant as a "
                        "grouping factor, (1 | x)?")
    blocks: list[np.ndarray] = []
    columns: list[Column] = []
    if terms.intercept:
        blocks.append(np.ones((n if n is not None else 0, 1)))
        columns.append(Column("(Intercept)", None, None))
    codings = contrast_codings(terms.terms, lambda v: len(f.levels) if isinstance(f := values[v], Factor) else None,
                               terms.intercept)
    for t, coding in zip(terms.terms, codings):
        mat: np.ndarray | None = None
        names: list[str] = []
        levels: list[list[str]] = []
        for v in t:
            m, nm, lv = _variable_columns(terms.variables[v], values[v], coding.get(v))
            if mat is None:
                mat, names, levels = m, nm, [[x] if x is not None else [] for x in lv]
                continue
            mat = np.column_stack([mat[:, a] * m[:, b] for b in range(m.shape[1]) for a in range(mat.shape[1])]) \
                if mat.shape[1] and m.shape[1] else np.zeros((mat.shape[0], 0))
            names = [f"{names[a]}:{nm[b]}" for b in range(len(nm)) for a in range(len(names))]
            levels = [levels[a] + ([lvb] if (lvb := lv[b]) is not None else []) for b in range(len(nm))
                      for a in range(len(levels))]
        assert mat is not None
        variable = ":".join(terms.variables[v] for v in t)
        blocks.append(mat)
        columns += [Column(nm, variable, ":".join(lv) if lv else None) for nm, lv in zip(names, levels)]
    X = np.column_stack(blocks) if blocks else np.zeros((n or 0, 0))
    factors = [terms.variables[i] for i, v in values.items() if isinstance(v, Factor)]
    return ModelMatrix(np.ascontiguousarray(X, dtype=np.float64), columns, factors)
