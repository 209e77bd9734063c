"""Engine protocol and dispatch by name: the only way run/ reaches an engine.

Engines are registered lazily by name so importing `runner.engines` never imports
statsmodels; "auto" means the native engine.
"""

from __future__ import annotations

import importlib
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from runner.design.model import Design
from runner.fit import Fit

Method = Literal["REML", "ML"]


class EngineError(RuntimeError):
    """A numerical failure while fitting (the runner records the model as failed)."""


@runtime_checkable
class Engine(Protocol):
    name: str

    def fit(self, design: Design, method: Method, formula_text: str = "") -> Fit: ...


_REGISTRY: dict[str, tuple[str, str]] = {
    "lme": ("runner.engines.lme", "LmeEngine"),
    "statsmodels": ("runner.engines.statsmodels", "StatsmodelsEngine"),
}


def get_engine(name: str) -> Engine:
    """The engine registered under `name` ("auto" -> "lme")."""
    key = "lme" if name == "auto" else name
    if key not in _REGISTRY:
        raise ValueError(f"unknown engine '{name}': choose one of auto, {', '.join(_REGISTRY)}")
    module, attr = _REGISTRY[key]
    return getattr(importlib.import_module(module), attr)()


def fit_design(design: Design, method: Method, engine: str = "lme", formula_text: str = "") -> Fit:
    """Fit one design; numerical failures of the native engine surface as EngineError."""
    eng = get_engine(engine)
    try:
        return eng.fit(design, method, formula_text)
    except EngineError:
        raise
    except (ArithmeticError, RuntimeError, np.linalg.LinAlgError) as exc:
        raise EngineError(f"{eng.name} engine failed: {exc}") from exc
