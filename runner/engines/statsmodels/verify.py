"""`verify: statsmodels`: fit a model with the second engine and record the largest differences.

The model's own fit (normally the native engine's) is the reference; the other engine
(statsmodels, or lme when the model itself was fitted with statsmodels) refits the
same Design by the same method. Three relative differences are recorded, the largest
of each kind, and any above `VERIFY_TOL` (1e-4) flags the model:

- objective: |a - b| / max(|b|, 1) (REML criterion or deviance; the floor keeps an
  objective near zero from turning rounding into a large ratio);
- fixed_effects: |a - b| / max(|b|, SE_b) over the coefficients, matched by name
  (an estimate smaller than its standard error is compared on the scale of that error);
- sds: |a - b| / |b| over the standard deviations of every term and the residual,
  matched by group and term; when both engines put an SD at zero in lme4's sense
  (below 1e-4 residual SDs, lme4's isSingular tolerance on theta) the difference is
  taken relative to the residual SD, so a boundary fit at 5e-5 against an exact 0 is
  not a discrepancy.

A model MixedLM cannot express gets status "inexpressible" with statsmodels' reason;
that is a property of the model, not a failure of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from runner.design.model import Design
from runner.engines.base import fit_design
from runner.engines.statsmodels.errors import InexpressibleModel
from runner.fit import Fit
from runner.results import VerifyRecord

VERIFY_TOL = 1e-4
ZERO_SD = 1e-4  # lme4's isSingular tolerance, on SD / sigma


def _rel(a: float, b: float, denom: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf if a != b else 0.0
    return abs(a - b) / denom if denom > 0 else (0.0 if a == b else math.inf)


def _fixed(fit: Fit) -> dict[str, tuple[float, float | None]]:
    return {fe.lme4_name or fe.term: (fe.estimate, fe.std_error) for fe in fit.fixed_effects}


def _sds(fit: Fit) -> dict[tuple[str, str], float]:
    return {(r.id, r.term): r.sd for r in fit.random_effects if r.term2 is None and r.sd is not None}


def relative_differences(fit: Fit, other: Fit) -> dict[str, float | None]:
    """Largest relative differences of `other` from `fit` (the reference), per kind.

    Raises ValueError when the two fits do not have the same fixed effects or variance
    components (then they are not fits of one model and no number would mean anything).
    """
    fa, fb = _fixed(fit), _fixed(other)
    if list(fa) != list(fb):
        raise ValueError(f"the engines' fixed effects differ: {list(fa)} vs {list(fb)}")
    sa, sb = _sds(fit), _sds(other)
    if list(sa) != list(sb):
        raise ValueError(f"the engines' variance components differ: {list(sa)} vs {list(sb)}")
    out: dict[str, float | None] = {
        "objective": _rel(other.objective, fit.objective, max(abs(fit.objective), 1.0))
    }
    out["fixed_effects"] = max(
        (_rel(fb[k][0], est, max(abs(est), se or 0.0)) for k, (est, se) in fa.items()), default=None
    )
    sigma = fit.sigma if fit.sigma and math.isfinite(fit.sigma) else max(sa.values(), default=0.0)
    diffs = []
    for key, b in sa.items():
        a = sb[key]
        both_zero = abs(a) < ZERO_SD * sigma and abs(b) < ZERO_SD * sigma
        diffs.append(_rel(a, b, sigma if both_zero else abs(b)))
    out["sds"] = max(diffs, default=None)
    return out


def _describe(diffs: Mapping[str, float | None]) -> str:
    names = {"objective": "objective", "fixed_effects": "fixed effects", "sds": "SDs"}
    return ", ".join(f"{names[k]} {v:.1e}" for k, v in diffs.items() if v is not None)


def verify_fit(design: Design, method: str, fit: Fit, tol: float = VERIFY_TOL) -> VerifyRecord:
    """Refit `design` with the other engine and compare with `fit` (see the module docstring)."""
    other_engine = "lme" if fit.engine == "statsmodels" else "statsmodels"
    try:
        other = fit_design(design, method, engine=other_engine, formula_text=fit.formula)  # type: ignore[arg-type]
    except InexpressibleModel as exc:
        return VerifyRecord(engine=other_engine, status="inexpressible",
                            message=f"not verified: {exc}")
    try:
        diffs = relative_differences(fit, other)
    except ValueError as exc:
        return VerifyRecord(engine=other_engine, status="failed", message=str(exc))
    flagged = any(v is not None and v > tol for v in diffs.values())
    notes = []
    if not other.converged:
        notes.append(f"{other_engine} did not converge")
    if flagged:
        over = {k: v for k, v in diffs.items() if v is not None and v > tol}
        message = (f"{other_engine} differs from {fit.engine} by more than {tol:g} (relative): {_describe(over)}; "
                   f"all largest differences: {_describe(diffs)}")
    else:
        message = f"{other_engine} agrees with {fit.engine} within {tol:g} (largest relative differences: {_describe(diffs)})"
    if notes:
        message += "; " + "; ".join(notes)
    return VerifyRecord(engine=other_engine, status="ok", message=message, max_rel_diff=diffs, flagged=flagged)
