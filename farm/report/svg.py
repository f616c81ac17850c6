"""Small static SVG charts (lines, points, step curves) written by hand for the HTML report.

Why hand-written SVG and not a plotting library: the report must open offline from a CI artifact, so nothing
may load from a CDN, and an interactive library vendored into every file costs megabytes per report; matplotlib
is not a dependency of the farm and would add about 40 MB to install for a few line charts. A rate-quality curve,
a frame-time distribution and a per-job power series are lines and points on two axes: about 200 lines of
Python, no dependency, output a few kB per chart that any browser renders and a test can find in the DOM.
Every text that may come from the store goes through ``html.escape``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f")
WIDTH, HEIGHT = 460, 280
LEFT, RIGHT, TOP, BOTTOM = 62, 12, 28, 44


@dataclass(frozen=True)
class Series:
    """One line (or set of points) of a chart; ``dashed`` tells an anchor from the bundle at a glance."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False
    line: bool = True
    markers: bool = True


@dataclass(frozen=True)
class Chart:
    title: str
    x_label: str
    y_label: str
    series: Sequence[Series]
    log_x: bool = False
    hlines: Sequence[tuple[float, str]] = field(default_factory=tuple)  # (y, label): baselines, limits
    css_class: str = "chart"
    legend_at: str = "top"  # top | bottom (right-hand corner): where the lines leave room


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k) covering [lo, hi], so axes read like a hand-made plot."""
    if not hi > lo:
        lo, hi = lo - max(1.0, abs(lo) * 0.05), lo + max(1.0, abs(lo) * 0.05)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(math.ceil((hi - start) / step) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade, enough for rates that span one or two decades."""
    for steps in ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        out = [m * 10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in steps]
        inside = [t for t in out if lo <= t <= hi]
        if len(inside) >= 3:
            return inside
    return [lo, hi]


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3g}"


class _Scale:
    """Data -> pixel mapping of one axis (linear or log10)."""

    def __init__(self, lo: float, hi: float, px_lo: float, px_hi: float, log: bool) -> None:
        self.log = log
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        if self.hi == self.lo:
            self.lo, self.hi = self.lo - 0.5, self.hi + 0.5
        self.px_lo, self.px_hi = px_lo, px_hi

    def __call__(self, v: float) -> float:
        t = ((math.log10(v) if self.log else v) - self.lo) / (self.hi - self.lo)
        return self.px_lo + t * (self.px_hi - self.px_lo)


def _ranges(chart: Chart) -> tuple[list[float], list[float], tuple[float, float]] | None:
    """Ticks of both axes and the x domain (log ticks may not reach the outermost points)."""
    pts = [p for s in chart.series for p in s.points if all(math.isfinite(c) for c in p)]
    if chart.log_x:
        pts = [p for p in pts if p[0] > 0]
    if not pts:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts] + [y for y, _ in chart.hlines]
    x_ticks = _log_ticks(min(xs), max(xs)) if chart.log_x else nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys), max(ys))
    return x_ticks, y_ticks, (min([*xs, *x_ticks]), max([*xs, *x_ticks]))


def _axes(chart: Chart, sx: _Scale, sy: _Scale, x_ticks: list[float], y_ticks: list[float]) -> list[str]:
    out = [f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
           'fill="#fff" stroke="#999"/>']  # fmt: skip
    for t in x_ticks:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">{_fmt(t)}</text>')
    for t in y_ticks:
        y = sy(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
               f"{escape(chart.x_label)}</text>")  # fmt: skip
    out.append(f'<text transform="translate(14 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">'
               f"{escape(chart.y_label)}</text>")  # fmt: skip
    out.append(f'<text x="{LEFT}" y="16" font-weight="bold">{escape(chart.title)}</text>')
    return out


def _series(s: Series, sx: _Scale, sy: _Scale, log_x: bool) -> list[str]:
    pts = [(sx(x), sy(y)) for x, y in s.points if math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)]
    out = [f'<g class="series" data-name="{escape(s.name)}"><title>{escape(s.name)}</title>']
    if s.line and len(pts) > 1:
        dash = ' stroke-dasharray="6 3"' if s.dashed else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="1.6"{dash}/>')
    if s.markers:
        fill = "#fff" if s.dashed else s.color
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{fill}" stroke="{s.color}"/>' for x, y in pts]
    out.append("</g>")
    return out


def _legend(chart: Chart) -> list[str]:
    out = []
    shown = chart.series[:8]
    lines = min(len(chart.series), len(shown) + 1)
    first = TOP + 12 if chart.legend_at == "top" else HEIGHT - BOTTOM - 6 - 13 * (lines - 1)
    for i, s in enumerate(shown):
        y = first + 13 * i
        dash = ' stroke-dasharray="6 3"' if s.dashed else ""
        out.append(f'<line x1="{WIDTH - RIGHT - 150}" y1="{y - 4}" x2="{WIDTH - RIGHT - 132}" y2="{y - 4}" '
                   f'stroke="{s.color}" stroke-width="2"{dash}/>')  # fmt: skip
        out.append(f'<text x="{WIDTH - RIGHT - 128}" y="{y}">{escape(s.name[:26])}</text>')
    if len(chart.series) > len(shown):  # the rest are named on hover (each series has a <title>)
        y = first + 13 * len(shown)
        out.append(f'<text x="{WIDTH - RIGHT - 128}" y="{y}">+{len(chart.series) - len(shown)} more (hover)</text>')
    return out


def render(chart: Chart) -> str:
    """The chart as one ``<svg>`` element; a chart without a finite point says so instead of drawing axes."""
    ranges = _ranges(chart)
    # inline SVG in HTML5 needs no xmlns: the file then names no URL at all
    head = (f'<svg class="{escape(chart.css_class)}" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(chart.title)}">')  # fmt: skip
    if ranges is None:
        head = head.replace(
            f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}"', f'height="56" viewBox="0 0 {WIDTH} 56"'
        )
        return (f'{head}<text x="10" y="20" font-weight="bold">{escape(chart.title)}</text>'
                '<text x="10" y="44">no measured values to plot</text></svg>')  # fmt: skip
    x_ticks, y_ticks, (x_lo, x_hi) = ranges
    sx = _Scale(x_lo, x_hi, LEFT, WIDTH - RIGHT, chart.log_x)
    sy = _Scale(min(y_ticks), max(y_ticks), HEIGHT - BOTTOM, TOP, False)
    body = _axes(chart, sx, sy, x_ticks, y_ticks)
    for y, label in chart.hlines:
        py = sy(y)
        body.append(f'<line x1="{LEFT}" y1="{py:.1f}" x2="{WIDTH - RIGHT}" y2="{py:.1f}" stroke="#555" '
                    f'stroke-dasharray="2 3"/><text x="{LEFT + 4}" y="{py - 3:.1f}">')  # fmt: skip
        body.append(f"{escape(label)}</text>")
    for s in chart.series:
        body += _series(s, sx, sy, chart.log_x)
    body += _legend(chart)
    return head + "".join(body) + "</svg>"
