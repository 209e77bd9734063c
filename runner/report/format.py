"""Numbers formatted for reading, shared by the HTML and Markdown reports.

One place decides how a number looks, so the page, the Markdown summary and the
tests that compare the page with results.json agree on the exact text.
"""

from __future__ import annotations

import math

MISSING = "—"  # shown for null (NaN/inf were written as null in results.json)


def _bad(x: float | int | None) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def fmt_num(x: float | int | None, sig: int = 4) -> str:
    """`sig` significant digits, thousands separators, scientific only when tiny or huge.

    Fixed-point keeps 25.60 and 612.1 readable; scientific below 1e-4 and from 1e7 up
    avoids long runs of zeros that hide the magnitude.
    """
    if _bad(x):
        return MISSING
    x = float(x)  # type: ignore[arg-type]
    if x == 0:
        return "0"
    ax = abs(x)
    if ax < 1e-4 or ax >= 1e7:
        return f"{x:.{sig - 1}e}"
    decimals = max(0, sig - 1 - math.floor(math.log10(ax)))
    text = f"{x:,.{decimals}f}"
    if text.lstrip("-") in {"0", "0." + "0" * decimals}:  # rounding swallowed it
        return f"{x:.{sig - 1}e}"
    return text


def fmt_fixed(x: float | int | None, decimals: int = 2) -> str:
    """Fixed decimals with thousands separators: logLik, AIC, BIC, deltas, chi-square.

    Criteria are read by differences, so they keep absolute (not relative) precision.
    """
    if _bad(x):
        return MISSING
    return f"{float(x):,.{decimals}f}"  # type: ignore[arg-type]


def fmt_p(p: float | None) -> str:
    """p-values: '< 0.001' below a thousandth, otherwise 3 decimals (4 below 0.01)."""
    if _bad(p):
        return MISSING
    p = float(p)  # type: ignore[arg-type]
    if p < 0.001:
        return "< 0.001"
    if p < 0.01:
        return f"{p:.4f}"
    return f"{p:.3f}"


def fmt_weight(w: float | None) -> str:
    """Akaike weights: 3 decimals, '< 0.001' for the negligible ones."""
    if _bad(w):
        return MISSING
    w = float(w)  # type: ignore[arg-type]
    if 0 < w < 0.001:
        return "< 0.001"
    return f"{w:.3f}"


def fmt_int(n: int | float | None) -> str:
    """Counts with thousands separators (11,520)."""
    if _bad(n):
        return MISSING
    return f"{int(n):,}"  # type: ignore[arg-type]


def fmt_ci(low: float | None, high: float | None, sig: int = 4) -> str:
    """An interval as '[low, high]'."""
    if _bad(low) and _bad(high):
        return MISSING
    return f"[{fmt_num(low, sig)}, {fmt_num(high, sig)}]"


def raw(x: float | int | None) -> str:
    """The exact value for a `data-v` attribute: sorting and tests read it, never people."""
    if _bad(x):
        return ""
    if isinstance(x, bool):
        return str(int(x))
    return repr(float(x)) if isinstance(x, float) else str(x)
