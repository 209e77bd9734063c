"""The one error this engine adds: a model MixedLM cannot express exactly.

It subclasses the engines' common `EngineError` (so the runner reports it like any
engine failure) and `ValueError` (so plain Python callers can catch it without
knowing mixspec's hierarchy).
"""

from __future__ import annotations

try:
    from runner.engines.base import EngineError
except ImportError:  # pragma: no cover - base.py is written by another issue; keep importable

    class EngineError(RuntimeError):  # type: ignore[no-redef]
        """Fallback until runner.engines.base exists."""


class InexpressibleModel(EngineError, ValueError):
    """MixedLM cannot fit this model exactly; the message says what, why, and to use engine `lme`."""


ADVICE = "Engine 'lme' (the default) fits this model."
