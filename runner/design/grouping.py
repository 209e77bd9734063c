"""Grouping factors: integer codes and level labels as lme4 makes them.

A grouping term `(1|a:b)` uses the interaction of a and b with only the observed
combinations, ordered with the first factor varying slowest (R's `:` on factors
followed by dropping unused levels), labelled "a:b".
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _label(value: object) -> str:
    """A level label as R prints it (1002 not 1002.0)."""
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if f.is_integer():
            return str(int(f))
        return repr(f)
    return str(value)


def as_factor(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes (0-based, -1 never occurs) and labels of one column used as a factor.

    A categorical keeps its level order; anything else gets sorted levels
    (numbers sorted as numbers), so `d` in InstEval orders 1, 2, ..., 10 not "1", "10".
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        return _categorical(column.array)
    if not pd.api.types.is_numeric_dtype(column.dtype):
        column = column.astype(str)
    # one sorted factorize (code-point order for text, as Python's sorted)
    codes, uniques = pd.factorize(column, sort=True)
    return np.asarray(codes, dtype=np.int64), [_label(v) for v in uniques]


def _categorical(cat: pd.Categorical) -> tuple[np.ndarray, list[str]]:
    """A categorical's codes and labels with unused levels dropped (its level order kept):
    what `.cat.remove_unused_categories()` gives, from the codes directly (that pandas call
    builds a new categorical, ~30 us, a tenth of a small model's design)."""
    codes = np.asarray(cat.codes, dtype=np.int64)
    categories = cat.categories.tolist()
    if codes.size and codes.min() < 0:  # missing values (the data step drops them first)
        cat = cat.remove_unused_categories()
        return np.asarray(cat.codes, dtype=np.int64), [_label(v) for v in cat.categories.tolist()]
    used = np.bincount(codes, minlength=len(categories)) > 0
    if not used.all():
        codes = (np.cumsum(used) - 1)[codes]
        categories = [v for v, u in zip(categories, used.tolist()) if u]
    return codes, [_label(v) for v in categories]


def group_factor(frame: pd.DataFrame, group: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Codes and labels of the interaction of the columns in `group` (observed levels only)."""
    parts = [as_factor(frame[name]) for name in group]
    if len(parts) == 1:
        return parts[0]
    # one int64 key per row, ordered as the code tuples are (first column slowest); a sorted
    # factorize of it is lme4's level order (np.unique(axis=0) sorted structured rows: slow)
    if np.prod([float(max(len(labels), 1)) for _, labels in parts]) >= 2.0 ** 62:  # keys would overflow
        stacked = np.stack([p[0] for p in parts], axis=1)
        tuples, inv = np.unique(stacked, axis=0, return_inverse=True)
        return (np.asarray(inv, dtype=np.int64).ravel(),
                [":".join(parts[j][1][c] for j, c in enumerate(row)) for row in tuples])
    key = np.zeros(len(frame), dtype=np.int64)
    for codes, labels in parts:
        key = key * max(len(labels), 1) + codes
    inverse, keys = pd.factorize(key, sort=True)
    combos = []
    for k in np.asarray(keys, dtype=np.int64):
        row = []
        for _codes, labels in reversed(parts):
            k, c = divmod(int(k), max(len(labels), 1))
            row.append(labels[c])
        combos.append(":".join(reversed(row)))
    return np.asarray(inverse, dtype=np.int64), combos
