"""Tail probabilities and quantiles of the normal, t, F and chi-square distributions.

The same special functions scipy.stats calls (so the same numbers), without importing
scipy.stats: that import alone costs about half a second, which `mixspec validate` and
every worker would pay for a handful of p-values.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def norm_sf(x):
    """P(Z > x)."""
    return special.ndtr(np.negative(x))


def norm_ppf(q):
    """x with P(Z <= x) = q."""
    return special.ndtri(q)


def t_sf(x, df):
    """P(T_df > x); df may be inf (the normal)."""
    return special.stdtr(df, np.negative(x))


def t_ppf(q, df):
    """x with P(T_df <= x) = q."""
    return special.stdtrit(df, q)


def f_sf(x, df1, df2):
    """P(F_{df1, df2} > x)."""
    return special.fdtrc(df1, df2, np.maximum(x, 0.0))


def chi2_sf(x, df):
    """P(X^2_df > x); 1 for x <= 0, as scipy.stats gives."""
    return special.chdtrc(df, np.maximum(x, 0.0))
