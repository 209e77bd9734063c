"""What a fitted model keeps beyond its numbers: the formula, the design, the rows fitted.

Predictions, simulations, vcov and ML refits all start from this; the same object is
built by `runner.fit` and by a spec run (for `predict:`), so both predict identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from runner.design.model import Design, RandomBlock
from runner.fit import Fit
from runner.formula.model import ModelFormula, RandomTerm


@dataclass
class ModelContext:
    """A fit with the formula, design and prepared rows it came from."""

    formula: ModelFormula
    formula_text: str
    design: Design
    rows: Any  # the rows fitted as the design read them: a DataFrame, or a function making it
    centered: dict[str, dict[str, float | None]] = field(default_factory=dict)  # data.center of a spec
    weights: str | None = None
    offset: str | None = None
    engine: str = "lme"
    row_index: pd.Index | None = None  # labels of the fitted rows in the data the user gave
    family: str = "gaussian"
    link: str = "identity"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frame(self) -> pd.DataFrame:
        """The fitted rows (prepared, missing values dropped); made on first use, since only
        predictions need them and a fit should not pay for a copy of its data."""
        if callable(self.rows):
            self.rows = self.rows()
        return self.rows


def block_terms(mf: ModelFormula, design: Design) -> list[RandomTerm]:
    """The formula's random term behind each design block (blocks are in lme4's order).

    build_design orders the terms by lme4_order of their level counts; every term on one
    grouping factor has that factor's level count, so the order is reproduced exactly.
    """
    from runner.design.build import lme4_order

    nlevels = {b.group: b.nlevels for b in design.blocks}
    raw = list(mf.random)
    order = lme4_order([nlevels[t.group_name] for t in raw])
    terms = [raw[i] for i in order]
    if len(terms) != len(design.blocks) or any(t.group_name != b.group for t, b in zip(terms, design.blocks)):
        raise ValueError("the formula's random terms do not match the design's blocks")
    return terms


def block_covariance(fit: Fit, block: RandomBlock) -> np.ndarray:
    """Sigma of one block (variances and covariances, not relative) from the VarCorr rows."""
    names = list(block.column_names)
    p = len(names)
    S = np.zeros((p, p))
    pos = {n: i for i, n in enumerate(names)}
    for r in fit.random_effects:
        if r.id != block.id:
            continue
        if r.term2 is None:
            S[pos[r.term], pos[r.term]] = r.variance or 0.0
        else:
            a, b = pos[r.term], pos[r.term2]
            S[a, b] = S[b, a] = r.covariance or 0.0
    return S
