"""Explore and Compare show a run's precision caches (core.app.precision_views; issue 22): precision as a
choice and on the chart, wall clock over fp32 full at a named batch size, precisions side by side.
Synthetic runs: an int8 cache made by perturbing the fp32 probabilities, latency tables written by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.app import precision_views, rundata
from core.engine import metrics
from core.engine.cache import ExitCache
from core.engine.strategies import apply
from tests.conftest import write_synthetic_run
from tests.helpers import open_page


def _table(precision: str, L: int, scale: float) -> dict:
    def row(b, f):
        return {"rows": b, "embed_ms": 1.0 * scale * f, "layer_ms": [10.0 * scale * f] * L, "head_ms": [0.5 * scale * f] * L}
    return {"precision": precision, "machine": "m", "threads": 1, "torch": "x", "batches": {"1": row(1, 1), "32": row(32, 6)}}


def add_int8(folder) -> None:
    """Give a synthetic run an fp32 latency table and a cache-int8.npz (perturbed probabilities, 0.4x the time)."""
    base = ExitCache.load(folder)
    base.latency = _table("fp32", base.L, 1.0)
    base.save(folder)
    rng = np.random.default_rng(0)
    p = np.clip(base.probs + rng.normal(0, 0.03, base.probs.shape), 1e-3, None)
    p = p / p.sum(-1, keepdims=True)
    ExitCache(probs=p, labels=base.labels, label_names=base.label_names, texts=base.texts, source=base.source,
              confidence=base.confidence, meta={**base.meta, "precision": "int8"},
              latency=_table("int8", base.L, 0.4)).save(folder / "cache-int8.npz")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    write_synthetic_run(root / "synth-joint", n=200, num_layers=6, k=2, seed=1, method="joint")
    write_synthetic_run(root / "synth-second", n=200, num_layers=6, k=2, seed=2, method="joint")
    write_synthetic_run(root / "synth-plain", n=200, num_layers=6, k=2, seed=3, method="joint")
    add_int8(root / "synth-joint")
    add_int8(root / "synth-second")
    return root


@pytest.fixture
def env(root, monkeypatch):
    monkeypatch.setenv(rundata.ROOT_ENV, str(root))
    return root


def test_setting_table_is_each_precisions_own_cache(root):
    run = rundata.load_run(root / "synth-joint")
    assert precision_views.available(run) == ["fp32", "int8"] and precision_views.batch_sizes(run) == [1, 32]
    table = precision_views.setting_table(run, "entropy", {"threshold": 0.4}, ["int8"], 32)
    int8 = ExitCache.load(root / "synth-joint" / "cache-int8.npz")
    for p, c in (("fp32", run.cache), ("int8", int8)):
        row = table[table["precision"] == p].iloc[0]
        layers, pred = apply("entropy", c.probs, threshold=0.4)
        assert row["score"] == pytest.approx(float((pred == c.labels).mean()))
        assert row["wall-clock speed-up"] == pytest.approx(
            metrics.batch_wallclock_speedup(layers, c, 32, reference=run.cache))
        assert row["layer speed-up"] == pytest.approx(c.L / layers.mean())
    goal = precision_views.goal_table(run, 1.0, ["int8"], 32)
    assert goal["meets"].iloc[0] and goal["precision"].iloc[0] == "int8"   # 0.4x the time: int8 wins here
    fig = precision_views.frontier_figure(run, ["int8"], batch_size=32, axis="wallclock",
                                          current=precision_views.current_points(table, "wallclock"), focus="entropy")
    names = [t.name for t in fig.data]
    assert {"fp32 frontier", "int8 frontier", "fp32: current knobs", "int8: current knobs", "fp32 full model"} <= set(names)
    assert "batch size 32" in fig.layout.xaxis.title.text
    with pytest.raises(ValueError, match="needs a batch size"):
        precision_views.frontier_figure(run, ["int8"], batch_size=None, axis="wallclock")
    plain = rundata.load_run(root / "synth-plain")
    assert precision_views.available(plain) == ["fp32"]


def test_explore_shows_precision_as_a_choice_and_on_the_chart(env):
    at = open_page("pages/explore.py", run="synth-joint")
    at.radio(key="target_kind").set_value("loss").run()
    assert any(s.value == "Precision and wall clock" for s in at.subheader)
    assert at.multiselect(key="p.prec").value == ["fp32", "int8"]
    table = next(d.value for d in at.dataframe if "precision" in d.value and "vs fp32 full" in d.value)
    assert list(table["precision"]) == ["fp32", "int8"] and table["wall-clock speed-up"].notna().all()
    goal = next(d.value for d in at.dataframe if "wallclock_speedup" in d.value and "precision" in d.value)
    assert set(goal["precision"]) == {"fp32", "int8"}
    # batch size 1 and the layer axis are choices too; int8 alone is offered as a download
    at.radio(key="p.batch").set_value("1").run()
    at.radio(key="p.axis").set_value("layer").run()
    assert not at.exception
    at.selectbox(key="p.export_at").set_value("int8").run()
    code = next(c.value for c in at.code if "--point" in c.value and "int8" in c.value)
    assert code.startswith("python -m core.predict --point synth-joint-")
    plain = open_page("pages/explore.py", run="synth-plain")
    assert any("python -m core.cache_variant --run" in c.value for c in plain.code)


def test_compare_sets_precisions_side_by_side(env):
    at = open_page("pages/compare.py", run="synth-joint")
    at.multiselect(key="c.runs").set_value(["synth-joint", "synth-second", "synth-plain"]).run()
    assert not at.exception, [e.value for e in at.exception]
    side = next(d.value for d in at.dataframe if "precision" in d.value and "S-avg" in d.value)
    assert [(r, p) for r, p in zip(side["run"], side["precision"])] == [
        ("synth-joint", "fp32"), ("synth-joint", "int8"), ("synth-second", "fp32"), ("synth-second", "int8"),
        ("synth-plain", "fp32")]
    # the int8 full model runs at 0.4x the time of fp32 full on both tables
    assert side[side["precision"] == "int8"]["full model wall-clock"].to_numpy() == pytest.approx([2.5, 2.5])
    at.multiselect(key="c.prec").set_value(["int8"]).run()
    side = next(d.value for d in at.dataframe if "precision" in d.value and "S-avg" in d.value)
    assert set(side["precision"]) == {"int8"} and json.dumps(list(side["run"])) == '["synth-joint", "synth-second"]'
