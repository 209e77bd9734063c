"""What a formula variable evaluates to: a numeric Block or a Factor, and their errors.

`runner.formula.evaluate` computes them; `runner.design` codes them into columns.
Level labels are R's as.character of the values, so coefficient names match lme4's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from runner.formula.rexpr import format_number


@dataclass
class Factor:
    """A factor on n rows: codes into `levels` (-1 = missing) and how it is coded."""

    codes: np.ndarray
    levels: list[str]
    contrast: str = "treatment"
    base: int = 0  # 0-based reference level for treatment contrasts
    logical: bool = False  # from TRUE/FALSE values: levels stay FALSE, TRUE (as R's model.matrix)
    numbered: bool = False  # treatment columns named by level number (R's C(f, contr.treatment, base = 2))

    def __len__(self) -> int:
        return len(self.codes)


@dataclass
class Block:
    """A numeric variable: n x k values and the suffix each column adds to the name."""

    values: np.ndarray
    suffixes: list[str]


class EvalError(ValueError):
    """The data cannot give a variable's values (wrong type, NaN from a transform).

    `term` is the variable's label when known, so a message can point at it in the formula."""

    def __init__(self, message: str, term: str | None = None) -> None:
        super().__init__(message)
        self.term = term


def level_label(value: Any) -> str:
    """A level as R's as.character writes it (1, 2, 10, 0.5, 1e+05)."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return format_number(float(value))
    return str(value)


def coded(labels: np.ndarray, levels: list[str]) -> Factor:
    """Codes of text labels among `levels` (-1 for missing or unknown)."""
    codes = pd.Index(list(levels), dtype=object).get_indexer(pd.Index(labels, dtype=object))
    return Factor(np.asarray(codes, dtype=np.int64), list(levels))


def as_variable(value: Any, label: str) -> Block | Factor:
    """A final value as a model-frame variable: numbers are a block, logicals a factor (FALSE, TRUE)."""
    if isinstance(value, (Block, Factor)):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 1:
        if value.dtype == bool:
            return Factor(value.astype(np.int64), ["FALSE", "TRUE"], logical=True)
        return Block(value.astype(float)[:, None], [""])
    raise EvalError(f"'{label}' is a constant, not a variable; a term needs one value per row")


def relevel(f: Factor, ref: Any, what: str) -> Factor:
    """relevel(f, ref): `ref` (a label or a level number) first, treatment-coded as R does."""
    if isinstance(ref, float) and not isinstance(ref, bool):
        i = int(ref) - 1
        if ref != int(ref) or not 0 <= i < len(f.levels):
            raise EvalError(f"ref = {format_number(ref)} in {what} is not a level number (1..{len(f.levels)})")
    else:
        label = str(ref)
        if label not in f.levels:
            raise EvalError(f"'{label}' is not a level of the factor in {what} (levels: {', '.join(f.levels[:10])})")
        i = f.levels.index(label)
    order = [i] + [j for j in range(len(f.levels)) if j != i]
    remap = np.empty(len(f.levels), dtype=np.int64)
    remap[order] = np.arange(len(order))
    codes = np.where(f.codes < 0, -1, remap[np.maximum(f.codes, 0)])
    return Factor(codes, [f.levels[j] for j in order], "treatment", 0)
