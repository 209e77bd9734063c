"""The random-effects structure of a fitted model, reduced to what comparisons need.

Nesting proofs and the boundary analysis of likelihood-ratio tests look only at
which columns each random term has on which grouping factor and how they covary.
Built from `Design.blocks`, so factor codings are the evaluated column names.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.covariance import Covariance, nparams
from runner.design.model import Design


@dataclass(frozen=True)
class TermShape:
    """One random term: its grouping factor, lhs columns and covariance structure."""

    group: str
    columns: tuple[str, ...]
    covariance: Covariance

    @property
    def nparams(self) -> int:
        """Covariance parameters of the term (theta count), as lme4/glmmTMB count them."""
        return nparams(self.covariance, len(self.columns))

    @property
    def independent(self) -> bool:
        """True when the term's covariance matrix is diagonal with one free variance per column."""
        return len(self.columns) == 1 or self.covariance == "diagonal"

    @property
    def full(self) -> bool:
        """True when the term's covariance is unrestricted (unstructured, or one column)."""
        return len(self.columns) == 1 or self.covariance == "unstructured"


def shapes_of(design: Design) -> tuple[TermShape, ...]:
    """The random terms of a design in lme4 order."""
    return tuple(TermShape(b.group, tuple(b.column_names), b.covariance) for b in design.blocks)


def by_group(terms: tuple[TermShape, ...]) -> dict[str, list[TermShape]]:
    out: dict[str, list[TermShape]] = {}
    for t in terms:
        out.setdefault(t.group, []).append(t)
    return out
