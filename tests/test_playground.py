"""The Playground and core.serving.playground: the predictor's exit layer and prediction for a typed text equal
`core.engine.strategies.apply` on the model's own forward pass (every exit's probabilities, computed here);
the page shows them, for single sentences and for pairs; the all-layers timing runs every layer; a run
without weights says which command makes them.

Runs are trained in-process on a tiny random BERT (hidden 32, 2 layers, vocab 99) and 16 rows, so the
module's set-up takes a few seconds.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.app import figures, knob_scale, rundata
from core.engine.strategies import apply
from core.models.multi_exit import MultiExitModel
from core.runs.folders import WEIGHTS_FILE
from core.serving import playground
from tests.helpers import tiny_csv, write_page_backbone

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TEXTS = ["the film was good and great", "a dull , boring mess", "not very funny but the best", "flat"]
SETTINGS = [("entropy", {"threshold": 0.3}), ("entropy", {"threshold": 0.999}), ("maxprob", {"threshold": 0.5}),
            ("maxprob", {"threshold": 0.9}), ("patience", {"patience": 1}), ("budget", {"layer": 1}),
            ("budget", {"layer": 2}), ("pcee", {"patience": 1, "threshold": 0.999, "signal": "entropy",
                                                 "ensemble": False}),
            ("dge", {"patience": 1, "threshold": 0.5, "measure": "kd"}), ("voting", {"k": 0.5, "delta": 1.0}),
            ("lte", {"threshold": 0.5}), ("lte", {"threshold": 0.0})]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A checkpoint root with a single-sentence run (LTE heads on), a pair run, and a copy of the first
    without weights."""
    from core.training.run import train

    tmp = tmp_path_factory.mktemp("pg")
    backbone = write_page_backbone(tmp / "bert")
    root = tmp / "checkpoints"
    common = dict(backbone=backbone, epochs=1, batch_size=8, latency_samples=2, max_train=16, max_dev=16)
    cfg = dict(common, task="rotten_tomatoes", method="joint", lte=True, out=str(root / "single"),
               command=f"python -m core.train --task rotten_tomatoes --backbone {backbone} --lte --out x")
    train(cfg)
    (tmp / "pairs.csv").write_text(tiny_csv(40, pairs=True))
    train(dict(common, task="pairs", train_file=str(tmp / "pairs.csv"), text_column="premise",
               text_pair_column="hypothesis", label_column="gold", method="leebert", out=str(root / "pair")))
    shutil.copytree(root / "single", root / "noweights")
    (root / "noweights" / WEIGHTS_FILE).unlink()
    return root


def forward_probs(folder: Path, text: str, pair: str | None = None) -> np.ndarray:
    """Every exit's probabilities for one input, from the model's plain forward pass: [1, L, K]."""
    model = MultiExitModel.from_run(folder)
    enc = model.tokenize(text, pair, return_tensors="pt")
    with torch.no_grad():
        out = model(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    conf = None if out.confidence is None else out.confidence.numpy()
    return torch.softmax(out.logits, -1).numpy(), conf


# ---- core.serving.playground ------------------------------------------------------------------------------
def test_result_matches_the_strategy_engine_on_the_forward_pass(runs):
    pm = playground.load(runs / "single")
    assert (pm.L, pm.K, pm.label_names, pm.is_pair) == (2, 2, ["negative", "positive"], False)
    seen = set()
    for text in TEXTS:
        probs, conf = forward_probs(runs / "single", text)
        for strategy, params in SETTINGS:
            res = playground.run_text(pm, text, strategy=strategy, repeats=1, **params)
            el, pred = apply(strategy, probs, confidence=conf, **params)
            assert (res.exit_layer, res.pred) == (int(el[0]), int(pred[0])), (text, strategy, params)
            assert res.label == pm.label_names[res.pred]
            np.testing.assert_allclose(res.probs, probs[0, :res.exit_layer], atol=1e-5)
            np.testing.assert_allclose(res.full_probs, probs[0], atol=1e-5)   # the all-layers run
            assert res.full_pred == int(probs[0, -1].argmax())
            assert len(res.layer_ms) == res.exit_layer and res.latency_ms > 0 and res.full_ms > 0
            seen.add(res.exit_layer)
    assert seen == {1, 2}, "the settings must reach both an early and a late exit"


def test_pairs_and_bad_input(runs):
    pm = playground.load(runs / "pair")
    assert pm.is_pair and not pm.has_confidence
    probs, _ = forward_probs(runs / "pair", "the film was good", "it was great")
    res = playground.run_text(pm, "the film was good", "it was great", strategy="entropy", repeats=1, threshold=0.9)
    el, pred = apply("entropy", probs, threshold=0.9)
    assert (res.exit_layer, res.pred) == (int(el[0]), int(pred[0]))
    assert pm.label_names == ["diff", "same"]
    with pytest.raises(ValueError, match="second sentence"):
        playground.run_text(pm, "only one", strategy="entropy", threshold=0.5)
    with pytest.raises(ValueError, match="type a sentence"):
        playground.run_text(pm, "   ", "x", strategy="entropy", threshold=0.5)
    with pytest.raises(ValueError, match="learned exit heads"):
        playground.run_text(pm, "a", "b", strategy="lte", threshold=0.5)
    with pytest.raises(ValueError, match="out of range"):
        playground.run_text(pm, "a", "b", strategy="budget", layer=3)


def test_missing_weights_give_the_command(runs):
    msg = playground.missing_weights_message(runs / "noweights")
    assert "python -m core.train --task rotten_tomatoes" in msg and "--lte" in msg
    with pytest.raises(ValueError, match="no model.safetensors"):
        playground.load(runs / "noweights")
    assert playground.missing_weights_message(runs / "single") is None


def test_figures(runs):
    pm = playground.load(runs / "single")
    res = playground.run_text(pm, TEXTS[0], strategy="budget", repeats=1, layer=1)
    fig = figures.probs_figure(res)
    assert np.asarray(fig.data[0].z).shape == (1, 2) and "layer 2 skipped" in fig.layout.title.text
    assert np.asarray(figures.full_figure(res).data[0].z).shape == (2, 2)
    table = playground.layers_table(res)
    assert list(table["layer"]) == [1] and {"negative", "positive", "learned confidence"} <= set(table.columns)
    assert len(figures.timing_figure(res).data[0].x) == 2


# ---- the page (AppTest) --------------------------------------------------------------------------------
def open_playground(root: Path, run: str, monkeypatch) -> AppTest:
    monkeypatch.setenv("EEL_CHECKPOINTS", str(root))
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["run"] = run
    at.run()
    at.switch_page("pages/playground.py")
    at.query_params["run"] = run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_page_prediction_and_exit_equal_the_engine(runs, monkeypatch):
    at = open_playground(runs, "single", monkeypatch)
    assert any("Type a sentence" in i.value for i in at.info)
    text = TEXTS[1]
    probs, conf = forward_probs(runs / "single", text)
    at.text_area(key="pg.text").input(text).run()
    assert not at.exception, [e.value for e in at.exception]
    params = at.session_state["pg.result"]["params"]          # the page's default rule and knob:
    assert params == rundata.load_run(runs / "single").default_params("entropy")  # the run's starting knob
    el, pred = apply("entropy", probs, **params)
    assert metric(at, "Exit layer") == f"{int(el[0])} / 2"
    assert metric(at, "Prediction") == ["negative", "positive"][int(pred[0])]
    assert at.session_state["pg.result"]["exit_layer"] == int(el[0])
    for strategy, key, value in [("budget", "pg.budget.layer", 1), ("maxprob", "pg.maxprob.threshold", 0.51),
                                 ("lte", "pg.lte.threshold", 0.4)]:
        at.selectbox(key="pg.strategy").select(strategy).run()
        if strategy != "budget":  # thresholds are quantile-stop sliders: take the stop nearest `value`
            run = rundata.load_run(runs / "single")
            control = next(c for c in run.controls(strategy) if c.name == "threshold")
            value = min(knob_scale.run_stops(run, control, at.session_state, "pg."), key=lambda o: abs(o - value))
            at.select_slider(key=key).set_value(value).run()
        else:
            at.slider(key=key).set_value(value).run()
        assert not at.exception, [e.value for e in at.exception]
        params = at.session_state["pg.result"]["params"]
        el, pred = apply(strategy, probs, confidence=conf, **params)
        assert params[key.split(".")[-1]] == value
        assert metric(at, "Exit layer") == f"{int(el[0])} / 2", strategy
        assert metric(at, "Prediction") == ["negative", "positive"][int(pred[0])]
    charts = at.get("plotly_chart")
    heat = json.loads(charts[0].proto.spec)["data"][0]
    assert heat["type"] == "heatmap" and len(heat["y"]) == int(el[0])   # rows only up to the exit
    assert metric(at, "All 2 layers").endswith(" ms") and metric(at, "Measured speed-up").endswith("x")


def test_page_with_a_pair_run(runs, monkeypatch):
    at = open_playground(runs, "pair", monkeypatch)
    at.text_area(key="pg.text").input("the film was good")
    at.run()
    assert any("second sentence" in w.value for w in at.warning)
    at.text_area(key="pg.text_pair").input("it was great").run()
    probs, _ = forward_probs(runs / "pair", "the film was good", "it was great")
    params = at.session_state["pg.result"]["params"]
    assert params == rundata.load_run(runs / "pair").default_params("entropy")
    el, pred = apply("entropy", probs, **params)
    assert metric(at, "Exit layer") == f"{int(el[0])} / 2"
    assert metric(at, "Prediction") == ["diff", "same"][int(pred[0])]


def test_page_without_weights_shows_the_command(runs, monkeypatch):
    at = open_playground(runs, "noweights", monkeypatch)
    assert any("no weights" in w.value for w in at.warning)
    assert at.code and at.code[0].value.startswith("python -m core.train --task rotten_tomatoes")
    assert not at.text_area, "no text box for a model that cannot run"


def test_dev_set_example_fills_the_box(runs, monkeypatch):
    at = open_playground(runs, "single", monkeypatch)
    at.button(key="pg.example").click().run()
    assert at.text_area(key="pg.text").value.strip()
    assert metric(at, "Exit layer").endswith("/ 2")


# ---- hand-over from Explore, operating-point files, timing spread (issue 10) ----------------------------
def test_page_opens_at_the_knobs_explore_had(runs, monkeypatch):
    from core.app import playground_io

    monkeypatch.setenv("EEL_CHECKPOINTS", str(runs))
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["run"] = "single"
    at.run()
    at.switch_page("pages/explore.py")
    at.query_params["run"] = "single"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    last = at.session_state[playground_io.EXPLORE_LAST]
    assert last["run"] == "single"
    at.select_slider(key=f"{last['strategy']}.{next(iter(last['params']))}").set_value(  # a quantile-stop knob
        rundata.load_run(runs / "single").controls(last["strategy"])[0].high).run()   # move Explore's knob
    last = at.session_state[playground_io.EXPLORE_LAST]
    at.switch_page("pages/playground.py")
    at.run()
    at.text_area(key="pg.text").input(TEXTS[0]).run()
    assert not at.exception, [e.value for e in at.exception]
    res = at.session_state["pg.result"]
    assert (res["strategy"], res["params"]) == (last["strategy"], last["params"])
    assert any("Opened at the knobs Explore showed last" in c.value for c in at.caption)
    # a knob changed in the Playground stays changed on the next rerun (Explore's setting is taken once)
    at.selectbox(key="pg.strategy").select("budget").run()
    at.slider(key="pg.budget.layer").set_value(1).run()
    assert at.session_state["pg.result"]["strategy"] == "budget"
    assert any(c.value.startswith("Medians over 10 repeats, with the spread") for c in at.caption)


def test_uploaded_point_is_checked_against_the_run(runs, tmp_path):
    from core.app import playground_io
    from core.serving.export import point_json, write_point

    data = write_point(runs / "single", "maxprob", {"threshold": 0.8}, tmp_path / "p.json")
    raw = point_json(data).encode()
    names = rundata.load_run(runs / "single").strategies
    assert playground_io.parse_point(raw, "p.json", run_dir=runs / "single", strategies=names)["params"] == {"threshold": 0.8}
    with pytest.raises(ValueError, match="p.json: made for other weights"):
        playground_io.parse_point(raw, "p.json", run_dir=runs / "pair", strategies=names)
    with pytest.raises(ValueError, match="p.json: not a JSON operating-point file"):
        playground_io.parse_point(b"\xff\xfe", "p.json", run_dir=runs / "single", strategies=names)
    with pytest.raises(ValueError, match="x.json: missing field 'promise'"):
        playground_io.parse_point(json.dumps({k: v for k, v in data.items() if k != "promise"}).encode(), "x.json",
                       run_dir=runs / "single", strategies=names)


def test_timing_summary_flags_a_speedup_above_l_over_m():
    from core.app import playground_io

    t = playground_io.timing_summary([1.0, 1.1, 0.9, 1.0], [3.0, 3.2, 2.8, 3.1], L=2, exit_layer=1)
    assert t["speedup_median"] == pytest.approx(3.05) and t["ideal"] == 2.0
    assert "above L/m = 2/1 = 2.00x" in t["noise_note"] and "noise" in t["noise_note"]
    t = playground_io.timing_summary([2.0, 2.2, 1.8], [3.0, 3.2, 3.1], L=4, exit_layer=2)
    assert t["noise_note"] is None and t["early_iqr"][0] <= t["early_median"] <= t["early_iqr"][1]
    assert "spread (25th-75th percentile)" in playground_io.timing_caption(t)
