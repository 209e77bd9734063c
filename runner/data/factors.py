"""Factor levels and centring: one categorical coding and one centre per column for all models.

Levels are sorted as lme4 sorts them (numbers as numbers, text as text), the reference
level comes first, and listed levels are matched to the data's values by text or number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from runner.data.filter import close_columns
from runner.data.model_checks import is_numeric, issue
from runner.spec.errors import SpecIssue
from runner.spec.models import CenterSpec


@dataclass(frozen=True)
class FactorInfo:
    """A categorical column as results.json records it."""

    levels: list[str]
    reference: str
    contrast: str = "treatment"

    def as_dict(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "reference": self.reference, "contrast": self.contrast}


def _same_level(a: Any, b: Any) -> bool:
    if str(a) == str(b):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def factorize(frame: pd.DataFrame, col: str, spec: Any, rows: np.ndarray, issues: list[SpecIssue],
              path: str) -> FactorInfo | None:
    """Make `col` a pandas Categorical with its reference level first.

    The column is hashed once (pd.factorize) and everything else works on its distinct values
    and integer codes: three passes over millions of text labels took seconds."""
    codes, distinct = pd.factorize(frame[col], use_na_sentinel=True)
    uniques = pd.Index(distinct).tolist()
    used = np.unique(codes[np.asarray(rows)])
    present_values = [uniques[i] for i in used[used >= 0]]
    present = sorted(present_values) if is_numeric(frame[col]) else sorted(present_values, key=str)
    order = present
    if spec is not None and spec.levels is not None:
        listed = list(spec.levels)
        outside = [v for v in present if not any(_same_level(v, w) for w in listed)]
        if outside:
            shown = ", ".join(repr(v) for v in outside[:5])
            issues.append(issue(f"{path}.levels", f"values of {col!r} not among the listed levels: {shown}"))
            return None
        order = [next(v for v in present if _same_level(v, w)) for w in listed
                 if any(_same_level(v, w) for v in present)]  # unused listed levels are dropped
    if not order:
        return None
    reference = order[0]
    if spec is not None and spec.reference is not None:
        match = [v for v in order if _same_level(v, spec.reference)]
        if not match:
            shown = ", ".join(str(v) for v in order[:10])
            hint = close_columns(str(spec.reference), [str(v) for v in order])
            issues.append(issue(f"{path}.reference", f"reference level {spec.reference!r} of {col!r} is not in "
                                 f"the data after filter and missing values (levels: {shown}){hint if 'did' in hint else ''}"))
            return None
        reference = match[0]
        order = [reference, *(v for v in order if v is not reference)]
    # rows no model uses may hold other labels: they become missing (code -1)
    position = {v: i for i, v in enumerate(order)}
    remap = np.array([position.get(u, -1) for u in uniques] + [-1], dtype=np.int64)  # the last: code -1
    frame[col] = pd.Categorical.from_codes(remap[codes], categories=order)
    contrast = getattr(spec, "contrast", None) or "treatment"
    return FactorInfo(levels=[str(v) for v in order], reference=str(reference), contrast=contrast)


def center(frame: pd.DataFrame, col: str, how: Any, rows: np.ndarray,
           issues: list[SpecIssue]) -> dict[str, float | None] | None:
    if not is_numeric(frame[col]):
        issues.append(issue(f"data.center.{col}", f"cannot centre {col!r}: it is not numeric"))
        return None
    spec = how if isinstance(how, CenterSpec) else CenterSpec(center=how)
    values = frame.loc[rows, col].astype(float)
    center = float(values.mean()) if spec.center == "mean" else float(spec.center)
    scale = float(values.std(ddof=1)) if spec.scale else None
    if scale is not None and not (np.isfinite(scale) and scale > 0):
        issues.append(issue(f"data.center.{col}", f"cannot scale {col!r}: its standard deviation is {scale}"))
        return None
    shifted = frame[col].astype(float) - center
    frame[col] = shifted / scale if scale else shifted
    return {"center": center, "scale": scale}
