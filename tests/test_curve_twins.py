"""Explore's chart when two rules give the same curve (issue 23 item 4): the key names the pair and the
later curve is drawn dashed with open markers; rules whose best setting lands on one point share one
diamond; current markers on one spot become rings around each other."""
from __future__ import annotations

import pandas as pd
import pytest

from core.app import figures, rundata, trust_views
from tests.conftest import write_synthetic_run


@pytest.fixture(scope="module")
def two_class_run(tmp_path_factory):
    folder = write_synthetic_run(tmp_path_factory.mktemp("twins") / "run", n=200, num_layers=5, k=2, seed=7)
    return rundata.load_run(folder)


def test_on_two_classes_max_prob_repeats_entropy(two_class_run):
    """With two classes the max-prob is a monotone function of the entropy, so their envelopes are the
    same set of points (checked here from the sweeps themselves) and twin_curves pairs them."""
    run = two_class_run
    pts = run.sweeps()
    envs = {s: figures._own_front(pts[pts["strategy"] == s], "layer_speedup") for s in ("entropy", "maxprob")}
    as_set = {s: set(zip(e["layer_speedup"].round(9), e["score"].round(9))) for s, e in envs.items()}
    assert as_set["entropy"] == as_set["maxprob"]
    assert figures.twin_curves(envs, "layer_speedup") == {"maxprob": "entropy"}
    assert figures.twin_curves({"entropy": envs["entropy"]}, "layer_speedup") == {}


def test_the_key_names_the_pair_and_both_stay_visible(two_class_run):
    run = two_class_run
    drawn = ["entropy", "maxprob", "patience"]
    current = {s: run.evaluate(s, run.default_params(s)) for s in drawn}
    fig = figures.tradeoff_figure(run, drawn, current, focus="patience")
    by_name = {t.name: t for t in fig.data if t.name}
    twin = by_name["Max-prob = Entropy"]
    assert twin.line.dash == "dash" and twin.marker.symbol == "circle-open"
    assert by_name["Entropy"].line.dash is None  # the first one stays solid under it


def test_one_diamond_per_point_named_by_every_rule_there():
    best = pd.DataFrame({"strategy": ["entropy", "maxprob", "voting"], "layer_speedup": [2.0, 2.0, 2.5],
                         "score": [0.8, 0.8, 0.7], "params": ["{}", "{}", "{}"], "setting": ["a", "b", "c"]})
    one = figures._one_per_point(best, "layer_speedup")
    assert list(one["strategy"]) == ["entropy", "voting"]
    assert list(one["titles"]) == ["Entropy = Max-prob", "Ensemble voting"]


def test_current_markers_on_one_spot_become_rings(two_class_run):
    run = two_class_run
    ev = run.evaluate("entropy", run.default_params("entropy"))
    goal = trust_views.goal_rows(run, "speed-up", 1.5)
    fig = figures.tradeoff_figure(run, ["entropy", "maxprob"], {"entropy": ev, "maxprob": dict(ev)},
                                  best=goal[goal["meets"]], focus="entropy")
    marks = {t.name: t.marker for t in fig.data if t.name and t.name.endswith(": current")}
    assert marks["Entropy: current"].symbol == "circle"
    assert marks["Max-prob: current"].symbol == "circle-open"
    assert marks["Max-prob: current"].size > marks["Entropy: current"].size
