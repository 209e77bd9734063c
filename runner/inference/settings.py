"""A model's inference settings: resolved from `inference:` (its own keys over its base's,
over `defaults:`) and checked before fitting. Light on imports: planning and `mixspec
validate` need only this module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DfMethod = Literal["satterthwaite", "kenward-roger", "none"]
CiMethod = Literal["wald", "profile", "bootstrap"]
KR_MAX_ROWS = 10_000


@dataclass(frozen=True)
class InferenceSettings:
    df: DfMethod = "satterthwaite"
    ci: CiMethod = "wald"
    level: float = 0.95
    nsim: int = 1000
    seed: int = 1


class InferenceRefused(ValueError):
    """A requested method does not apply to this model (the message says why)."""


def check_settings(settings: InferenceSettings, method: str, nobs: int) -> None:
    """Refusals known before fitting (KR needs REML and at most KR_MAX_ROWS rows)."""
    if settings.df == "kenward-roger":
        if method != "REML":
            raise InferenceRefused("df: kenward-roger needs a REML fit (pbkrtest's adjustment is defined for "
                                   "REML estimates); set method: REML or df: satterthwaite")
        if nobs > KR_MAX_ROWS:
            raise InferenceRefused(f"df: kenward-roger is refused above {KR_MAX_ROWS:,} rows ({nobs:,} here): its "
                                   "traces need dense random-effects matrices; use df: satterthwaite")


def _merge(out: dict[str, Any], spec: Any) -> None:
    if spec is None:
        return
    for key in ("df", "ci", "level"):
        value = getattr(spec, key)
        if value is not None:
            out[key] = value
    if spec.bootstrap is not None:
        out["nsim"], out["seed"] = spec.bootstrap.nsim, spec.bootstrap.seed


def settings_for(spec: Any, name: str) -> InferenceSettings:
    """`spec` is a validated runner.spec.models.Spec; `name` a model or variant."""
    chain = []
    seen = set()
    current: str | None = name
    while current is not None and current not in seen:
        seen.add(current)
        if current in spec.models:
            chain.append(spec.models[current])
            current = None
        elif current in spec.variants:
            v = spec.variants[current]
            chain.append(v)
            current = v.base
        else:
            current = None
    out: dict[str, Any] = {}
    _merge(out, spec.defaults.inference)
    for m in reversed(chain):
        _merge(out, getattr(m, "inference", None))
    return InferenceSettings(**out)
