"""Figures that stay readable on a phone (390 px wide) and redraw fast: the legend is not Plotly's (at the
right edge it takes a third of a narrow screen; under the plot it collided with the axis title and Plotly
measured and redrew it, and recomputed the margins, on every redraw) but a wrapping HTML key the page
draws under the chart (`legend_html`), and tick labels get the margin they need:
- `key_outside`: no Plotly legend, margins still sized by Plotly (figures with user-named ticks).
- `fixed_frame`: no Plotly legend and fixed margins, for a chart that redraws while a slider moves
  (Explore's trade-off chart): measured in the browser, Plotly's share of a redraw fell from about
  125 ms to 65-75 ms (legend ~40 ms, margin passes ~20 ms).
"""
from __future__ import annotations

import html

# On a phone (the app at most 640 px wide) Plotly's toolbar lay over legends and titles: hide it there
# (zoom and reset stay on the chart: drag, double-click). appstate.run_page adds it to every page.
PHONE_CSS = ("<style>@media (max-width: 640px) { .js-plotly-plot .modebar-container { display: none !important; } }"
             "</style>")

# how a trace's marker symbol or line looks in the key
_SYMBOLS = {"circle": "●", "square": "■", "star": "★", "diamond": "◆", "diamond-open": "◇",
            "circle-open": "○", "triangle-up": "▲", "x": "✕", "cross": "✚"}


def key_outside(fig):
    """`fig` without Plotly's legend (its margins stay automatic); draw `legend_html(fig)` under it. Returns it."""
    fig.update_layout(showlegend=False)
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def fixed_frame(fig, *, left: int = 72, bottom: int = 52, top: int = 16, right: int = 10):
    """`fig` without Plotly's legend and with fixed margins (room for 4-digit tick labels and one-line axis
    titles), so a redraw skips the legend and the margin passes; pair it with `legend_html`. Returns it."""
    fig.update_layout(showlegend=False, margin=dict(l=left, r=right, t=top, b=bottom))
    fig.update_xaxes(automargin=False, title_standoff=8)
    fig.update_yaxes(automargin=False, title_standoff=8)
    return fig


def legend_items(fig) -> list[tuple[str, str, str]]:
    """(glyph, CSS colour, name) of every trace the legend would list, in drawing order."""
    out = []
    for t in fig.data:
        if t.showlegend is False or not t.name or t.type not in ("scatter", None):
            continue
        mode = t.mode or "lines"
        marker, line = t.marker, t.line
        if t.fill:                                    # a shaded band, darkened to stay visible as a glyph
            glyph, color = "▬", _at_least_alpha(t.fillcolor, 0.45)
        elif "markers" in mode and marker is not None:
            glyph = _SYMBOLS.get(marker.symbol or "circle", "●")
            color = marker.color if isinstance(marker.color, str) else None
            if color is None and glyph in "◇○":        # an open marker: its outline
                color = marker.line.color if marker.line is not None else None
            if color is None and "lines" in mode and line is not None:
                color = line.color                      # markers take their line's colour
        else:
            glyph = "┅" if line is not None and line.dash in ("dash", "dot", "dashdot") else "━"
            color = line.color if line is not None else None
        out.append((glyph, color or "#334155", t.name))
    return out


def _at_least_alpha(color: str | None, alpha: float) -> str | None:
    """An rgba() colour with its alpha raised to `alpha`; any other colour as it is."""
    if not color or not color.startswith("rgba("):
        return color
    *rgb, a = color[5:-1].split(",")
    return f"rgba({','.join(rgb)},{max(float(a), alpha)})"


def legend_html(fig) -> str:
    """The legend of `fig` as a wrapping row of coloured glyphs and names (names escaped: plain text)."""
    items = "".join(
        f'<span style="white-space:nowrap"><span style="color:{html.escape(c)};font-size:16px">{g}</span>'
        f'&nbsp;{html.escape(name)}</span>'
        for g, c, name in legend_items(fig))
    return (f'<div class="chart-key" style="display:flex;flex-wrap:wrap;gap:2px 16px;align-items:center;'
            f'font-size:13px;line-height:1.6">{items}</div>')
