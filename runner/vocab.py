"""Names shared by every layer, defined once: the fitting method and the engine names.

No imports beyond typing, so the spec schema, the engines and the CLI can all use it.
"""

from __future__ import annotations

from typing import Literal

Method = Literal["REML", "ML"]
EngineName = Literal["auto", "lme", "statsmodels"]  # as a spec writes it
FittingEngine = Literal["lme", "statsmodels"]  # as a fit records it


def engine_name(engine: str | None) -> FittingEngine:
    """The engine that fits a model: "auto" (and unset) means the native lme engine."""
    if engine in ("auto", "", None, "lme"):
        return "lme"
    if engine == "statsmodels":
        return "statsmodels"
    raise ValueError(f"unknown engine {engine!r}: choose one of auto, lme, statsmodels")
