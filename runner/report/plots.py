"""Matplotlib figures as inline SVG strings for the HTML report.

Plots summarize, never draw one element per data row: residuals vs fitted become a
2D histogram (one embedded raster) above SCATTER_MAX rows, the QQ plot uses at most
QQ_POINTS quantiles, and a caterpillar shows at most CATERPILLAR_MAX levels. Output
is deterministic (fixed hash salt, no date, no creator metadata) and every SVG id is
prefixed so several plots can live in one HTML document.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from scipy.special import ndtri

from runner.fit import FixedEffect

SCATTER_MAX = 1500
QQ_POINTS = 500
CATERPILLAR_MAX = 50
_ACCENT = "#1f5f99"
_RC = {
    "svg.fonttype": "none",  # real <text>: small, selectable, searchable
    "svg.hashsalt": "mixspec",  # deterministic clip-path and marker ids
    "svg.image_inline": True,
    "text.parse_math": False,  # a '$' in a level name is text, not mathtext
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

_HEADER = re.compile(r"^.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_STYLE = re.compile(r"\s*<style[^>]*>.*?</style>", re.S)
_EMPTY_DEFS = re.compile(r"\s*<defs>\s*</defs>", re.S)
_SIZE = re.compile(r'<svg([^>]*?) width="([\d.]+)pt" height="([\d.]+)pt"')
_ID = re.compile(r'\sid="([^"]+)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')


@dataclass(frozen=True)
class Plot:
    """One rendered figure: inline SVG markup plus a caption (plain text, escaped later)."""

    svg: str
    caption: str = ""
    width_pt: float = 432.0  # natural width, so the page can lay plots side by side only when they fit


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasSVG(fig)
    return fig


def svg_text(fig: Figure, prefix: str, label: str) -> str:
    """Serialize a figure to SVG fit for inlining in HTML.

    Drops the XML prolog, metadata and the global `*{...}` style (it would apply to the
    whole page), removes ids nothing refers to, prefixes the rest so plots never share
    an id, and makes the figure scale down to the page width.
    """
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})  # inside _render's rc_context
    text = buf.getvalue()
    text = _HEADER.sub("", text, count=1)
    text = _METADATA.sub("", text, count=1)
    text = _STYLE.sub("", text)
    text = _EMPTY_DEFS.sub("", text)
    referenced = {m.group(2) for m in _REF.finditer(text)}
    text = _ID.sub(lambda m: f' id="{prefix}-{m.group(1)}"' if m.group(1) in referenced else "", text)
    text = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)

    def size(m: re.Match[str]) -> str:
        return (
            f'<svg{m.group(1)} class="plot" role="img" aria-label="{_attr(label)}" '
            f'style="max-width:{m.group(2)}pt"'
        )

    return _SIZE.sub(size, text, count=1).strip()


def _short(label: str, limit: int = 28) -> str:
    """Tick labels longer than `limit` characters are cut with an ellipsis."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _margins(fig: Figure, left: float, bottom: float = 0.5, right: float = 0.15, top: float = 0.15,
             wspace: float = 0.08) -> None:
    """Margins in inches. Fixed margins, not constrained layout: that measures every
    tick label several times and doubles the render time of a page."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace)


def _label_inches(labels: Sequence[str], fontsize: float) -> float:
    """Rough width of the widest tick label (0.6 em per character), plus the tick."""
    return 0.2 + 0.6 * fontsize / 72 * max((len(x) for x in labels), default=1)


def _render(build, width: float, height: float, prefix: str, label: str) -> str:  # type: ignore[no-untyped-def]
    with matplotlib.rc_context(_RC):
        fig = _figure(width, height)
        build(fig)
        return svg_text(fig, prefix, label)


def coefficient_plot(fixed: Sequence[FixedEffect], prefix: str) -> Plot | None:
    """Estimates with their intervals; the intercept is left out when other terms exist
    because its scale would squash them."""
    rows = [f for f in fixed if f.term not in {"Intercept", "(Intercept)"}] or list(fixed)
    omitted = len(rows) < len(fixed)
    if not rows:
        return None
    n = len(rows)

    names = [_short(r.term) for r in rows]
    width, height = 6.0, 0.9 + 0.32 * n

    def build(fig: Figure) -> None:
        _margins(fig, left=min(0.45 * width, _label_inches(names, 9)), bottom=0.55)
        ax = fig.add_subplot()
        y = np.arange(n)[::-1]
        est = np.array([r.estimate for r in rows], dtype=float)
        lo = np.array([np.nan if r.ci_low is None else r.ci_low for r in rows], dtype=float)
        hi = np.array([np.nan if r.ci_high is None else r.ci_high for r in rows], dtype=float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.hlines(y[ok], lo[ok], hi[ok], color=_ACCENT, lw=2)
        ax.plot(est, y, "o", color=_ACCENT, ms=5)
        ax.axvline(0, color="#888888", lw=0.8, ls="--")
        ax.set_yticks(y, names)
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_xlabel("estimate with confidence interval")

    caption = "Fixed effects with their confidence intervals."
    if omitted:
        caption += " The intercept is omitted (its scale would hide the other terms)."
    svg = _render(build, width, height, prefix, "coefficient plot")
    return Plot(svg, caption, width * 72)


def residual_plot(fitted: np.ndarray, resid: np.ndarray, prefix: str) -> Plot:
    """Residuals vs fitted: points for small data, a 2D histogram (one raster) for big."""
    fitted = np.asarray(fitted, dtype=float)
    resid = np.asarray(resid, dtype=float)
    ok = np.isfinite(fitted) & np.isfinite(resid)
    fitted, resid = fitted[ok], resid[ok]
    n = fitted.size
    dense = n > SCATTER_MAX
    bins = int(min(20, max(4, n // 40)))  # about 40 rows per bin at least, so the line is not noise

    def build(fig: Figure) -> None:
        _margins(fig, left=0.65, bottom=0.5, right=1.0 if dense else 0.15)
        ax = fig.add_subplot()
        if n == 0:
            ax.text(0.5, 0.5, "no residuals", ha="center", transform=ax.transAxes)
            return
        if dense:
            counts, xe, ye = np.histogram2d(fitted, resid, bins=(80, 60))
            counts = np.where(counts > 0, counts, np.nan)
            img = ax.imshow(
                counts.T,
                origin="lower",
                extent=(xe[0], xe[-1], ye[0], ye[-1]),
                aspect="auto",
                interpolation="nearest",
                cmap="viridis",
                norm=LogNorm(vmin=1, vmax=max(1.0, float(np.nanmax(counts)))),
            )
            box = ax.get_position()
            cax = fig.add_axes((box.x1 + 0.02, box.y0, 0.03, box.height))
            bar = fig.colorbar(img, cax=cax, label="rows per cell")
            bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
            bar.ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.plot(fitted, resid, "o", ms=3, alpha=0.6, color=_ACCENT, mec="none")
        # binned mean of the residuals: a cheap trend line instead of a lowess
        edges = np.unique(np.quantile(fitted, np.linspace(0, 1, bins + 1)))
        if edges.size > 2:
            idx = np.clip(np.searchsorted(edges, fitted, side="right") - 1, 0, edges.size - 2)
            sums = np.bincount(idx, weights=resid, minlength=edges.size - 1)
            cnt = np.bincount(idx, minlength=edges.size - 1)
            mid = (edges[:-1] + edges[1:]) / 2
            keep = cnt > 0
            ax.plot(mid[keep], sums[keep] / cnt[keep], color="#d62728", lw=1.5, label="binned mean")
        ax.axhline(0, color="#444444", lw=0.8)
        ax.set_xlabel("fitted")
        ax.set_ylabel("residual")

    kind = f"2D histogram of {n:,} rows" if dense else f"one point per row, {n:,} rows"
    caption = f"Residuals vs fitted values ({kind}); red: mean residual in {bins} bins of fitted values."
    return Plot(_render(build, 5.0, 3.4, prefix, "residuals vs fitted"), caption, 5.0 * 72)


def qq_plot(resid: np.ndarray, prefix: str) -> Plot:
    """Normal QQ plot of standardized residuals, at most QQ_POINTS quantiles."""
    r = np.asarray(resid, dtype=float)
    r = r[np.isfinite(r)]
    n = r.size
    m = min(n, QQ_POINTS)

    def build(fig: Figure) -> None:
        _margins(fig, left=0.6, bottom=0.5)
        ax = fig.add_subplot()
        if n < 2:
            ax.text(0.5, 0.5, "too few residuals", ha="center", transform=ax.transAxes)
            return
        sd = float(np.std(r, ddof=1)) or 1.0
        z = (r - float(np.mean(r))) / sd
        probs = (np.arange(1, m + 1) - 0.5) / m
        sample = np.sort(z) if m == n else np.quantile(z, probs)
        theo = ndtri(probs)
        ax.plot(theo, sample, "o", ms=3, color=_ACCENT, mec="none")
        lim = float(max(np.abs(theo).max(), np.abs(sample).max()))
        ax.plot([-lim, lim], [-lim, lim], color="#888888", lw=0.8, ls="--")
        ax.set_xlabel("normal quantile")
        ax.set_ylabel("standardized residual")

    note = f" ({m} quantiles of {n:,} residuals)" if m < n else ""
    return Plot(_render(build, 3.6, 3.4, prefix, "normal QQ plot"), f"Normal QQ plot of the residuals{note}.", 3.6 * 72)


def caterpillar_plot(ranef: pd.DataFrame, prefix: str, title: str) -> Plot | None:
    """Conditional modes of one random term with +-1.96 conditional SD, one panel per column.

    With more than CATERPILLAR_MAX levels only those with the largest |mode| of the
    first column are drawn (the caption says so); levels are sorted by that mode.
    """
    if ranef.empty:
        return None
    columns = list(dict.fromkeys(ranef["column"].astype(str)))
    modes = ranef.pivot_table(index="level", columns="column", values="mode", aggfunc="first", sort=False)
    sds = ranef.pivot_table(index="level", columns="column", values="cond_sd", aggfunc="first", sort=False)
    modes.index = modes.index.astype(str)
    sds.index = sds.index.astype(str)
    total = len(modes)
    first = modes[columns[0]].abs().fillna(-1.0)
    keep = first.sort_values(ascending=False, kind="mergesort").index[:CATERPILLAR_MAX]
    order = modes.loc[keep, columns[0]].sort_values(ascending=False, kind="mergesort").index
    modes, sds = modes.loc[order], sds.loc[order]
    shown = len(order)

    labels = [_short(lab) for lab in order]
    fontsize = 7 if shown > 25 else 8
    width = min(7.0, 2.6 + 2.2 * len(columns))
    height = 0.9 + 0.16 * shown

    def build(fig: Figure) -> None:
        _margins(fig, left=min(0.45 * width, _label_inches(labels, fontsize)), bottom=0.45, top=0.3)
        axes = fig.subplots(1, len(columns), sharey=True, squeeze=False)[0]
        y = np.arange(shown)[::-1]
        for ax, col in zip(axes, columns):
            est = modes[col].to_numpy(dtype=float)
            half = 1.96 * sds[col].to_numpy(dtype=float)
            ok = np.isfinite(half)
            ax.hlines(y[ok], (est - half)[ok], (est + half)[ok], color="#9ab6d3", lw=1.5)
            ax.plot(est, y, "o", ms=3, color=_ACCENT)
            ax.axvline(0, color="#888888", lw=0.8, ls="--")
            ax.set_title(col)
            ax.set_ylim(-0.7, shown - 0.3)
        axes[0].set_yticks(y, labels, fontsize=fontsize)

    svg = _render(build, width, height, prefix, f"caterpillar plot {title}")
    caption = f"Conditional modes of {title} with ±1.96 conditional SD, sorted by the {columns[0]} mode."
    if shown < total:
        caption += f" Showing the {shown} levels with the largest |mode| of {total:,}."
    return Plot(svg, caption, width * 72)
