"""Engine protocol and dispatch by name: the only way run/ reaches an engine.

Engines are registered lazily by name so importing `runner.engines` never imports
statsmodels; "auto" means the native engine.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

import numpy as np

from runner.design.model import Design
from runner.fit import Fit
from runner.vocab import Method, engine_name


class EngineError(RuntimeError):
    """A numerical failure while fitting (the runner records the model as failed)."""


@runtime_checkable
class Engine(Protocol):
    name: str

    def fit(self, design: Design, method: Method, formula_text: str = "") -> Fit: ...


_REGISTRY: dict[str, tuple[str, str]] = {
    "lme": ("runner.engines.lme.engine", "LmeEngine"),
    "statsmodels": ("runner.engines.statsmodels", "StatsmodelsEngine"),
}


def get_engine(name: str) -> Engine:
    """The engine registered under `name` ("auto" -> "lme")."""
    module, attr = _REGISTRY[engine_name(name)]
    return getattr(importlib.import_module(module), attr)()


def fit_design(design: Design, method: Method, engine: str = "lme", formula_text: str = "",
               family: str = "gaussian", link: str | None = None, nagq: int = 1) -> Fit:
    """Fit one design; numerical failures of the native engine surface as EngineError.

    family binomial or poisson: a GLMM by maximum likelihood (lme4's glmer; `method` is
    ignored, the record says ML), only with the native engine."""
    if family != "gaussian":
        return _fit_glmm(design, engine, formula_text, family, link, nagq)
    eng = get_engine(engine)
    try:
        return eng.fit(design, method, formula_text)
    except EngineError:
        raise
    except (ArithmeticError, RuntimeError, np.linalg.LinAlgError) as exc:
        raise EngineError(f"{eng.name} engine failed: {exc}") from exc


def _fit_glmm(design: Design, engine: str, formula_text: str, family: str, link: str | None, nagq: int) -> Fit:
    if engine == "statsmodels":
        raise EngineError("engine statsmodels cannot fit a GLMM: statsmodels has no frequentist mixed GLM "
                          "(its BinomialBayesMixedGLM/PoissonBayesMixedGLM are variational Bayes); "
                          "use engine: lme (or auto)")
    from runner.engines.lme.glmm_engine import GlmmFitError, fit_glmm
    from runner.engines.lme.glmm_model import PirlsError
    from runner.design.glmm_response import GlmmResponseError

    try:
        return fit_glmm(design, family, link, nagq, formula_text)
    except GlmmResponseError:
        raise
    except (GlmmFitError, PirlsError, ArithmeticError, RuntimeError, np.linalg.LinAlgError) as exc:
        raise EngineError(f"lme engine failed (GLMM): {exc}") from exc
