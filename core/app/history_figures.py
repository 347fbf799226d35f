"""Figures of training history across runs (Compare): a loss or a dev score over training steps, one
line per run (smoothed, the raw values faint), in colours that stay apart for many runs."""
from __future__ import annotations

import plotly.graph_objects as go

from core.app.figures import layout
from core.app.history import distinct_colors, smooth
from core.app.plain import plot_text

LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0)


def history_figure(frames: dict, column: str, *, smoothing: float = 0.6, y_title: str = "",
                   markers: bool = False) -> go.Figure:
    """`frames`: run name -> DataFrame with `step` and `column` (train_history / dev_history)."""
    fig = go.Figure()
    colors = distinct_colors(len(frames))
    for (name, df), color in zip(frames.items(), colors):
        if df.empty or column not in df:
            continue
        d = df.dropna(subset=[column])
        label = plot_text(name)
        if smoothing > 0 and not markers:
            fig.add_trace(go.Scattergl(x=d["step"], y=d[column], mode="lines", line=dict(color=color, width=1),
                                       opacity=0.25, legendgroup=name, showlegend=False, hoverinfo="skip"))
        y = d[column] if markers else smooth(d[column], smoothing)
        fig.add_trace(go.Scattergl(x=d["step"], y=y, mode="lines+markers" if markers else "lines", name=label,
                                   legendgroup=name, line=dict(color=color, width=2),
                                   hovertemplate=f"{label}<br>step %{{x}}: %{{y:.4f}}<extra></extra>"))
    fig.update_layout(**layout(white=True, legend=False), legend=LEGEND_BELOW, height=360 + 18 * ((len(frames) + 2) // 3), xaxis_title="training step",
                      yaxis_title=y_title)
    return fig
