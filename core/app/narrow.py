"""Figures that stay readable on a phone (390 px wide): the legend moved from the right edge, where it
takes a third of a narrow screen, to a row under the plot; tick labels given the margin they need."""
from __future__ import annotations


def legend_below(fig, *, gap: float = -0.12):
    """`fig` with a horizontal legend under the plot area and auto-sized axis margins; returns it."""
    fig.update_layout(legend=dict(orientation="h", x=0, xanchor="left", y=gap, yanchor="top",
                                  font=dict(size=11)))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig
