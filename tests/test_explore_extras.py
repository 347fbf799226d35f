"""core.app.explore_extras: the brushable histogram's data and selection, CSV exports, the share link."""
import io

import numpy as np
import pandas as pd

from core.app.explore_extras import (
    brushable_histogram,
    brushed_layers,
    exit_counts,
    frontier_csv,
    share_link,
    sweeps_csv,
)
from core.engine import metrics
from tests.conftest import synthetic_cache


def test_counts_and_brush():
    exits, right = np.array([1, 2, 2, 6, 6, 6]), np.array([True, True, False, False, True, True])
    c = exit_counts(exits, right, 6)
    assert c["samples"].sum() == 6 and c.query("`exit layer` == 6 and outcome == 'right'")["samples"].item() == 2
    data, spec = brushable_histogram(exits, right, 6)
    assert data.equals(c)
    assert spec["params"][0]["select"]["type"] == "interval"
    assert brushed_layers({"selection": {"layers": {"exit layer": [1.7, 3.2]}}}, 6) == (2, 3)
    assert brushed_layers({"selection": {"layers": {}}}, 6) is None


def test_csv_exports_hold_the_sweeps_and_their_frontier():
    cache = synthetic_cache(n=100, seed=4)
    sw = metrics.sweep_all(cache)
    back = pd.read_csv(io.StringIO(sweeps_csv(sw)))
    assert len(back) == len(sw) and set(sw["strategy"]) == set(back["strategy"])
    front = pd.read_csv(io.StringIO(frontier_csv(sw, "layer_speedup")))
    assert "oracle" not in set(front["strategy"]) and front["layer_speedup"].is_monotonic_increasing
    assert front["score"].is_monotonic_decreasing or len(front) == 1


def test_share_link_keeps_every_value():
    link = share_link("http://host:8501/explore?old=1", {"run": ["my run"], "curves": ["DGE", "Voting"]})
    assert link == "http://host:8501/explore?run=my+run&curves=DGE&curves=Voting"
