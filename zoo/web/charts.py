"""Inline SVG charts (line chart, bar chart, confusion heat map) written as text: no JavaScript, no CDN.

Pure functions of their arguments, so the same runs always give the same bytes (``zoo report`` relies on it).
Every label is escaped here; the returned string is safe to place in HTML as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Optional, Sequence

# matplotlib's tab10, so the web page and the PNG of `zoo plot` colour runs alike
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass
class Series:
    label: str
    points: list[tuple[float, Optional[float]]]  # (x, y); y None or NaN is a gap
    colour: str = PALETTE[0]
    dashed: bool = False
    best: Optional[float] = None  # the x to mark with a star (the best epoch)
    run_id: Optional[int] = None
    extra: dict[str, str] = field(default_factory=dict)


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.6g}" if value == int(value) else f"{value:.4g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round numbers covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


def line_chart(series: Sequence[Series], *, title: str, x_label: str = "epoch", y_label: str = "",
               width: int = 560, height: int = 300, chart_id: str = "") -> str:
    """One panel: a polyline per series, a circle per data point (hover shows the value), best x starred."""
    left, right, top, bottom = 56, 12, 28, 40
    legend_rows = len(series)
    height += 16 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom - 16 * legend_rows
    xs = [x for s in series for x, y in s.points if _finite(y)]
    ys = [y for s in series for _, y in s.points if _finite(y)]
    out = [f'<svg class="chart line-chart" data-chart="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text class="chart-title" x="{left}" y="18">{escape(title)}</text>']
    if not ys:
        out.append(f'<text class="empty" x="{left + plot_w / 2:.0f}" y="{top + plot_h / 2:.0f}" '
                   'text-anchor="middle">no data</text></svg>')
        return "".join(out)
    x_ticks = nice_ticks(min(xs), max(xs), 6) if max(xs) > min(xs) else [min(xs)]
    x_ticks = [t for t in x_ticks if t == int(t)] or x_ticks  # epochs are whole numbers
    y_ticks = nice_ticks(min(ys), max(ys), 5)
    x0, x1 = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y0, y1 = y_ticks[0], y_ticks[-1]
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / (y1 - y0) * plot_h

    out.append(f'<g class="axes"><rect class="plot-area" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>')
    for t in y_ticks:
        out.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{_num(py(t))}" y2="{_num(py(t))}"/>'
                   f'<text class="tick" x="{left - 6}" y="{_num(py(t) + 4)}" text-anchor="end">{_label(t)}</text>')
    for t in x_ticks:
        out.append(f'<text class="tick" x="{_num(px(t))}" y="{top + plot_h + 16}" '
                   f'text-anchor="middle">{_label(t)}</text>')
    out.append(f'<text class="axis-label" x="{left + plot_w / 2:.0f}" y="{top + plot_h + 32}" '
               f'text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text class="axis-label" transform="translate(14 {top + plot_h / 2:.0f}) rotate(-90)" '
                   f'text-anchor="middle">{escape(y_label)}</text>')
    out.append("</g>")
    for s in series:
        run = f' data-run="{s.run_id}"' if s.run_id is not None else ""
        out.append(f'<g class="series"{run} data-label="{escape(s.label)}">')
        segment: list[str] = []
        segments: list[list[str]] = [segment]
        for x, y in s.points:
            if _finite(y):
                segment.append(f"{_num(px(x))},{_num(py(y))}")
            elif segment:
                segment = []
                segments.append(segment)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        for seg in segments:
            if seg:
                out.append(f'<polyline fill="none" stroke="{s.colour}" stroke-width="2"{dash} '
                           f'points="{" ".join(seg)}"/>')
        for x, y in s.points:
            if _finite(y):
                out.append(f'<circle class="point" cx="{_num(px(x))}" cy="{_num(py(y))}" r="3" fill="{s.colour}">'
                           f'<title>{escape(s.label)}: {escape(x_label)} {_label(x)}, {y:.4g}</title></circle>')
        best = dict(s.points).get(s.best) if s.best is not None else None
        if _finite(best):
            cx, cy = px(s.best), py(best)
            star = " ".join(
                f"{_num(cx + (8 if i % 2 == 0 else 3.5) * math.sin(i * math.pi / 5))},"
                f"{_num(cy - (8 if i % 2 == 0 else 3.5) * math.cos(i * math.pi / 5))}" for i in range(10))
            out.append(f'<polygon class="best" points="{star}" fill="{s.colour}" stroke="#000" stroke-width="0.7">'
                       f'<title>{escape(s.label)}: best {escape(x_label)} {_label(s.best)}, {best:.4g}</title>'
                       "</polygon>")
        out.append("</g>")
    for i, s in enumerate(series):
        y = top + plot_h + 48 + 16 * i
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<g class="legend"><line x1="{left}" x2="{left + 22}" y1="{y - 4}" y2="{y - 4}" '
                   f'stroke="{s.colour}" stroke-width="2"{dash}/>'
                   f'<text x="{left + 28}" y="{y}">{escape(s.label)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(items: Sequence[tuple[str, Optional[float], str]], *, title: str, width: int = 420,
              chart_id: str = "") -> str:
    """Horizontal bars, one per (label, value, colour); a missing value is an empty row marked '—'."""
    label_w, right, top, row = 150, 60, 28, 22
    height = top + row * len(items) + 8
    values = [v for _, v, _ in items if _finite(v)]
    high = max([abs(v) for v in values], default=1.0) or 1.0
    bar_w = width - label_w - right
    out = [f'<svg class="chart bar-chart" data-chart="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text class="chart-title" x="4" y="18">{escape(title)}</text>']
    for i, (label, value, fill) in enumerate(items):
        y = top + i * row
        out.append(f'<text class="tick" x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        if _finite(value):
            w = abs(value) / high * bar_w
            out.append(f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{_num(w)}" height="{row - 6}" '
                       f'fill="{fill}"><title>{escape(label)}: {value:.4g}</title></rect>'
                       f'<text class="value" x="{_num(label_w + w + 4)}" y="{y + 15}">{value:.4f}</text>')
        else:
            out.append(f'<text class="value" x="{label_w + 4}" y="{y + 15}">—</text>')
    out.append("</svg>")
    return "".join(out)


def heatmap(classes: Sequence[str], matrix: Sequence[Sequence[int]], *, title: str = "Confusion matrix",
            chart_id: str = "") -> str:
    """A confusion matrix: rows the true class, columns the predicted one, shade by share of the row."""
    n = len(matrix)
    names = [classes[i] if i < len(classes) else str(i) for i in range(n)]
    cell = 44 if n <= 8 else max(18, 352 // n)
    longest = max((len(c) for c in names), default=1)
    label_w = min(160, 12 + 7 * longest)
    rotate = longest * 7 > cell - 4  # column names that do not fit across a cell are written at an angle
    top = 40 + int(label_w * 0.87) if rotate else 60
    width, height = label_w + cell * n + 10, top + cell * n + 24
    out = [f'<svg class="chart heatmap" data-chart="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text class="chart-title" x="4" y="18">{escape(title)}</text>']
    for j, name in enumerate(names):
        x = label_w + j * cell + cell / 2
        if rotate:
            out.append(f'<text class="tick" transform="translate({_num(x + 4)} {top - 6}) rotate(-60)">'
                       f'{escape(name)}</text>')
        else:
            out.append(f'<text class="tick" x="{_num(x)}" y="{top - 6}" text-anchor="middle">{escape(name)}</text>')
    for i, line in enumerate(matrix):
        total = sum(line) or 1
        y = top + i * cell
        out.append(f'<text class="tick" x="{label_w - 6}" y="{_num(y + cell / 2 + 4)}" '
                   f'text-anchor="end">{escape(names[i])}</text>')
        for j, count in enumerate(line):
            share = count / total
            hue = 140 if i == j else 0  # green diagonal, red confusions
            light = 97 - share * 55
            ink = "#fff" if light < 60 else "#222"
            out.append(f'<rect class="cell" x="{label_w + j * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                       f'fill="hsl({hue},55%,{light:.0f}%)"><title>true {escape(names[i])}, predicted '
                       f'{escape(names[j] if j < n else str(j))}: {count}</title></rect>')
            if cell >= 24:
                out.append(f'<text class="count" x="{_num(label_w + j * cell + cell / 2)}" '
                           f'y="{_num(y + cell / 2 + 4)}" text-anchor="middle" fill="{ink}">{count}</text>')
    out.append(f'<text class="axis-label" x="4" y="{height - 6}">rows: true class, columns: predicted</text>')
    out.append("</svg>")
    return "".join(out)
