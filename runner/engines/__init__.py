"""Engines: Design + method -> Fit. `fit_design` dispatches by name."""

from runner.engines.base import Engine, EngineError, fit_design, get_engine

__all__ = ["Engine", "EngineError", "fit_design", "get_engine"]
