"""confint() and anova() of a FittedModel: the inference module's (`runner.inference`:
Satterthwaite/Kenward-Roger df, profile and bootstrap intervals, type III F tests) when
this build has it and the model is a linear one, else Wald.

Rows the fit already carries (from `runner.fit(..., inference={...})`) are reused;
another method is computed on demand with `apply_inference` (the fit is not changed).
Wald: est +- z se (lme4's confint(method = "Wald") for the fixed effects); per term a
chi-square of all its columns, b' V^-1 b with V = vcov(), F = chi-square / columns.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pandas as pd
from runner.distributions import chi2_sf, norm_ppf

WALD = ("wald", "Wald")


def _available() -> bool:
    return importlib.util.find_spec("runner.inference") is not None


def _with_inference(model: Any, **settings: Any) -> Any:
    """The model's Fit with the inference module's numbers for `settings` (cached per setting)."""
    from runner.inference.apply import InferenceSettings, apply_inference

    cache = model.context.extra.setdefault("inference", {})
    key = tuple(sorted(settings.items()))
    if key not in cache:
        cache[key] = apply_inference(model.context.design, model.fit, InferenceSettings(**settings))
    return cache[key]


def _linear(model: Any) -> bool:
    return model.fit.engine == "lme" and (model.fit.family in (None, "gaussian"))


def _confint_frame(rows: list[Any], level: float) -> pd.DataFrame:
    lo, hi = f"{100 * (1 - level) / 2:g} %", f"{100 * (1 + level) / 2:g} %"
    return pd.DataFrame({"estimate": [r.estimate for r in rows], lo: [r.low for r in rows],
                         hi: [r.high for r in rows]}, index=pd.Index([r.parameter for r in rows], name="parameter"))


def confint(model: Any, method: str = "wald", level: float = 0.95) -> pd.DataFrame:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    method = "wald" if method in WALD else method
    fit = model.fit
    if fit.confint and fit.ci_method == method and abs(level - (model.context.extra.get("level") or 0.95)) < 1e-12:
        return _confint_frame(fit.confint, level)
    if method != "wald" or (_available() and _linear(model)):
        if not _available():
            raise ValueError(f"confint method {method!r} needs the inference module; this build has 'wald'")
        if method not in ("wald", "profile", "bootstrap"):
            raise ValueError(f"confint method must be one of wald, profile, bootstrap, got {method!r}")
        if not _linear(model):
            raise ValueError(f"confint method {method!r} is available for linear mixed models only")
        done = _with_inference(model, ci=method, level=level, df="none" if method == "wald" else "satterthwaite")
        if done.confint:
            return _confint_frame(done.confint, level)
    z = float(norm_ppf((1 + level) / 2))
    rows = [(fe.lme4_name, fe.estimate, fe.estimate - z * (fe.std_error or np.nan),
             fe.estimate + z * (fe.std_error or np.nan)) for fe in fit.fixed_effects]
    lo, hi = f"{100 * (1 - level) / 2:g} %", f"{100 * (1 + level) / 2:g} %"
    return pd.DataFrame([r[1:] for r in rows], index=pd.Index([r[0] for r in rows], name="parameter"),
                        columns=["estimate", lo, hi])


def anova(model: Any) -> pd.DataFrame:
    fit = model.fit
    rows = fit.anova
    if not rows and _available() and _linear(model):
        rows = _with_inference(model).anova
    if rows:
        return pd.DataFrame([r.model_dump() for r in rows]).set_index("term")
    return _wald_anova(model)


def _wald_anova(model: Any) -> pd.DataFrame:
    design = model.context.design
    beta = np.array([fe.estimate for fe in model.fit.fixed_effects])
    V = model.vcov().to_numpy()
    terms: dict[str, list[int]] = {}
    for j, col in enumerate(design.fixed):
        if col.variable is None:
            continue
        terms.setdefault(col.variable, []).append(j)
    out = []
    for term, idx in terms.items():
        b = beta[idx]
        stat = float(b @ np.linalg.solve(V[np.ix_(idx, idx)], b))
        out.append({"term": term, "num_df": len(idx), "den_df": None, "F": stat / len(idx),
                    "p_value": float(chi2_sf(stat, len(idx)))})
    return pd.DataFrame(out, columns=["term", "num_df", "den_df", "F", "p_value"]).set_index("term")
