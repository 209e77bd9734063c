"""The report's plots as `svg.Chart` data: coefficients, residuals, QQ, caterpillars.

Plots summarize, never draw one element per data row: residuals vs fitted become a
2D histogram (one embedded raster) above SCATTER_MAX rows, the QQ plot uses at most
QQ_POINTS quantiles, and a caterpillar shows at most CATERPILLAR_MAX levels (or the
spec's `report.caterpillar_max_levels`). Sizes are chosen so that, scaled to a 375 px
phone, tick labels stay at least 9 px tall.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtri

from runner.fit import FixedEffect
from runner.report.raster import log_counts_image, png_data_uri
from runner.report.svg import (
    FONT_PX,
    Box,
    Chart,
    Image,
    Line,
    Scale,
    Text,
    cut,
    dots,
    f1,
    label_width,
    nice_ticks,
    padded,
    polyline,
    segments,
    tick_label,
    x_axis,
    y_axis,
)

SCATTER_MAX = 1500
QQ_POINTS = 500
CATERPILLAR_MAX = 50
MAX_WIDTH = 430.0  # px; a 375 px phone shows ~355 px, so 12 px labels stay above 9 px (x 0.83)
INTERCEPTS = frozenset({"Intercept", "(Intercept)"})

Plot = Chart  # what the page lays out


def _of(model: str) -> str:
    return f" of {model}" if model else ""


def _finite_range(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)


def _category_axis(chart: Chart, box: Box, labels: Sequence[str], ys: np.ndarray, font_cls: str = "tick") -> None:
    for label, y in zip(labels, ys.tolist()):
        chart.marks.append(Line(f1(box.left - 4), f1(y), f1(box.left), f1(y), "axis"))
        chart.marks.append(Text(f1(box.left - 6), f1(y + 4), label, font_cls, "end"))
    chart.marks.append(Line(f1(box.left), f1(box.top), f1(box.left), f1(box.bottom), "axis"))


def _zero_line(chart: Chart, box: Box, scale: Scale) -> None:
    if scale.lo <= 0 <= scale.hi:
        x = f1(float(scale(0.0)))
        chart.marks.append(Line(x, f1(box.top), x, f1(box.bottom), "zero"))


def coefficient_plot(fixed: Sequence[FixedEffect], model: str = "") -> Plot | None:
    """Estimates with their intervals; the intercept is left out when other terms exist
    because its scale would squash them."""
    rows = [f for f in fixed if f.term not in INTERCEPTS] or list(fixed)
    if not rows:
        return None
    omitted = len(rows) < len(fixed)
    n = len(rows)
    labels = [cut(r.term) for r in rows]
    width = MAX_WIDTH
    left = min(0.45 * width, label_width(labels))
    box = Box(left, 10.0, width - 15.0, 10.0 + 24.0 * n)
    est = np.array([r.estimate for r in rows], dtype=float)
    lo = np.array([np.nan if r.ci_low is None else r.ci_low for r in rows], dtype=float)
    hi = np.array([np.nan if r.ci_high is None else r.ci_high for r in rows], dtype=float)
    xmin, xmax = _finite_range(est, lo, hi, np.zeros(1))
    scale = Scale(*padded(xmin, xmax), box.left, box.right)
    ys = box.top + 12.0 + 24.0 * np.arange(n)
    caption = "Fixed effects with their confidence intervals."
    if omitted:
        caption += " The intercept is omitted (its scale would hide the other terms)."
    chart = Chart(width, box.bottom + 42.0, f"coefficient plot{_of(model)}", caption)
    x_axis(chart, box, scale, "estimate with confidence interval")
    _zero_line(chart, box, scale)
    _category_axis(chart, box, labels, ys)
    chart.marks.append(segments(scale(lo), scale(hi), ys, "ci"))
    chart.marks.append(dots(scale(est), ys, "dot"))
    return chart


def _binned_mean(fitted: np.ndarray, resid: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean residual in `bins` quantile bins of the fitted values: a cheap trend instead of a lowess."""
    edges = np.unique(np.quantile(fitted, np.linspace(0, 1, bins + 1)))
    if edges.size <= 2:
        return np.empty(0), np.empty(0)
    idx = np.clip(np.searchsorted(edges, fitted, side="right") - 1, 0, edges.size - 2)
    sums = np.bincount(idx, weights=resid, minlength=edges.size - 1)
    cnt = np.bincount(idx, minlength=edges.size - 1)
    mid = (edges[:-1] + edges[1:]) / 2
    keep = cnt > 0
    return mid[keep], sums[keep] / cnt[keep]


def _density(chart: Chart, box: Box, fitted: np.ndarray, resid: np.ndarray, xs: Scale, ys: Scale) -> None:
    """The 2D histogram as one raster, and a log colour bar to its right."""
    counts, _, _ = np.histogram2d(fitted, resid, bins=(80, 60), range=((xs.lo, xs.hi), (ys.lo, ys.hi)))
    vmax = float(counts.max())
    chart.marks.append(Image(f1(box.left), f1(box.top), f1(box.right - box.left), f1(box.bottom - box.top),
                             png_data_uri(log_counts_image(counts.T, vmax))))
    bar = Box(box.right + 12, box.top, box.right + 24, box.bottom)
    ramp = np.exp(np.linspace(np.log(max(vmax, 1.0)), 0.0, 64))[:, None]
    chart.marks.append(Image(f1(bar.left), f1(bar.top), f1(bar.right - bar.left), f1(bar.bottom - bar.top),
                             png_data_uri(log_counts_image(ramp, vmax)[::-1])))
    top = np.log(max(vmax, 1.0)) or 1.0
    for k in range(0, int(np.floor(np.log10(max(vmax, 1.0)))) + 1):
        y = bar.bottom - np.log(10.0**k) / top * (bar.bottom - bar.top)
        chart.marks.append(Line(f1(bar.right), f1(y), f1(bar.right + 3), f1(y), "axis"))
        chart.marks.append(Text(f1(bar.right + 5), f1(y + 4), f"{10**k:,}", "tick"))
    chart.marks.append(Text(f1(bar.left - 2), f1(bar.top - 4), "rows per cell", "small"))


def residual_plot(fitted: np.ndarray, resid: np.ndarray, model: str = "") -> Plot:
    """Residuals vs fitted: points for small data, a 2D histogram (one raster) for big."""
    fitted = np.asarray(fitted, dtype=float)
    resid = np.asarray(resid, dtype=float)
    ok = np.isfinite(fitted) & np.isfinite(resid)
    fitted, resid = fitted[ok], resid[ok]
    n = fitted.size
    dense = n > SCATTER_MAX
    bins = int(min(20, max(4, n // 40)))  # about 40 rows per bin at least, so the line is not noise
    width = MAX_WIDTH
    box = Box(62.0, 22.0 if dense else 10.0, width - (75.0 if dense else 15.0), 250.0)
    kind = f"2D histogram of {n:,} rows" if dense else f"one point per row, {n:,} rows"
    caption = f"Residuals vs fitted values ({kind}); red: mean residual in {bins} bins of fitted values."
    chart = Chart(width, box.bottom + 42.0, f"residuals vs fitted{_of(model)}", caption)
    xs = Scale(*padded(*_finite_range(fitted)), box.left, box.right)
    ys = Scale(*padded(*_finite_range(resid, np.zeros(1))), box.bottom, box.top)
    x_axis(chart, box, xs, "fitted")
    y_axis(chart, box, ys, "residual")
    if n == 0:
        chart.marks.append(Text(f1((box.left + box.right) / 2), f1((box.top + box.bottom) / 2), "no residuals",
                                "tick", "middle"))
        return chart
    if dense:
        _density(chart, box, fitted, resid, xs, ys)
    else:
        chart.marks.append(dots(xs(fitted), ys(resid), "dot small"))
    y0 = f1(float(ys(0.0)))
    chart.marks.append(Line(f1(box.left), y0, f1(box.right), y0, "zero solid"))
    mx, my = _binned_mean(fitted, resid, bins)
    trend = polyline(xs(mx), ys(my), "trend")
    if trend is not None:
        chart.marks.append(trend)
    return chart


def binned_residual_plot(fitted: np.ndarray, resid: np.ndarray, model: str = "") -> Plot:
    """Binomial GLMMs: mean response residual (y - fitted proportion) in bins of the fitted
    probability, with +-2 SE bands (Gelman & Hill's binned residual plot): a 0/1 cloud says
    nothing, a bin mean outside its band says the model misses there."""
    fitted = np.asarray(fitted, dtype=float)
    resid = np.asarray(resid, dtype=float)
    ok = np.isfinite(fitted) & np.isfinite(resid)
    fitted, resid = fitted[ok], resid[ok]
    n = fitted.size
    bins = int(min(40, max(4, np.sqrt(n))))
    width = MAX_WIDTH
    box = Box(62.0, 10.0, width - 15.0, 250.0)
    caption = (f"Binned residuals: mean of y - fitted in {bins} bins of the fitted probability ({n:,} rows); "
               "grey: +-2 standard errors of a bin mean.")
    chart = Chart(width, box.bottom + 42.0, f"binned residuals{_of(model)}", caption)
    edges = np.unique(np.quantile(fitted, np.linspace(0, 1, bins + 1))) if n else np.zeros(1)
    if edges.size < 2:
        edges = np.array([fitted.min() - 1e-9, fitted.max() + 1e-9]) if n else np.array([0.0, 1.0])
    idx = np.clip(np.searchsorted(edges, fitted, side="right") - 1, 0, edges.size - 2)
    cnt = np.bincount(idx, minlength=edges.size - 1)
    keep = cnt > 0
    mx = (np.bincount(idx, weights=fitted, minlength=edges.size - 1)[keep] / cnt[keep])
    my = (np.bincount(idx, weights=resid, minlength=edges.size - 1)[keep] / cnt[keep])
    se = 2.0 * np.sqrt(np.clip(mx * (1.0 - mx), 0.0, None) / cnt[keep])
    xs = Scale(*padded(*_finite_range(mx if mx.size else np.zeros(1))), box.left, box.right)
    ys = Scale(*padded(*_finite_range(my, se, -se, np.zeros(1))), box.bottom, box.top)
    x_axis(chart, box, xs, "fitted probability (bin mean)")
    y_axis(chart, box, ys, "mean residual")
    y0 = f1(float(ys(0.0)))
    chart.marks.append(Line(f1(box.left), y0, f1(box.right), y0, "zero solid"))
    order = np.argsort(mx)
    for band in (se, -se):
        line = polyline(xs(mx[order]), ys(band[order]), "axis")
        if line is not None:
            chart.marks.append(line)
    if mx.size:
        chart.marks.append(dots(xs(mx), ys(my), "dot"))
    return chart


def qq_plot(resid: np.ndarray, model: str = "") -> Plot:
    """Normal QQ plot of standardized residuals, at most QQ_POINTS quantiles."""
    r = np.asarray(resid, dtype=float)
    r = r[np.isfinite(r)]
    n = r.size
    m = min(n, QQ_POINTS)
    note = f" ({m} quantiles of {n:,} residuals)" if m < n else ""
    width = 330.0
    box = Box(62.0, 10.0, width - 15.0, 250.0)
    chart = Chart(width, box.bottom + 42.0, f"normal QQ plot{_of(model)}", f"Normal QQ plot of the residuals{note}.")
    if n < 2:
        chart.marks.append(Text(f1(width / 2), f1(box.bottom / 2), "too few residuals", "tick", "middle"))
        return chart
    sd = float(np.std(r, ddof=1)) or 1.0
    z = (r - float(np.mean(r))) / sd
    probs = (np.arange(1, m + 1) - 0.5) / m
    sample = np.sort(z) if m == n else np.quantile(z, probs)
    theo = ndtri(probs)
    lim = float(max(np.abs(theo).max(), np.abs(sample).max()))
    xs = Scale(*padded(-lim, lim), box.left, box.right)
    ys = Scale(*padded(-lim, lim), box.bottom, box.top)
    x_axis(chart, box, xs, "normal quantile")
    y_axis(chart, box, ys, "standardized residual")
    chart.marks.append(Line(f1(float(xs(-lim))), f1(float(ys(-lim))), f1(float(xs(lim))), f1(float(ys(lim))),
                            "zero"))
    chart.marks.append(dots(xs(theo), ys(sample), "dot small"))
    return chart


def _ranef_grid(ranef: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Levels (first-seen order), modes and conditional SDs as (level, column) arrays, and the columns."""
    level_codes, levels = pd.factorize(ranef["level"].astype(str), sort=False)
    col_codes, columns = pd.factorize(ranef["column"].astype(str), sort=False)
    modes = np.full((len(levels), len(columns)), np.nan)
    sds = np.full_like(modes, np.nan)
    rev = slice(None, None, -1)  # assigned in reverse, so the first row of a (level, column) wins
    modes[level_codes[rev], col_codes[rev]] = ranef["mode"].to_numpy(dtype=float)[rev]
    sds[level_codes[rev], col_codes[rev]] = ranef["cond_sd"].to_numpy(dtype=float)[rev]
    return [str(x) for x in levels], modes, sds, [str(c) for c in columns]


def caterpillar_plot(ranef: pd.DataFrame, title: str, model: str = "",
                     max_levels: int | None = None) -> Plot | None:
    """Conditional modes of one random term with +-1.96 conditional SD, one panel per column.

    With more than `max_levels` levels (default CATERPILLAR_MAX) only those with the
    largest |mode| of the first column are drawn (the caption says so); levels are
    sorted by that mode.
    """
    if ranef.empty:
        return None
    limit = max_levels or CATERPILLAR_MAX
    levels, modes, sds, columns = _ranef_grid(ranef)
    total = len(levels)
    first = np.where(np.isfinite(modes[:, 0]), np.abs(modes[:, 0]), -1.0)
    keep = np.argsort(-first, kind="stable")[:limit]
    lead = modes[keep, 0]
    order = keep[np.argsort(np.where(np.isnan(lead), np.inf, -lead), kind="stable")]
    modes, sds = modes[order], sds[order]
    shown = len(order)

    labels = [cut(levels[i]) for i in order]
    gap, row = 12.0, 15.0
    left = min(200.0, label_width(labels))
    room = MAX_WIDTH - left - 15.0 - (len(columns) - 1) * gap  # panels share what the labels leave
    panel = max(90.0, min(240.0, room / len(columns)))
    width = left + len(columns) * panel + (len(columns) - 1) * gap + 15.0
    top = 24.0
    bottom = top + row * shown + 6.0
    caption = f"Conditional modes of {title} with ±1.96 conditional SD, sorted by the {columns[0]} mode."
    if shown < total:
        caption += f" Showing the {shown} levels with the largest |mode| of {total:,}."
    chart = Chart(width, bottom + 26.0, f"caterpillar plot {title}{_of(model)}", caption)
    ys = top + 3.0 + row / 2 + row * np.arange(shown)
    for k, col in enumerate(columns):
        x0 = left + k * (panel + gap)
        box = Box(x0, top, x0 + panel, bottom)
        est = modes[:, k]
        half = 1.96 * sds[:, k]
        xmin, xmax = _finite_range(est - half, est + half, est, np.zeros(1))
        scale = Scale(*padded(xmin, xmax), box.left, box.right)
        ticks = nice_ticks(scale.lo, scale.hi, 3)
        if len(ticks) > 4:
            ticks = ticks[::2]
        _panel_ticks(chart, box, scale, ticks)
        _zero_line(chart, box, scale)
        chart.marks.append(Text(f1((box.left + box.right) / 2), f1(top - 8), cut(col, 20), "panel-title", "middle"))
        chart.marks.append(segments(scale(est - half), scale(est + half), ys, "ci light"))
        chart.marks.append(dots(scale(est), ys, "dot small"))
        if k == 0:
            _category_axis(chart, box, labels, ys)
        else:
            chart.marks.append(Line(f1(box.left), f1(box.top), f1(box.left), f1(box.bottom), "axis"))
    return chart


def _panel_ticks(chart: Chart, box: Box, scale: Scale, ticks: list[float]) -> None:
    for t in ticks:
        x = f1(float(scale(t)))
        chart.marks.append(Line(x, f1(box.top), x, f1(box.bottom), "grid"))
        chart.marks.append(Text(x, f1(box.bottom + 16), tick_label(t, ticks), "tick", "middle"))
    chart.marks.append(Line(f1(box.left), f1(box.bottom), f1(box.right), f1(box.bottom), "axis"))


__all__ = ["CATERPILLAR_MAX", "FONT_PX", "Plot", "QQ_POINTS", "SCATTER_MAX", "caterpillar_plot",
           "coefficient_plot", "qq_plot", "residual_plot", "binned_residual_plot"]
