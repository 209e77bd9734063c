"""R's model.c rule: in each term, which factors are coded by contrasts and which by all indicators.

A factor in a term is coded by contrasts when the term without it is the empty term or
appears earlier; otherwise by all its indicators. Without an intercept the first factor
(with more than one level) of the first term that has one takes all its indicators.
Both the design (`runner.design.model_matrix`) and type III tests (`runner.inference.anova`)
need it, each over its own description of the terms.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def contrast_codings(terms: Sequence[Sequence[K]], levels: Callable[[K], int | None],
                     intercept: bool) -> list[dict[K, bool]]:
    """Per term: factor -> True when coded by contrasts. `levels(v)` is None for a non-factor."""
    sets = [frozenset(t) for t in terms]
    out: list[dict[K, bool]] = []
    for j, t in enumerate(terms):
        code: dict[K, bool] = {}
        for v in t:
            if levels(v) is not None:
                rest = sets[j] - {v}
                code[v] = not rest or any(rest <= sets[k] for k in range(j))
        out.append(code)
    if not intercept:
        for j, t in enumerate(terms):
            first = next((v for v in t if (n := levels(v)) is not None and n > 1), None)
            if first is not None:
                out[j][first] = False
                break
    return out
