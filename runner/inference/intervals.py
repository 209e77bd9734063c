"""Wald intervals as lmerTest's contest(confint = TRUE) (t on Satterthwaite/KR df) and
lme4's confint(method = "Wald") (normal quantiles; NA for variance parameters)."""

from __future__ import annotations

import numpy as np
from runner.distributions import norm_ppf, t_ppf

from runner.fit import ConfintRow


def wald_bounds(estimate: float, se: float, df: float | None, level: float) -> tuple[float, float]:
    """estimate +- q SE, q from t(df) or, with df None, the normal."""
    a = (1 + level) / 2
    q = float(norm_ppf(a)) if df is None or not np.isfinite(df) else float(t_ppf(a, df))
    return float(estimate - q * se), float(estimate + q * se)


def variance_rows(names: list[str], estimates: np.ndarray) -> list[ConfintRow]:
    """Variance parameters under Wald: estimate only (lme4 gives NA bounds)."""
    return [ConfintRow(parameter=n, estimate=float(e) if np.isfinite(e) else None, low=None, high=None)
            for n, e in zip(names, estimates)]
