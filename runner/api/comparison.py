"""`runner.compare`: rank fitted models and test nested pairs, as `mixspec run` does.

The run's own functions do the work: `rank_models` on ML fits (a REML fit is refitted
with ML once, as lme4's anova() does), `check_nested` to prove nesting and
`likelihood_ratio_test` (with the boundary-corrected p where it applies). Pairs are the
models in order of parameters, each tested against the next larger one it is nested in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class Comparison:
    """Ranking (one row per model) and likelihood-ratio tests (one row per tested pair)."""

    ranking: pd.DataFrame
    tests: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        parts = ["ranking:", self.ranking.to_string(), "", "likelihood-ratio tests:",
                 self.tests.to_string() if len(self.tests) else "(none)"]
        return "\n".join(parts + [f"note: {n}" for n in self.notes])

    def _repr_html_(self) -> str:
        return (f"<h4>ranking</h4>{self.ranking.to_html()}<h4>likelihood-ratio tests</h4>"
                f"{self.tests.to_html() if len(self.tests) else '<p>(none)</p>'}")


def _keys(model: Any) -> tuple[str, str]:
    from runner.run.plan import _hash

    d = model.context.design
    rows = pd.Index(model.context.row_index).to_numpy()
    return (_hash(d.response, d.y, rows, d.weights if d.weights is not None else "w"), _hash(d.X))


def _named(models: list[Any], named: dict[str, Any]) -> dict[str, Any]:
    from runner.api.model import FittedModel

    out: dict[str, Any] = {}
    for m in models:
        if not isinstance(m, FittedModel):
            raise TypeError(f"compare() takes fitted models (runner.fit), got {type(m).__name__}")
        name, k = m.name, 2
        while name in out:
            name, k = f"{m.name}_{k}", k + 1
        out[name] = m
    for name, m in named.items():
        if not isinstance(m, FittedModel):
            raise TypeError(f"compare() takes fitted models (runner.fit), got {type(m).__name__} for {name}")
        out[name] = m
    if len(out) < 2:
        raise ValueError("compare() needs at least two models")
    return out


def compare_models(models: list[Any], named: dict[str, Any], criterion: str = "AIC") -> Comparison:
    from runner.compare.lrt import LRTSide, likelihood_ratio_test
    from runner.compare.nesting import NestSide, check_nested
    from runner.compare.ranking import CRITERIA, Candidate, FitStats, rank_models
    from runner.compare.shapes import shapes_of
    from runner.run.plan import nested_factors

    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    byname = _named(models, named)
    keys = {n: _keys(m) for n, m in byname.items()}
    ml = {n: m.ml_fit() for n, m in byname.items()}

    def stats(f: Any) -> FitStats:
        return FitStats(f.loglik, f.npar, f.nobs, f.method)

    cands = [Candidate(n, True, stats(m.fit), stats(ml[n]), keys[n][0], keys[n][1]) for n, m in byname.items()]
    groups = rank_models(cands, criterion, True)
    rows, notes = [], []
    for g in groups:
        if g.note:
            notes.append(g.note)
        for r in g.rows:
            rows.append({"model": r.model, "criterion": r.criterion, "value": r.value, "delta": r.delta,
                         "weight": r.weight, "loglik": r.loglik, "npar": r.npar, "fit_used": r.fit_used,
                         "best": r.best})
    ranking = pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()

    def nest_side(n: str) -> NestSide:
        d = byname[n].context.design
        return NestSide(n, d.response, keys[n][0], d.X, shapes_of(d), ml[n].npar)

    def lrt_side(n: str) -> LRTSide:
        d = byname[n].context.design
        f = ml[n]
        return LRTSide(n, f.loglik, f.npar, f.method, singular=f.singular, converged=f.converged,
                       terms=shapes_of(d), ngroups=dict(f.ngroups), fixed_key=keys[n][1],
                       independent_clusters=nested_factors(d))

    order = sorted(byname, key=lambda n: ml[n].npar)
    tests = []
    for i, small in enumerate(order):
        for large in order[i + 1:]:
            if keys[small][0] != keys[large][0] or ml[small].npar == ml[large].npar:
                continue
            why = check_nested(nest_side(small), nest_side(large))
            if not why.nested:
                continue
            t = likelihood_ratio_test(lrt_side(small), lrt_side(large), refit_ml=any(
                byname[x].fit.method == "REML" for x in (small, large)), source="auto")
            tests.append({"small": t.small, "large": t.large, "chisq": t.chisq, "df": t.df, "p_value": t.p_value,
                          "p_value_boundary": t.p_value_boundary, "refit_ml": t.refit_ml,
                          "warnings": "; ".join(t.warnings)})
            break
    cols = ["small", "large", "chisq", "df", "p_value", "p_value_boundary", "refit_ml", "warnings"]
    return Comparison(ranking, pd.DataFrame(tests, columns=cols), notes)
