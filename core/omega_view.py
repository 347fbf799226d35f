"""Ω over training steps against the data-free drift (Compare and Train pages). No streamlit, no torch.

`omega_steps_figure(records, config)`: each exit's own-CE weight in Ω at every recorded step (solid, in
the exit's colour) and where the data-free update of core.omega_drift would have put it at the same
steps (dashed). Lines that lie on their dashed twins mean Ω followed its update schedule, not the data.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from core.omega_drift import drift_for_run

_LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=60, b=10),
               font=dict(family="Inter, system-ui, sans-serif", size=13),
               legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))


def config_of(folder) -> dict:
    """A run folder's config.json, or {} when it is missing or unreadable (the figure then has no drift)."""
    from core.runs import read_config

    try:
        return read_config(folder) or {}
    except (ValueError, OSError):
        return {}


def omega_ce_history(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(steps [S], own-CE weights [S, L]) from a run's Ω records, in step order."""
    recs = sorted((r for r in records if r.get("omega") is not None), key=lambda r: int(r.get("step") or 0))
    if not recs:
        return np.zeros(0, dtype=int), np.zeros((0, 0))
    steps = np.array([int(r.get("step") or 0) for r in recs])
    return steps, np.array([np.asarray(r["omega"], dtype=float)[:, 0] for r in recs])


def omega_steps_figure(records: list[dict], config: dict, title: str = "") -> go.Figure:
    """Own-CE weight of every exit over steps, with the data-free drift dashed (when Ω was learned)."""
    from core.train_form import exit_colors

    steps, ce = omega_ce_history(records)
    fig = go.Figure()
    if not len(steps):
        fig.update_layout(**_LAYOUT, height=300, title=dict(text=f"{title}: no Ω records", x=0))
        return fig
    num_exits = ce.shape[1]
    colors = exit_colors(num_exits)
    try:
        drift = drift_for_run(config or {}, int(steps.max()), record=sorted(set(steps.tolist())),
                              num_exits=num_exits)
    except (TypeError, ValueError):  # a config without the fields a drift needs
        drift = None
    for m in range(num_exits):
        fig.add_trace(go.Scatter(x=steps, y=ce[:, m], mode="lines", name=f"exit {m + 1}",
                                 line=dict(color=colors[m], width=2), legendgroup=f"e{m}",
                                 hovertemplate=f"exit {m + 1}, step %{{x}}: %{{y:.4f}}<extra></extra>"))
        if drift is not None:
            fig.add_trace(go.Scatter(x=steps, y=[drift[int(s)][m, 0] for s in steps], mode="lines",
                                     name="data-free drift" if m == 0 else f"drift, exit {m + 1}",
                                     showlegend=m == 0, legendgroup="drift",
                                     line=dict(color=colors[m], width=1.5, dash="dash"),
                                     hovertemplate=f"data-free drift, exit {m + 1}, step %{{x}}: "
                                                   "%{y:.4f}<extra></extra>"))
    sub = ("dashed: the same Ω updates fed no data (core.omega_drift)" if drift is not None
           else "fixed weights: nothing is learned")
    fig.update_layout(**_LAYOUT, height=340, xaxis_title="training step", yaxis_title="own-CE weight in Ω",
                      title=dict(text=f"{title}<br><sup>{sub}</sup>" if title else f"<sup>{sub}</sup>", x=0,
                                 font=dict(size=14)))
    fig.update_layout(legend=dict(y=1.12))
    return fig
