"""The term structure type III hypotheses need, recovered from a `Design`.

What the contrast construction consumes (`TermStructure`): whether the model has an
intercept; per model term its R label, its variables (in R's order) and its X columns;
per variable its rows' values: a factor's level codes or a covariate's column block.
Today's Design has the labels (`FixedColumn.variable` is the term label) and the factor
codings (`formula_state["factors"]`) but not the variables' values, so they are decoded
from each variable's own main-effect columns in X (any contrast coding: the rows of the
contrast matrix are matched). A variable without a main effect in X cannot be decoded:
`structure_from_design` then says so (a design layer exposing the evaluated variables
would remove that limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runner.design.model import Design
from runner.design.naming import split_top_level


@dataclass
class Variable:
    name: str
    codes: np.ndarray | None = None  # factor: (n,) level index
    nlevels: int = 0
    values: np.ndarray | None = None  # covariate: (n, k) block (k > 1 for poly())

    @property
    def is_factor(self) -> bool:
        return self.codes is not None


@dataclass
class Term:
    label: str
    variables: tuple[str, ...]
    columns: list[int]  # indices into X


@dataclass
class TermStructure:
    intercept: bool
    terms: list[Term]
    variables: dict[str, Variable]


def split_label(label: str) -> tuple[str, ...]:
    """`age:sex` -> (age, sex), splitting only at top-level colons (not inside I(a:b))."""
    return tuple(x.strip() for x in split_top_level(label))


def _decode_factor(block: np.ndarray, info: dict) -> np.ndarray | None:
    from runner.formula.contrasts import contrast_matrix

    levels = list(info.get("levels") or [])
    k = len(levels)
    if k < 2:
        return np.zeros(block.shape[0], dtype=np.int64) if k == 1 else None
    if block.shape[1] == k:  # indicator coding (no intercept)
        C = np.eye(k)
    else:
        C, _ = contrast_matrix(str(info.get("contrast") or "treatment"), levels, int(info.get("base") or 0))
    if C.shape[1] != block.shape[1]:
        return None
    d = ((block[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
    codes = np.argmin(d, axis=1)
    if not np.allclose(d[np.arange(codes.size), codes], 0.0, atol=1e-8):
        return None
    return codes.astype(np.int64)


def structure_from_design(design: Design) -> TermStructure | str:
    """The structure, or the reason it cannot be recovered."""
    if design.dropped_fixed:
        return "rank-deficient fixed effects (dropped columns): type III hypotheses not computed"
    intercept = False
    terms: dict[str, Term] = {}
    for j, col in enumerate(design.fixed):
        if col.variable is None:
            intercept = True
            continue
        t = terms.get(col.variable)
        if t is None:
            terms[col.variable] = t = Term(col.variable, split_label(col.variable), [])
        t.columns.append(j)
    factors = dict((design.formula_state or {}).get("factors", {}))
    variables: dict[str, Variable] = {}
    for name in dict.fromkeys(v for t in terms.values() for v in t.variables):
        main = terms.get(name)
        if main is None:
            return f"variable {name} has no main effect in the model: its type III hypotheses need its values"
        block = design.X[:, main.columns]
        if name in factors:
            codes = _decode_factor(block, factors[name])
            if codes is None:
                return f"the coding of factor {name} could not be decoded from its columns"
            variables[name] = Variable(name, codes=codes, nlevels=len(factors[name]["levels"]))
        else:
            variables[name] = Variable(name, values=block)
    return TermStructure(intercept=intercept, terms=list(terms.values()), variables=variables)
