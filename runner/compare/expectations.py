"""Evaluate the spec's `expect:` checks against fitted models and rankings.

Each check gives an `ExpectationRecord` with a one-line detail that says why it
passed or failed, so a CI log is enough to see what broke. Numbers only; the
checks were parsed by `runner.spec.expect`.
"""

from __future__ import annotations

from runner.results import ExpectationRecord, ModelRecord, RankingGroup
from runner.spec.expect import Expectation


def _g(x: float) -> str:
    return f"{x:.6g}"


def _group_of(name: str, ranking: list[RankingGroup]) -> RankingGroup | None:
    for g in ranking:
        if any(r.model == name for r in g.rows):
            return g
    return None


def _find_effect(record: ModelRecord, term: str):
    from runner.design.naming import r_name

    for fe in record.fixed_effects:
        if term in (fe.term, fe.lme4_name) or r_name(term) in (r_name(fe.term), fe.lme4_name):
            return fe
    if term in ("Intercept", "(Intercept)"):
        for fe in record.fixed_effects:
            if fe.term in ("Intercept", "(Intercept)"):
                return fe
    return None


def _best(e: Expectation, models: dict[str, ModelRecord], ranking: list[RankingGroup]) -> tuple[bool, str]:
    name = e.model or ""
    if name not in models:
        return False, f"unknown model {name!r}"
    if models[name].status != "ok":
        return False, f"{name} failed to fit"
    g = _group_of(name, ranking)
    if g is None or not g.rows:
        return False, f"{name} is not ranked"
    top = g.rows[0]
    crit = top.criterion
    if top.model == name and models[name].converged is False:
        return False, f"{name} is best by {crit} ({top.method}) but did not converge: its criterion is not trustworthy"
    if top.model == name:
        second = f"; next {g.rows[1].model} at +{_g(g.rows[1].delta)}" if len(g.rows) > 1 else ""
        return True, f"{name} is best by {crit} ({top.method}) {_g(top.value)}{second}"
    mine = next(r for r in g.rows if r.model == name)
    return False, f"best by {crit} is {top.model} ({_g(top.value)}), not {name} ({_g(mine.value)}, delta {_g(mine.delta)})"


def _fixed(e: Expectation, models: dict[str, ModelRecord]) -> tuple[bool, str]:
    assert e.condition is not None and e.term is not None
    if e.model is not None:
        if e.model not in models:
            return False, f"unknown model {e.model!r}"
        targets = [e.model]
    else:
        targets = list(models)
    checked, failures = [], []
    for name in targets:
        rec = models[name]
        if rec.status != "ok":
            if e.model is not None:
                return False, f"{name} failed to fit"
            continue
        fe = _find_effect(rec, e.term)
        if fe is None:
            if e.model is not None:
                return False, f"{name} has no fixed effect {e.term!r}"
            continue
        checked.append(f"{name} {_g(fe.estimate)}")
        if not e.condition.holds(fe.estimate):
            failures.append(f"{name}: {e.term} = {_g(fe.estimate)}")
    if not checked:
        return False, f"no fitted model has a fixed effect {e.term!r}"
    if failures:
        return False, f"not {e.term} {e.condition.text()} in " + "; ".join(failures)
    return True, f"{e.term} {e.condition.text()} in {len(checked)} model(s): " + ", ".join(checked)


def _flags(e: Expectation, models: dict[str, ModelRecord], attr: str, bad_value: bool, word: str) -> tuple[bool, str]:
    names = list(e.models) if e.models is not None else list(models)
    unknown = [n for n in names if n not in models]
    if unknown:
        return False, f"unknown model(s): {', '.join(unknown)}"
    bad = [n for n in names if models[n].status != "ok" or getattr(models[n], attr) is bad_value]
    if bad:
        return False, f"{word}: {', '.join(bad)}"
    return True, f"all {len(names)} model(s) pass"


def _delta(e: Expectation, models: dict[str, ModelRecord], aic_ranking: list[RankingGroup]) -> tuple[bool, str]:
    assert e.condition is not None
    name = e.model or ""
    if name not in models:
        return False, f"unknown model {name!r}"
    g = _group_of(name, aic_ranking)
    if g is None:
        return False, f"{name} is not ranked by AIC"
    row = next(r for r in g.rows if r.model == name)
    ok = e.condition.holds(row.delta)
    return ok, f"delta AIC of {name} is {_g(row.delta)} ({row.method}; best {g.rows[0].model}), {'' if ok else 'not '}{e.condition.text()}"


def evaluate_expectations(
    expectations: list[Expectation],
    models: dict[str, ModelRecord],
    ranking: list[RankingGroup],
    aic_ranking: list[RankingGroup] | None = None,
) -> list[ExpectationRecord]:
    """Check each expectation; `aic_ranking` serves delta_aic when the criterion is not AIC."""
    out = []
    for e in expectations:
        if e.kind == "best":
            ok, detail = _best(e, models, ranking)
        elif e.kind == "fixed":
            ok, detail = _fixed(e, models)
        elif e.kind == "converged" and e.models == ():
            bad = [n for n, m in models.items() if m.converged is False]
            ok, detail = True, ("did not converge (not gating): " + ", ".join(bad)) if bad else "all models converged"
        elif e.kind == "converged":
            ok, detail = _flags(e, models, "converged", False, "did not converge or failed")
        elif e.kind == "singular":
            ok, detail = _flags(e, models, "singular", True, "singular or failed")
        else:
            ok, detail = _delta(e, models, aic_ranking if aic_ranking is not None else ranking)
        out.append(ExpectationRecord(text=e.text, passed=ok, detail=detail))
    return out
