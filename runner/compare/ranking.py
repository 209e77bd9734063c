"""Information-criterion ranking as lme4's anova() table computes it.

REML criteria of models with different fixed effects are not comparable, so the
ranking uses ML fits (the ML refit of a REML-fitted model) unless the spec says
`refit: false` and every ranked model has the same fixed-effect matrix. Models fitted
to different rows (na: per_model) are never ranked together: each set of rows is
its own group. Numbers only; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from runner.results import RankingGroup, RankingRow

CRITERIA = ("AIC", "BIC", "AICc")


@dataclass(frozen=True)
class FitStats:
    """What a criterion needs from one fit."""

    loglik: float
    npar: int
    nobs: int
    method: str  # "REML" | "ML"


@dataclass(frozen=True)
class Candidate:
    """A model as the ranking sees it; `ml` is None when no ML values exist."""

    name: str
    ok: bool
    own: FitStats | None
    ml: FitStats | None  # the own fit when it is ML, else the ML refit of the REML fit
    rows_key: str  # response + rows used: models with equal keys are comparable
    fixed_key: str  # hash of the fixed-effect matrix
    error: str | None = None
    family: str = "gaussian"  # "gaussian" or a GLMM's "family (link)": ranked only within one


def criterion_value(stats: FitStats, criterion: str) -> float:
    """AIC = -2 logLik + 2k; BIC = -2 logLik + k log n; AICc = AIC + 2k(k+1)/(n-k-1)."""
    k, n = stats.npar, stats.nobs
    aic = -2.0 * stats.loglik + 2.0 * k
    if criterion == "AIC":
        return aic
    if criterion == "BIC":
        return -2.0 * stats.loglik + k * math.log(n)
    if criterion == "AICc":
        return aic + 2.0 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf
    raise ValueError(f"unknown criterion {criterion!r}; use one of {', '.join(CRITERIA)}")


def akaike_weights(values: list[float]) -> list[float]:
    """exp(-delta/2) normalized; robust to large deltas (computed relative to the minimum)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [math.nan] * len(values)
    best = min(finite)
    raw = [math.exp(-(v - best) / 2.0) if math.isfinite(v) else 0.0 for v in values]
    total = sum(raw)
    return [r / total for r in raw]


def _choose_fits(members: list[Candidate], refit: bool) -> tuple[str, str | None]:
    """Which fit every member uses: "own" (refit: false, same fixed effects) or "ml"."""
    if refit:
        return "ml", None
    methods = {m.own.method for m in members if m.own}
    fixed = {m.fixed_key for m in members}
    if len(fixed) == 1 and len(methods) == 1:
        return "own", None
    return "ml", (
        "refit: false keeps each model's own fit only when all share the fixed-effect matrix and "
        "the method; these do not, so the ranking uses ML fits"
    )


def rank_group(members: list[Candidate], criterion: str, refit: bool) -> RankingGroup:
    """Rank one set of comparable models (same response and rows)."""
    notes: list[str] = []
    ok = [m for m in members if m.ok and m.own is not None]
    failed = [m.name for m in members if not (m.ok and m.own is not None)]
    if failed:
        notes.append(f"not ranked (failed to fit): {', '.join(failed)}")
    use, note = _choose_fits(ok, refit)
    if note:
        notes.append(note)
    chosen: list[tuple[Candidate, FitStats, str]] = []
    missing: list[str] = []
    for m in ok:
        if use == "own":
            chosen.append((m, m.own, "own"))  # type: ignore[arg-type]
        elif m.ml is not None:
            chosen.append((m, m.ml, "own" if m.own.method == "ML" else "ml_refit"))  # type: ignore[union-attr]
        else:
            missing.append(m.name)
    if missing:
        notes.append(f"not ranked (no ML fit available): {', '.join(missing)}")
    values = [criterion_value(s, criterion) for _, s, _ in chosen]
    order = sorted(range(len(chosen)), key=lambda i: (not math.isfinite(values[i]), values[i], i))
    finite = [values[i] for i in order if math.isfinite(values[i])]
    best = finite[0] if finite else math.nan
    weights = akaike_weights([values[i] for i in order])
    rows = []
    for rank, (i, w) in enumerate(zip(order, weights)):
        m, s, used = chosen[i]
        rows.append(
            RankingRow(
                model=m.name,
                criterion=criterion,
                method=s.method,
                fit_used=used,
                value=values[i],
                delta=values[i] - best,
                weight=w,
                loglik=s.loglik,
                npar=s.npar,
                best=rank == 0 and math.isfinite(values[i]),
            )
        )
    return RankingGroup(models=[m.name for m in members], rows=rows, note="; ".join(notes) or None)


def rank_models(candidates: list[Candidate], criterion: str = "AIC", refit: bool = True) -> list[RankingGroup]:
    """Rank by `criterion`, one group per set of rows, groups in order of first appearance."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; use one of {', '.join(CRITERIA)}")
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in candidates:
        groups.setdefault((c.family, c.rows_key), []).append(c)
    keys = list(groups)
    out = [rank_group(members, criterion, refit) for members in groups.values()]
    if len(out) > 1:
        for key, g in zip(keys, out):
            other_family = [n for k, h in zip(keys, out) if h is not g and k[0] != key[0] for n in h.models]
            other_rows = [n for k, h in zip(keys, out) if h is not g and k[0] == key[0] for n in h.models]
            whys = []
            if other_family:
                whys.append(f"family {key[0]}: ranked apart from {', '.join(other_family)} (another family or "
                            "link; their likelihoods are not comparable)")
            if other_rows:
                whys.append(
                    f"fitted to different data than {', '.join(other_rows)} (other rows, response values or prior "
                    "weights); likelihoods of different data are not comparable, so they are ranked apart")
            why = "; ".join(whys)
            g.note = f"{g.note}; {why}" if g.note else why
    return out
