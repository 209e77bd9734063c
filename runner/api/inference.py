"""confint() and anova() of a FittedModel: the inference module's methods when it is
installed (`runner.inference`), else Wald intervals and Wald chi-square tests.

Wald: est +- z se (lme4's confint(method = "Wald") for the fixed effects); per term a
chi-square of all its columns, b' V^-1 b with V = vcov(), F = chi-square / columns.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2, norm

WALD = ("wald", "Wald")


def _inference() -> Any | None:
    """The inference module (df, confint, anova) when this build has it."""
    if importlib.util.find_spec("runner.inference") is None:
        return None
    return importlib.import_module("runner.inference")


def confint(model: Any, method: str = "wald", level: float = 0.95) -> pd.DataFrame:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    lo, hi = f"{100 * (1 - level) / 2:g} %", f"{100 * (1 + level) / 2:g} %"
    if method not in WALD:
        inf = _inference()
        if inf is None or not hasattr(inf, "confint"):
            raise ValueError(f"confint method {method!r} needs the inference module; this build has 'wald'")
        return inf.confint(model.context.design, model.fit, method=method, level=level)
    z = float(norm.ppf((1 + level) / 2))
    rows = {fe.lme4_name: (fe.estimate - z * (fe.std_error or np.nan), fe.estimate + z * (fe.std_error or np.nan))
            for fe in model.fit.fixed_effects}
    return pd.DataFrame.from_dict(rows, orient="index", columns=[lo, hi])


def anova(model: Any) -> pd.DataFrame:
    inf = _inference()
    if inf is not None and hasattr(inf, "anova"):
        return inf.anova(model.context.design, model.fit)
    design = model.context.design
    beta = np.array([fe.estimate for fe in model.fit.fixed_effects])
    V = model.vcov().to_numpy()
    terms: dict[str, list[int]] = {}
    for j, col in enumerate(design.fixed):
        if col.variable is None:
            continue
        terms.setdefault(col.variable, []).append(j)
    rows = []
    for term, idx in terms.items():
        b = beta[idx]
        stat = float(b @ np.linalg.solve(V[np.ix_(idx, idx)], b))
        rows.append({"term": term, "npar": len(idx), "F value": stat / len(idx), "Chisq": stat,
                     "Pr(>Chisq)": float(chi2.sf(stat, len(idx)))})
    return pd.DataFrame(rows, columns=["term", "npar", "F value", "Chisq", "Pr(>Chisq)"]).set_index("term")
