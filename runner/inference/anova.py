"""Type III F tests as lmerTest 3.1's anova(type = 3).

The hypotheses are built as lmerTest's get_contrasts_type3: in treatment coding, L =
t(ginv(X) rdX) with rdX the over-parameterized (all levels) design; the columns of a term
contained in others (same covariates, a strict subset of the variables) are orthogonalized
against theirs, higher-order terms first; the rows of L that are X's columns are kept and
mapped to the model's own coding by ginv(X_treatment) X. Models with at most one term use
type I (Doolittle) contrasts as lmerTest does. Each term is tested by Satterthwaite's
contestMD or Kenward-Roger's scaled F.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from runner.design.coding import contrast_codings
from runner.distributions import f_sf

from runner.fit import AnovaRow
from runner.inference.terms import Term, TermStructure, Variable


def zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall: round to `digits` significant digits of the largest entry."""
    x = np.asarray(x, dtype=float)
    mx = float(np.max(np.abs(x))) if x.size else 0.0
    if not mx > 0:
        return x
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))))


def _var_columns(v: Variable, contrasted: bool) -> tuple[np.ndarray, list[tuple]]:
    """Columns of one variable in a term and a key per column (level index or block column)."""
    if v.codes is None:  # a covariate: its own columns
        assert v.values is not None
        return v.values, [("c", a) for a in range(v.values.shape[1])]
    onehot = np.zeros((v.codes.size, v.nlevels))
    onehot[np.arange(v.codes.size), v.codes] = 1.0
    keep = list(range(1, v.nlevels)) if contrasted else list(range(v.nlevels))
    return onehot[:, keep], [("l", k) for k in keep]


def _term_matrix(term: Term, s: TermStructure, coding: dict[str, bool]) -> tuple[np.ndarray, list[tuple]]:
    """R's model.matrix columns of one term (first variable fastest) and their keys."""
    first, *rest = term.variables  # a term has at least one variable
    mat, k0 = _var_columns(s.variables[first], coding.get(first, False))
    keys: list[tuple] = [(x,) for x in k0]
    for name in rest:
        m, k = _var_columns(s.variables[name], coding.get(name, False))
        mat = np.column_stack([mat[:, a] * m[:, b] for b in range(m.shape[1]) for a in range(mat.shape[1])])
        keys = [keys[a] + (k[b],) for b in range(len(k)) for a in range(len(keys))]
    return mat, keys


def _contained_in(s: TermStructure) -> dict[str, list[str]]:
    """lmerTest's containment: T1 is in T2 when T2 has all of T1's variables and more, and
    the same covariates."""
    vars_ = {t.label: set(t.variables) for t in s.terms}
    nums = {t.label: {v for v in t.variables if not s.variables[v].is_factor} for t in s.terms}
    return {a: [b for b in vars_ if vars_[a] <= vars_[b] and vars_[b] - vars_[a] and nums[a] == nums[b]]
            for a in vars_}


def _lstsq_resid(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(A, B, rcond=None)
    return B - A @ coef


def type3_contrasts(s: TermStructure, X: np.ndarray) -> dict[str, np.ndarray]:
    """term label -> contrast matrix (rows over X's columns) of its type III hypothesis."""
    p = X.shape[1]
    if p <= 1 or len(s.terms) <= 1:
        return _type1(s, X)
    n = X.shape[0]
    codings = contrast_codings([t.variables for t in s.terms],
                               lambda v: s.variables[v].nlevels if s.variables[v].is_factor else None, s.intercept)
    # X in treatment coding and the over-parameterized rdX, with keys to match their columns
    xt_blocks: list[np.ndarray] = []
    xt_keys: list[tuple[Any, ...]] = []
    xt_map: dict[str, list[int]] = {}
    rd_blocks: list[np.ndarray] = []
    rd_keys: list[tuple[Any, ...]] = []
    if s.intercept:
        xt_blocks.append(np.ones((n, 1)))
        xt_keys.append(("(Intercept)",))
        rd_blocks.append(np.ones((n, 1)))
        rd_keys.append(("(Intercept)",))
    col = len(xt_keys)
    for t, coding in zip(s.terms, codings):
        m, keys = _term_matrix(t, s, coding)
        xt_blocks.append(m)
        xt_keys += [(t.label, k) for k in keys]
        xt_map[t.label] = list(range(col, col + m.shape[1]))
        col += m.shape[1]
        full = {v: False for v in t.variables}
        m2, keys2 = _term_matrix(t, s, full)
        rd_blocks.append(m2)
        rd_keys += [(t.label, k) for k in keys2]
    Xt = np.column_stack(xt_blocks)
    rdX = np.column_stack(rd_blocks)
    if np.linalg.matrix_rank(Xt) < Xt.shape[1]:
        raise ValueError("the treatment-coded design is rank deficient (empty cells)")
    Xt_pinv = np.linalg.pinv(Xt)
    L = zapsmall((Xt_pinv @ rdX).T)  # rows: rdX columns, columns: Xt columns
    contained = _contained_in(s)
    order = sorted(range(len(s.terms)), key=lambda j: -len(s.terms[j].variables))  # stable
    for j in order:
        label = s.terms[j].label
        if contained[label]:
            cols = xt_map[label]
            others = [c for b in contained[label] for c in xt_map[b]]
            L[:, cols] = zapsmall(_lstsq_resid(L[:, others], L[:, cols]))
    index = {k: i for i, k in enumerate(rd_keys)}
    L = L[[index[k] for k in xt_keys], :]
    mapping = zapsmall(Xt_pinv @ X)  # treatment coding -> the model's coding
    out = {}
    for t in s.terms:
        Lt = L[:, xt_map[t.label]].T
        Lt = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
        out[t.label] = Lt @ mapping
    return out


def _type1(s: TermStructure, X: np.ndarray) -> dict[str, np.ndarray]:
    """lmerTest's get_contrasts_type1: rows of the normalized Doolittle factor of X'X."""
    p = X.shape[1]
    if p == 1:
        U = np.ones((1, 1))
    else:
        R = np.linalg.cholesky(X.T @ X).T  # X'X = R'R; Doolittle's t(L) = R / diag(R)
        U = R / np.diag(R)[:, None]
        U[np.abs(U) < 1e-6] = 0.0
    return {t.label: U[t.columns] for t in s.terms}


def anova_rows(contrasts: dict[str, np.ndarray], beta: np.ndarray, tester: object) -> list[AnovaRow]:
    """One F test per term with `tester.f_test(L, beta) -> (F, q, ddf)`."""
    rows = []
    for label, L in contrasts.items():
        if L.shape[0] == 0:
            rows.append(AnovaRow(term=label, num_df=0, den_df=None, F=None, p_value=None))
            continue
        F, q, ddf = tester.f_test(L, beta)  # type: ignore[attr-defined]
        rows.append(AnovaRow(term=label, num_df=int(q), den_df=float(ddf), F=float(F),
                             p_value=float(f_sf(F, q, ddf))))
    return rows
