"""Explore's extras: the exit histogram as a brushable Vega-Lite (altair's grammar) chart (its interval selection filters
Traces), CSV exports of the sweeps and of the Pareto frontier, and the shareable link of the view.
Torch-free, no streamlit.

Why altair for the histogram: Vega-Lite has interval selections ("brushing") built in and Streamlit
returns the brushed range from `st.altair_chart(on_select=...)`; Plotly's box select returns the
points under the box instead, and a bar chart then needs its own bookkeeping. It is also drawn as one
Vega view, which paints faster than a second Plotly figure.
"""
from __future__ import annotations

import math
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from core.engine import metrics

BRUSH = "layers"


def exit_counts(exit_layer: np.ndarray, right: np.ndarray, L: int) -> pd.DataFrame:
    """Long table: exit layer, outcome ('right' / 'wrong' at the exit), samples."""
    n_right = np.bincount(exit_layer[right], minlength=L + 1)[1:]
    n_wrong = np.bincount(exit_layer[~right], minlength=L + 1)[1:]
    layers = np.arange(1, L + 1)
    return pd.DataFrame({"exit layer": np.concatenate([layers, layers]),
                         "outcome": ["right"] * L + ["wrong"] * L,
                         "samples": np.concatenate([n_right, n_wrong]).astype(int)})


def brushable_histogram(exit_layer: np.ndarray, right: np.ndarray, L: int) -> tuple[pd.DataFrame, dict]:
    """(data, Vega-Lite spec) for `st.vega_lite_chart`: stacked bars per exit layer (right / wrong at the
    exit); drag across layers to select them. The spec is what `alt.Chart(...).mark_bar().add_params(
    alt.selection_interval(encodings=["x"]))` writes, given as a dict: building it through altair costs
    about 60 ms of schema validation on every rerun."""
    spec = {
        "mark": {"type": "bar", "size": max(8, min(48, 280 // L))},
        "params": [{"name": BRUSH, "select": {"type": "interval", "encodings": ["x"]}}],
        "encoding": {
            "x": {"field": "exit layer", "type": "quantitative", "title": "Exit layer",
                  "scale": {"domain": [0.5, L + 0.5], "nice": False},
                  "axis": {"values": list(range(1, L + 1)), "format": "d"}},
            "y": {"field": "samples", "type": "quantitative", "stack": "zero", "title": "Samples"},
            "color": {"field": "outcome", "type": "nominal", "legend": {"orient": "top", "title": None},
                      "scale": {"domain": ["right", "wrong"], "range": ["#16a34a", "#dc2626"]}},
            "tooltip": [{"field": "exit layer", "type": "quantitative"}, {"field": "outcome", "type": "nominal"},
                        {"field": "samples", "type": "quantitative"}],
        },
        "height": 260,
    }
    return exit_counts(exit_layer, right, L), spec


def brushed_layers(selection, L: int) -> tuple[int, int] | None:
    """The whole layers inside the brushed interval of `st.altair_chart`'s selection state, or None."""
    try:
        lo, hi = selection["selection"][BRUSH]["exit layer"]
    except (KeyError, TypeError, ValueError):
        return None
    first, last = max(1, math.ceil(min(lo, hi) - 0.5)), min(L, math.floor(max(lo, hi) + 0.5))
    return (first, last) if first <= last else None


def sweeps_csv(sweeps: pd.DataFrame) -> str:
    """Every swept setting of every rule (strategy, params, setting, score, speed-ups) as CSV."""
    return sweeps.to_csv(index=False)


def frontier_csv(sweeps: pd.DataFrame, x: str) -> str:
    """The Pareto frontier over all rules on axis `x` (Oracle left out) as CSV."""
    return metrics.pareto(sweeps.dropna(subset=[x]), x=x).to_csv(index=False)


def sweeps_csv_bytes(run) -> bytes:
    """`sweeps_csv` of a loaded run (rundata.RunData), made once per run. A download button gets these
    bytes, not a function that makes them: Streamlit gives a function's ("deferred") download a new id on
    every rerun and forgets the old one, so a click that races a rerun downloaded nothing; the same bytes
    keep the same address across reruns."""
    return run.memo(("sweeps-csv",), lambda: sweeps_csv(run.sweeps()).encode())


def frontier_csv_bytes(run, x: str) -> bytes:
    """`frontier_csv` of a loaded run on axis `x`, made once per run and axis (see sweeps_csv_bytes)."""
    return run.memo(("frontier-csv", x), lambda: frontier_csv(run.sweeps(), x).encode())


def share_link(page_url: str | None, params: dict[str, list[str]]) -> str:
    """`page_url` (query dropped; None: a relative link) with `params` (key -> its values) as the query."""
    base = (page_url or "").split("?", 1)[0]
    pairs = [(k, v) for k, vals in params.items() for v in vals]
    return base + ("?" + urlencode(pairs) if pairs else "")
