"""Plot geometry for the report's inline SVG: marks, linear scales, tick choice, axes.

A plot here is data (`Chart`: a size and a list of marks with numeric coordinates and
plain-text labels); `templates/_plots.html.j2` turns it into SVG with Jinja autoescaping,
so a level called `<script>` is text wherever it lands. Nothing is drawn by matplotlib:
a whole page of plots costs milliseconds, and the output is byte-stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FONT_PX = 12.0  # tick labels; a plot <= 430 px wide scaled to a 375 px phone keeps them >= 9 px
CHAR_PX = 6.6  # rough width of one character at FONT_PX (labels are cut, never measured)


def f1(x: float) -> str:
    """A coordinate with one decimal (enough at screen resolution, and byte-stable)."""
    text = f"{x:.1f}"
    return "0.0" if text == "-0.0" else text


@dataclass(frozen=True)
class Line:
    x1: str
    y1: str
    x2: str
    y2: str
    cls: str = ""
    kind: str = "line"


@dataclass(frozen=True)
class Path:
    """A polyline or a set of dots (`M x y h0` segments drawn with round caps)."""

    d: str
    cls: str = ""
    kind: str = "path"


@dataclass(frozen=True)
class Rect:
    x: str
    y: str
    width: str
    height: str
    cls: str = ""
    kind: str = "rect"


@dataclass(frozen=True)
class Text:
    x: str
    y: str
    text: str
    cls: str = ""  # CSS class: tick (default size), axis, title, small
    anchor: str = "start"  # start | middle | end
    rotate: bool = False  # vertical text (a y-axis title)
    kind: str = "text"


@dataclass(frozen=True)
class Image:
    """An embedded raster (a 2D histogram): `href` is a base64 data URI, escaped like any attribute."""

    x: str
    y: str
    width: str
    height: str
    href: str
    kind: str = "image"


Mark = Line | Path | Rect | Text | Image


@dataclass
class Chart:
    """One figure: its size in CSS px, its marks, a caption and an accessible label."""

    width: float
    height: float
    label: str
    caption: str = ""
    marks: list[Mark] = field(default_factory=list)

    @property
    def width_px(self) -> str:
        return f1(self.width)

    @property
    def height_px(self) -> str:
        return f1(self.height)


@dataclass(frozen=True)
class Scale:
    """Data interval [lo, hi] onto pixels [p0, p1] (p1 < p0 for a y axis pointing up)."""

    lo: float
    hi: float
    p0: float
    p1: float

    def __call__(self, x: float | np.ndarray) -> np.ndarray:
        """Pixels of x (an array, 0-d for a scalar: take float() of it)."""
        values = np.asarray(x, dtype=float)
        span = self.hi - self.lo
        if not span:
            return np.full_like(values, (self.p0 + self.p1) / 2)
        return self.p0 + (values - self.lo) / span * (self.p1 - self.p0)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, target)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def tick_label(x: float, ticks: Sequence[float]) -> str:
    """A tick value with as many decimals as the step needs (thousands separated)."""
    if x == 0:
        return "0"
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(x)
    biggest = max(abs(t) for t in ticks)
    if biggest >= 1e6 or biggest < 1e-3:
        return f"{x:.2g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step * 10**decimals, 6) % 1:  # 2.5 x 10^k needs one more
        decimals += 1
    return f"{x:,.{decimals}f}"


def padded(lo: float, hi: float, share: float = 0.05) -> tuple[float, float]:
    """The data range with a margin, so points do not sit on the frame."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * share
    return lo - pad, hi + pad


def cut(label: str, limit: int = 28) -> str:
    """Labels longer than `limit` characters are cut with an ellipsis."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def label_width(labels: Sequence[str], font_px: float = FONT_PX) -> float:
    """Width in px of the widest label (estimated from its length) plus the tick."""
    return 10 + CHAR_PX * font_px / FONT_PX * max((len(x) for x in labels), default=1)


@dataclass(frozen=True)
class Box:
    """The plotting area of one panel, in px."""

    left: float
    top: float
    right: float
    bottom: float


def x_axis(chart: Chart, box: Box, scale: Scale, title: str | None) -> None:
    """Ticks, labels and grid lines under a panel, and the axis title."""
    ticks = nice_ticks(scale.lo, scale.hi)
    for t in ticks:
        x = f1(float(scale(t)))
        chart.marks.append(Line(x, f1(box.top), x, f1(box.bottom), "grid"))
        chart.marks.append(Line(x, f1(box.bottom), x, f1(box.bottom + 4), "axis"))
        chart.marks.append(Text(x, f1(box.bottom + 17), tick_label(t, ticks), "tick", "middle"))
    chart.marks.append(Line(f1(box.left), f1(box.bottom), f1(box.right), f1(box.bottom), "axis"))
    if title:
        chart.marks.append(Text(f1((box.left + box.right) / 2), f1(box.bottom + 34), title, "axis-title", "middle"))


def y_axis(chart: Chart, box: Box, scale: Scale, title: str | None) -> None:
    """Numeric ticks, labels and grid lines left of a panel, and a vertical axis title."""
    ticks = nice_ticks(min(scale.lo, scale.hi), max(scale.lo, scale.hi), 4)
    for t in ticks:
        y = f1(float(scale(t)))
        chart.marks.append(Line(f1(box.left), y, f1(box.right), y, "grid"))
        chart.marks.append(Line(f1(box.left - 4), y, f1(box.left), y, "axis"))
        chart.marks.append(Text(f1(box.left - 6), f1(float(scale(t)) + 4), tick_label(t, ticks), "tick", "end"))
    chart.marks.append(Line(f1(box.left), f1(box.top), f1(box.left), f1(box.bottom), "axis"))
    if title:
        chart.marks.append(Text(f1(14), f1((box.top + box.bottom) / 2), title, "axis-title", "middle", rotate=True))


def dots(xs: np.ndarray, ys: np.ndarray, cls: str = "dot") -> Path:
    """Points as one path of zero-length segments: a few bytes each, round caps draw the dot."""
    ok = np.isfinite(xs) & np.isfinite(ys)
    d = "".join(f"M{f1(x)} {f1(y)}h0" for x, y in zip(xs[ok].tolist(), ys[ok].tolist()))
    return Path(d, cls)


def polyline(xs: np.ndarray, ys: np.ndarray, cls: str) -> Path | None:
    """Connected points (non-finite ones skipped); None when fewer than two remain."""
    ok = np.isfinite(xs) & np.isfinite(ys)
    if ok.sum() < 2:
        return None
    pts = [f"{f1(x)} {f1(y)}" for x, y in zip(xs[ok].tolist(), ys[ok].tolist())]
    return Path("M" + "L".join(pts), cls)


def segments(x0: np.ndarray, x1: np.ndarray, y: np.ndarray, cls: str) -> Path:
    """Horizontal interval bars (one path), non-finite ones skipped."""
    ok = np.isfinite(x0) & np.isfinite(x1) & np.isfinite(y)
    d = "".join(f"M{f1(a)} {f1(c)}H{f1(b)}" for a, b, c in zip(x0[ok].tolist(), x1[ok].tolist(), y[ok].tolist()))
    return Path(d, cls)
