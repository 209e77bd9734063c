"""Resolve a model's `inference:` (its own keys over its base's, over `defaults:`)."""

from __future__ import annotations

from typing import Any

from runner.inference.apply import InferenceSettings


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
