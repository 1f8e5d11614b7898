"""A small, dependency-free SVG writer for the report's charts (matplotlib stays out of the Lambda package).

Each chart is one `<svg>` element with a viewBox and `width="100%"`, so it scales to the page and never overflows
it; every text it holds is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

BAR = "#3b6ea8"
MARK = "#c0392b"
TEXT = "#222"
GRID = "#ccc"
FONT = 'font-family="sans-serif" font-size="11"'


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'style="max-width:{width}px;height:auto" role="img" aria-label="{escape(title)}">'
    )
    return "".join([head, f"<title>{escape(title)}</title>", *body, "</svg>"])


def _text(x: float, y: float, text: str, anchor: str = "start", fill: str = TEXT) -> str:
    return f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" fill="{fill}" {FONT}>{escape(text)}</text>'


def column_chart(
    values: list[float],
    labels: list[str],
    title: str,
    markers: Sequence[tuple[float, str]] = (),
    width: int = 640,
    height: int = 240,
) -> str:
    """Return a column chart of `values` (one column each, labelled below), with vertical markers at positions
    0..1 along the axis (e.g. the tier thresholds on a probability axis)."""
    left, right, top, bottom = 44, 12, 24, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([*values, 0]) or 1
    step = plot_w / max(len(values), 1)
    body = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{GRID}"/>']
    body.append(_text(left - 4, top + 4, _num(peak), "end"))
    body.append(_text(left - 4, top + plot_h, "0", "end"))
    for i, v in enumerate(values):
        h = plot_h * (v / peak) if v > 0 else 0.0
        x = left + i * step
        body.append(
            f'<rect x="{_num(x + 1)}" y="{_num(top + plot_h - h)}" width="{_num(max(step - 2, 1))}" '
            f'height="{_num(h)}" fill="{BAR}"><title>{escape(f"{labels[i]}: {_num(v)}")}</title></rect>'
        )
    every = max(1, len(labels) // 10)
    for i in range(0, len(labels), every):
        body.append(_text(left + i * step, top + plot_h + 14, labels[i]))
    for pos, name in markers:
        x = left + plot_w * min(max(pos, 0.0), 1.0)
        body.append(
            f'<line x1="{_num(x)}" y1="{top - 6}" x2="{_num(x)}" y2="{top + plot_h}" stroke="{MARK}" '
            'stroke-dasharray="4 3" stroke-width="1.5"/>'
        )
        body.append(_text(x + 3, top - 8, name, fill=MARK))
    return _svg(width, height, title, body)


def bar_chart(items: list[tuple[str, float]], title: str, width: int = 640, label_width: int = 200) -> str:
    """Return a horizontal bar chart, one labelled bar per (label, value), largest scale first as given."""
    row, top = 20, 8
    height = top * 2 + row * max(len(items), 1)
    plot_w = width - label_width - 60
    peak = max([v for _, v in items] + [0]) or 1
    body = []
    for i, (label, value) in enumerate(items):
        y = top + i * row
        w = plot_w * (value / peak) if value > 0 else 0.0
        shown = label if len(label) <= 32 else label[:31] + "…"
        body.append(_text(label_width - 6, y + 14, shown, "end"))
        body.append(
            f'<rect x="{label_width}" y="{y + 3}" width="{_num(w)}" height="{row - 6}" fill="{BAR}">'
            f"<title>{escape(f'{label}: {_num(value)}')}</title></rect>"
        )
        body.append(_text(label_width + w + 4, y + 14, _num(value)))
    if not items:
        body.append(_text(width / 2, top + 14, "nothing to show", "middle"))
    return _svg(width, height, title, body)
