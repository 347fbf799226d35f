"""The app's pages under Streamlit's AppTest: every page renders on every kind of run; controls move
the numbers; query parameters restore the view; a corrupt run folder gets a message, not a traceback.

The app reads its runs from $EEL_CHECKPOINTS, here a tmp folder of synthetic runs (tests/conftest.py)
holding a corrupt run and one still training. A last test runs every page on the real checkpoints/.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.app import figures, knob_scale, rundata
from core.engine import goal, metrics
from core.engine.metrics import OperatingPoint
from core.engine.strategies import apply
from core.runs.folders import DEFAULT_ROOT
from tests.helpers import APP, open_page

PAGES = ["pages/home.py", "pages/explore.py", "pages/traces.py", "pages/compare.py", "pages/slices.py"]
GOOD_RUNS = ["synth-joint", "synth-leebert", "synth-pair3", "synth-deep", "synth-notexts"]


@pytest.fixture
def root(run_root, monkeypatch):
    monkeypatch.setenv(rundata.ROOT_ENV, str(run_root))
    return run_root


def metric(at: AppTest, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return m.value
    raise AssertionError(f"no metric {label!r}; have {[m.label for m in at.metric]}")


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


# ---- every page renders -----------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("run", GOOD_RUNS)
def test_every_page_renders_on_every_run(root, page, run):
    at = open_page(page, run=run)
    assert not at.error, [e.value for e in at.error]
    if page == "pages/explore.py":
        assert float(at.metric[0].value) > 0
        assert metric(at, "Layer speed-up").endswith("x")
    if page == "pages/traces.py":
        assert len(at.dataframe[0].value) > 0


def test_home_lists_every_run_and_names_the_broken_one(root):
    at = open_page()
    table = at.dataframe[0].value
    assert {"synth-joint", "broken-run", "still-training"} <= set(table["run"])
    broken = table.set_index("run").loc["broken-run"]
    assert broken["state"] == "unreadable" and "cache.npz" in broken["note"]
    assert table.set_index("run").loc["still-training", "state"] == "running"
    assert any("broken-run" in w.value for w in at.warning)
    assert len(at.page_link) >= 3


@pytest.mark.parametrize("page", ["pages/explore.py", "pages/traces.py", "pages/home.py"])
def test_corrupt_run_gets_a_message_naming_it(root, page):
    at = open_page(page, run="broken-run")
    msgs = [m.value for m in [*at.error, *at.warning]]
    assert any("broken-run" in m and "cache.npz" in m for m in msgs), msgs
    assert not at.exception


def test_other_runs_still_work_after_the_corrupt_one(root):
    at = open_page("pages/explore.py", run="broken-run")
    assert at.error
    at.selectbox(key="run").set_value("synth-joint").run()
    assert not at.exception and not at.error
    assert float(metric(at, "Accuracy")) > 0


def test_compare_names_a_corrupt_run_and_shows_the_rest(root):
    at = open_page("pages/compare.py", **{"c.runs": ["synth-joint", "broken-run"]})
    assert any("broken-run" in e.value for e in at.error)
    summary = at.dataframe[0].value
    assert list(summary["run"]) == ["synth-joint"]


def test_unknown_run_in_the_link_falls_back_with_a_warning(root):
    at = open_page("pages/explore.py", run="no-such-run")
    assert any("no-such-run" in w.value for w in at.warning)
    assert float(metric(at, "Accuracy")) > 0


# ---- Explore: controls and state ---------------------------------------------------------------------
def test_moving_a_control_changes_the_score(root):
    at = open_page("pages/explore.py", run="synth-joint", strategy="Entropy")
    before = (metric(at, "Accuracy"), metric(at, "Mean exit layer"))
    run = rundata.load_run(Path(root) / "synth-joint")
    low = knob_scale.stops_for(run.cache, "entropy", "threshold", {}, 0.0, 1.0)[2]  # the knob moves by quantile stops
    at.select_slider(key="entropy.threshold").set_value(low).run()
    assert not at.exception
    after = (metric(at, "Accuracy"), metric(at, "Mean exit layer"))
    assert after != before
    ev = run.evaluate("entropy", {"threshold": low})
    assert metric(at, "Accuracy") == f"{ev['score']:.4f}"
    assert metric(at, "Layer speed-up") == f"{ev['layer_speedup']:.2f}x"
    assert metric(at, "Saved fraction") == f"{ev['saved_fraction']:.1%}"
    assert metric(at, "Wall-clock speed-up") == f"{ev['wallclock_speedup']:.2f}x"


def test_every_strategy_tab_renders_and_reports(root):
    run = rundata.load_run(Path(root) / "synth-leebert")
    assert "lte" in run.strategies  # this run has learned confidences
    for s in run.strategies:
        at = open_page("pages/explore.py", run="synth-leebert", strategy=V_tab(s))
        ev = run.evaluate(s, run.default_params(s))
        assert metric(at, "Accuracy") == f"{ev['score']:.4f}", s
        assert any(h.value == rundata.strategy_title(s) for h in at.subheader), s


def V_tab(strategy: str) -> str:
    from core.app.appstate import TAB_LABELS

    return TAB_LABELS[strategy]


def test_query_parameters_restore_the_explore_view(root):
    params = {"run": "synth-pair3", "strategy": "PCEE", "pcee.patience": "3", "pcee.threshold": "0.2",
              "pcee.signal": "maxprob", "x": "saved fraction", "target": "2.5", "curves": ["Entropy", "DGE"]}
    at = open_page("pages/explore.py", **params)
    assert at.selectbox(key="run").value == "synth-pair3"
    assert at.slider(key="pcee.patience").value == 3
    assert at.select_slider(key="pcee.threshold").value == pytest.approx(0.2)
    assert at.selectbox(key="pcee.signal").value == "maxprob"
    assert at.radio(key="x").value == "saved_fraction"
    assert at.slider(key="target").value == pytest.approx(2.5)
    assert at.multiselect(key="curves").value == ["entropy", "dge"]
    run = rundata.load_run(Path(root) / "synth-pair3")
    ev = run.evaluate("pcee", {"patience": 3, "threshold": 0.2, "signal": "maxprob", "ensemble": False})
    assert run.metric == "macro_f1"
    assert metric(at, "Macro-F1") == f"{ev['score']:.4f}"
    assert "patience=3" in captions(at)


def test_switching_to_a_shallower_run_keeps_controls_in_range(root):
    at = open_page("pages/explore.py", run="synth-deep", strategy="Budget")
    at.slider(key="budget.layer").set_value(11).run()
    assert metric(at, "Mean exit layer") == "11.00 / 12"
    at.selectbox(key="run").set_value("synth-joint").run()
    assert not at.exception
    assert at.slider(key="budget.layer").value <= 6


def test_target_picks_the_best_setting_per_strategy(root):
    at = open_page("pages/explore.py", run="synth-joint", target="3.0")
    table = at.dataframe[0].value
    best = table[table["meets"] == "yes"]
    assert len(best) > 0 and (best["layer_speedup"] >= 3.0 - 1e-9).all()
    assert table["strategy"].is_unique and len(table) == 7      # every rule listed, met or not
    missed = table[table["meets"] == "no"]
    assert (missed["layer_speedup"] < 3.0).all() and missed["why"].str.contains("at most").all()


def test_lose_at_most_goal_and_one_click_answer(root):
    """'Lose at most 1 point' lists the fastest exact setting of each rule within the budget; the button
    loads the overall answer, which equals metrics.pick."""
    at = open_page("pages/explore.py", run="synth-joint", target_kind="lose at most", max_drop="1.0")
    table = at.dataframe[0].value
    ok = table[table["meets"] == "yes"]
    assert len(ok) > 0 and (ok["delta"] >= -0.01 - 1e-12).all()
    assert ok["interval"].str.match(r"\[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]").all()
    run = rundata.load_run(Path(root) / "synth-joint")
    op = metrics.pick(run.cache, max_drop=0.01)
    at.button(key="pick").click().run()
    assert not at.exception
    from core.app.appstate import TAB_LABELS
    # the tab shows the answer's rule (the URL leaves out the default tab, entropy)
    assert at.session_state["strategy"] == TAB_LABELS[op.strategy]
    ev = run.evaluate(op.strategy, {c.name: at.session_state[c.key] for c in run.controls(op.strategy)})
    assert ev["score"] == op.score and ev["layer_speedup"] == op.layer_speedup


def test_lose_at_most_shows_both_answers_and_loads_the_guaranteed_one(root):
    """'Lose at most x' answers twice on the page, as core.engine.goal.lose_at_most does: the dev-set best
    and the guaranteed setting with the sentence on why it is slower; the button loads the guaranteed one."""
    from core.app.plain_words import plain_and_method

    at = open_page("pages/explore.py", run="synth-joint", target_kind="lose at most", max_drop="2.0")
    run = rundata.load_run(Path(root) / "synth-joint")
    answers = goal.lose_at_most(run.cache, 2.0, delta=0.1, strategies=run.strategies)
    table = next(d.value for d in at.dataframe if "answer" in d.value)
    assert list(table["answer"]) == ["dev-set best", "guaranteed"]
    assert table["layer_speedup"].tolist() == pytest.approx([answers.dev.whole["layer_speedup"],
                                                            answers.guaranteed.whole["layer_speedup"]])
    texts = [t.value for t in at.text]
    plain, method = plain_and_method(answers.guarantee)  # plain words first, the method in an expander
    assert plain in texts and any(t.startswith(answers.why) for t in texts)
    assert method and method not in plain and any(t.startswith(method + ". ") for t in texts)
    at.button(key="l.load").click().run()
    assert not at.exception
    from core.app.appstate import TAB_LABELS
    g = answers.guaranteed
    assert at.session_state["strategy"] == TAB_LABELS[g.strategy]
    ev = run.evaluate(g.strategy, {c.name: at.session_state[c.key] for c in run.controls(g.strategy)})
    assert ev["layer_speedup"] == pytest.approx(g.whole["layer_speedup"])


def test_guarantee_panel_shows_held_out_numbers(root):
    at = open_page("pages/explore.py", run="synth-joint", strategy="Entropy")
    text = " ".join(t.value for t in at.text)
    assert "new inputs" in text or "full model" in text
    table = next(d.value for d in at.dataframe if "part" in d.value)
    assert list(table["part"]) == ["calibration part", "held-out part", "whole dev set"]
    assert table["samples"].iloc[0] + table["samples"].iloc[1] == table["samples"].iloc[2]


def test_latency_budget_target(root):
    at = open_page("pages/explore.py", run="synth-joint", target_kind="latency budget", budget_ms="7.0")
    best = at.dataframe[0].value
    best = best[best["meets"] == "yes"]
    run = rundata.load_run(Path(root) / "synth-joint")
    assert len(best) and (rundata.full_latency_ms(run) / best["wallclock_speedup"] <= 7.0 + 1e-6).all()


def test_export_is_a_valid_operating_point(root):
    run = rundata.load_run(Path(root) / "synth-joint")
    ev = run.evaluate("patience", {"patience": 2})
    op = OperatingPoint.from_json(OperatingPoint.from_evaluation(run.name, run.cache, ev).to_json())
    assert op.strategy == "patience" and op.params == {"patience": 2}
    assert op.layer_speedup == pytest.approx(ev["layer_speedup"])
    at = open_page("pages/explore.py", run="synth-joint")
    assert at.get("download_button"), "no export button"
    code = json.loads(next(c.value for c in at.code if c.value.lstrip().startswith("{")))
    assert code["run_name"] == "synth-joint" and code["num_layers"] == 6 and code["format_version"] == 2
    assert code["weights"]["sha256"] is None, "synthetic runs have no weights"
    assert any(c.value.startswith("python -m core.predict --point synth-joint-") for c in at.code)


# ---- Traces ---------------------------------------------------------------------------------------------
def test_traces_filters(root):
    at = open_page("pages/traces.py", run="synth-joint", **{"t.over": "true"})
    view = at.dataframe[0].value
    assert len(view) > 0 and view["overthinking"].all()
    at = open_page("pages/traces.py", run="synth-joint", **{"t.outcome": "wrong", "t.layers": ["2", "4"]})
    view = at.dataframe[0].value
    assert (~view["right"]).all() and view["exit layer"].between(2, 4).all()
    at = open_page("pages/traces.py", run="synth-joint", **{"t.q": "triumph"})
    view = at.dataframe[0].value
    assert len(view) > 0 and view["text"].str.contains("triumph").all()


def test_traces_rule_knob_changes_exits(root):
    at = open_page("pages/traces.py", run="synth-joint", **{"t.rule": "Budget"})
    at.slider(key="t.budget.layer").set_value(2).run()
    assert (at.dataframe[0].value["exit layer"] == 2).all()


def test_traces_sample_from_the_link(root):
    at = open_page("pages/traces.py", run="synth-pair3", sample="7")
    assert any(h.value.startswith("Sample 7 ") for h in at.subheader)
    md = [m.value for m in at.markdown]
    assert any(m.startswith("> **A** ") for m in md) and any(m.startswith("> **B** ") for m in md)  # a pair


def test_run_without_latencies_names_no_wallclock_speedup(root):
    at = open_page("pages/explore.py", run="synth-notexts")
    assert metric(at, "Wall-clock speed-up") == "n/a"
    assert "wallclock_speedup" not in at.radio(key="x").options and len(at.radio(key="x").options) == 2
    assert "latency" not in at.radio(key="target_kind").options and len(at.radio(key="target_kind").options) == 2


def test_fast_evaluate_matches_the_engine(root):
    from core.engine.metrics import evaluate

    for name in ("synth-joint", "synth-pair3"):
        run = rundata.load_run(Path(root) / name)
        for s in run.strategies:
            a, b = run.evaluate(s, run.default_params(s)), evaluate(run.cache, s, **run.default_params(s))
            for k in ("score", "full_score", "delta_vs_full", "mean_exit_layer", "layer_speedup",
                      "saved_fraction", "wallclock_speedup"):
                assert a[k] == pytest.approx(b[k]), (name, s, k)
            np.testing.assert_array_equal(a["exit_layer"], b["exit_layer"])


def test_traces_without_texts_show_row_ids_and_a_note(root):
    at = open_page("pages/traces.py", run="synth-notexts")
    assert any("could not be restored" in i.value for i in at.info)
    assert at.dataframe[0].value["text"].str.startswith("row ").all()


def test_sample_markers_match_the_engine(root):
    """Where the Traces page says each rule lets a sample out is where core.engine.strategies.apply does."""
    run = rundata.load_run(Path(root) / "synth-leebert")
    settings = {s: run.default_params(s) for s in run.strategies}
    c = run.cache
    for i in (0, 17, 123):
        exits = rundata.sample_exits(run, i, settings).set_index("strategy")
        for s, params in {**settings, "oracle": {}}.items():
            el, _ = apply(s, c.probs, labels=c.labels, confidence=c.confidence, **params)
            assert exits.loc[s, "exit layer"] == el[i], (s, i)


def test_sample_signals_against_a_direct_computation(root):
    run = rundata.load_run(Path(root) / "synth-pair3")
    i = 5
    p = run.cache.probs[i].astype(float)
    sig = rundata.sample_signals(run, i)
    ent = [-(q * np.log(q)).sum() / np.log(run.cache.K) for q in p]
    np.testing.assert_allclose(sig["entropy"], ent, rtol=1e-5)
    np.testing.assert_allclose(sig["max-prob"], p.max(1), rtol=1e-6)
    preds = p.argmax(1)
    share = [max(np.bincount(preds[: m + 1]).max(), 1) / (m + 1) for m in range(len(preds))]
    np.testing.assert_allclose(sig["vote share"], share)
    kd3 = np.mean([-(p[3] * np.log(p[j])).sum() for j in range(3)])
    assert sig["divergence to earlier (mean KD)"][3] == pytest.approx(kd3, rel=1e-5)


def test_filter_traces_unit():
    import pandas as pd

    df = pd.DataFrame({"row": [10, 11, 12], "text": ["Good film", "bad", "good plot"],
                       "right": [True, False, True], "exit layer": [1, 3, 6],
                       "overthinking": [False, True, False]})
    assert list(rundata.filter_traces(df, query="GOOD")["row"]) == [10, 12]
    assert list(rundata.filter_traces(df, query="11")["row"]) == [11]
    assert list(rundata.filter_traces(df, outcome="wrong")["row"]) == [11]
    assert list(rundata.filter_traces(df, layers=(2, 6))["row"]) == [11, 12]
    assert list(rundata.filter_traces(df, overthinking=True)["row"]) == [11]


def test_controls_follow_the_engine_spec(root):
    from core.engine.registry import STRATEGIES, resolve_params

    run = rundata.load_run(Path(root) / "synth-deep")
    for s in run.strategies:
        ctrls = run.controls(s)
        assert [c.name for c in ctrls] == list(STRATEGIES[s].params)
        resolve_params(s, run.default_params(s), run.L)  # defaults are valid for the engine
        for c in ctrls:
            if c.widget == "slider":
                assert c.low < c.high and c.low <= c.default <= c.high
                resolve_params(s, {**run.default_params(s), c.name: c.high}, run.L)
    assert run.coerce_params("budget", {"layer": 99}) == {"layer": 12}
    junk = run.coerce_params("entropy", {"threshold": "junk"})
    assert junk == {"threshold": run.controls("entropy")[0].default} == run.default_params("entropy")


def test_rules_open_at_their_best_setting_for_the_start_speedup(root):
    """Knobs start where each rule saves about a third of the layers, at its best score there; a rule
    whose sweep never gets that fast keeps the engine's defaults."""
    for name in ("synth-joint", "synth-deep"):
        run = rundata.load_run(Path(root) / name)
        pts = run.sweeps()
        for s in run.strategies:
            mine = pts[(pts["strategy"] == s) & (pts["layer_speedup"] >= rundata.START_SPEEDUP - 1e-9)]
            ev = run.evaluate(s, run.default_params(s))
            if mine.empty:
                assert run.start_params(s) == {}, (name, s)
                continue
            assert ev["layer_speedup"] >= rundata.START_SPEEDUP - 1e-9, (name, s, run.default_params(s))
            assert ev["score"] == pytest.approx(mine["score"].max()), (name, s)


# ---- Compare ---------------------------------------------------------------------------------------------
def test_compare_tables_and_omega(root):
    at = open_page("pages/compare.py", **{"c.runs": ["synth-joint", "synth-leebert"], "c.strategy": "LTE"})
    summary = at.dataframe[0].value.set_index("run")
    run = rundata.load_run(Path(root) / "synth-leebert")
    assert summary.loc["synth-leebert", "S-avg"] == pytest.approx(run.per_exit.mean())
    assert summary.loc["synth-leebert", "S-best"] == pytest.approx(run.per_exit.max())
    assert any("synth-joint" in c.value and "Not available" in c.value for c in at.caption)
    omega = rundata.omega_records(run.path)
    assert omega and np.asarray(omega[-1]["omega"]).shape == (6, 6)
    assert not any("None of these runs learned" in c.value for c in at.caption)
    assert any("data-free drift" in c.value for c in at.caption)  # Ω over steps, against the drift



def test_compare_opens_on_runs_of_the_current_task(root):
    infos = [i for i in rundata.scan_runs(root) if i.has_cache]
    tasks = {i.name: (i.config or {}).get("task") for i in infos}
    picked = rundata.compare_defaults(infos, "synth-pair3", limit=3)
    assert picked[0] == "synth-pair3"
    assert all(tasks[n] == tasks["synth-pair3"] for n in picked)
    picked = rundata.compare_defaults(infos, "synth-joint")
    assert picked[0] == "synth-joint" and "synth-pair3" not in picked
    assert set(picked) == {n for n, t in tasks.items() if t == tasks["synth-joint"]}
    at = open_page("pages/compare.py", run="synth-joint")
    assert not at.exception
    assert at.multiselect(key="c.runs").value == picked

# ---- the real runs ----------------------------------------------------------------------------------------
def _real_runs():
    return [i.name for i in rundata.scan_runs(DEFAULT_ROOT) if i.has_cache]


def _representative_runs() -> list[str]:
    """One run per task of the bundled runs: the one that exercises the most of a page (a learned-exit
    head first, then LeeBERT's Ω records, then the first by name)."""
    best = {}
    for info in rundata.scan_runs(DEFAULT_ROOT):
        if not info.has_cache:
            continue
        cfg = info.config or {}
        rank = (not cfg.get("lte"), cfg.get("method") != "leebert", cfg.get("seed") or 0, info.name)
        task = cfg.get("task")
        if task not in best or rank < best[task][0]:
            best[task] = (rank, info.name)
    return [name for _, name in sorted(best.values(), key=lambda r: r[1])]


# Every page on one representative run per task; Home (cheap, and it lists every run) on every run.
# Opening every page on all ~33 runs took ~290 s, half of the suite, without finding more.
@pytest.mark.bundled
@pytest.mark.skipif(not _real_runs(), reason=f"no bundled runs with a cache.npz in {DEFAULT_ROOT} yet")
@pytest.mark.parametrize("page", PAGES)
def test_pages_on_the_bundled_runs(page, monkeypatch):
    monkeypatch.delenv(rundata.ROOT_ENV, raising=False)
    for name in _real_runs() if page == "pages/home.py" else _representative_runs():
        at = open_page(page, run=name)
        assert not at.exception, (name, [e.value for e in at.exception])
        assert not at.error, (name, [e.value for e in at.error])


def test_home_figure_shows_the_runs_starting_entropy_rule(root):
    run = rundata.load_run(Path(root) / "synth-joint")
    t = rundata.home_threshold(run)
    assert t == run.default_params("entropy")["threshold"]
    bars = figures.home_figure(run).data[0]
    exits, _ = apply("entropy", run.cache.probs, threshold=t)
    want = np.bincount(exits, minlength=run.L + 1)[1:] / run.cache.N * 100
    assert np.allclose(bars.y, want) and f"{t:.2f}" in bars.name
    assert "saving at least a third" in rundata.home_rule_text(run)


# ---- one registry entry is all a new rule needs -----------------------------------------------------
def _margin_rule(f, *, threshold: float):
    """A toy rule: exit once the top two classes are `threshold` apart."""
    top2 = np.sort(f.planes, axis=0)[-2:]                            # [2, L, N]
    return top2[1] - top2[0] >= threshold, None, None


def test_a_rule_registered_in_one_place_appears_on_explore(tmp_path, monkeypatch):
    from core.engine.registry import STRATEGIES, Param, Strategy
    from tests.conftest import write_synthetic_run

    grid = lambda f: [{"threshold": float(t)} for t in np.linspace(0, 1, 21)]  # noqa: E731
    toy = Strategy("margin", _margin_rule, {"threshold": Param(float, 0.5, 0.0, 1.0, help="top-2 gap")},
                   title="Top-2 margin", source="a test", tab="Margin", color="#0d9488",
                   explain="Toy rule: stop once the top two classes are far enough apart.",
                   labels={"threshold": "Margin threshold"}, grid=grid, settings=grid)
    monkeypatch.setitem(STRATEGIES, "margin", toy)
    write_synthetic_run(tmp_path / "toy-run", seed=5)
    monkeypatch.setenv(rundata.ROOT_ENV, str(tmp_path))

    run = rundata.load_run(tmp_path / "toy-run")
    assert "margin" in run.strategies and set(run.sweeps()["strategy"]) >= {"margin"}
    at = open_page("pages/explore.py", run="toy-run", strategy="Margin")
    assert not at.error, [e.value for e in at.error]
    assert any(h.value == "Top-2 margin" for h in at.subheader)
    assert "Toy rule: stop once" in captions(at)
    assert any(s.label == "Margin threshold" for s in at.slider)
    params = run.default_params("margin")
    assert metric(at, "Accuracy") == f"{run.evaluate('margin', params)['score']:.4f}"
    from core.app.figures import COLORS
    assert COLORS["margin"] == "#0d9488" and metrics.default_grid("margin", run.feats) == grid(run.feats)


def test_explore_opens_on_the_entropy_rule_with_a_quantile_knob(root):
    at = open_page("pages/explore.py", run="synth-joint")
    assert any(h.value == rundata.strategy_title("entropy") for h in at.subheader)
    knob = at.select_slider(key="entropy.threshold")
    run = rundata.load_run(Path(root) / "synth-joint")
    assert len(knob.options) >= 50 and knob.value == pytest.approx(run.default_params("entropy")["threshold"])


def test_compare_history_hparams_grid_and_filter(root):
    at = open_page("pages/compare.py", **{"c.runs": ["synth-joint", "synth-leebert", "synth-pair3"],
                                          "c.curve": "exit 2 loss", "c.target": "1.5"})
    summary = at.dataframe[0].value.set_index("run")
    assert "optimizer" in summary.columns and "lr" in summary.columns
    grid = next(d.value for d in at.dataframe if "full model" in d.value.columns).set_index("run")
    run = rundata.load_run(Path(root) / "synth-joint")
    best = metrics.best_at(run.sweeps(), 1.5).set_index("strategy")
    assert grid.loc["synth-joint", "Entropy"] == pytest.approx(best.loc["entropy", "score"])
    assert len(at.get("plotly_chart")) >= 4
    at.text_input(key="c.filter").set_value("badge").run()
    assert any(t.value == "1 of 3 picked runs match the filter." for t in at.text)
    assert at.dataframe[0].value["run"].tolist() == ["synth-pair3"]


def test_traces_hands_the_sample_text_to_the_playground(root):
    at = open_page("pages/traces.py", run="synth-joint", sample="4")
    assert any(t.value.startswith("Why Entropy exits at layer") for t in at.text)
    at.button(key="t.playground").click().run()
    run = rundata.load_run(Path(root) / "synth-joint")
    assert at.session_state["pg.text"] == run.raw_text(4)[0]


BUNDLED_RUN = Path(__file__).resolve().parents[1] / "checkpoints" / "rotten_tomatoes-joint" / "cache.npz"


@pytest.mark.skipif(not BUNDLED_RUN.exists(), reason=f"no bundled run at {BUNDLED_RUN.parent}")
def test_traces_names_a_sample_by_its_dev_row_everywhere():
    run = rundata.load_run(BUNDLED_RUN.parent)
    row_id, pos = run.row_ids()[4], 4
    assert row_id != pos  # the bundled dev subset skips rows: a position is not a row id
    at = AppTest.from_file(APP, default_timeout=60)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EEL_CHECKPOINTS", str(BUNDLED_RUN.parents[1]))
        at.query_params["run"] = run.name
        at.run()
        at.switch_page("pages/traces.py")
        at.query_params["run"], at.query_params["sample"] = run.name, str(row_id)
        at.run()
    assert not at.exception
    assert any(h.value == f"Sample {row_id} (dev row)" for h in at.subheader)
    assert at.number_input(key="sample").value == row_id


def test_traces_pins_a_sample_beside_the_open_one(root):
    at = open_page("pages/traces.py", run="synth-joint", sample="4")
    at.button(key="t.pin").click().run()
    at.number_input(key="sample").set_value(9).run()
    assert not at.exception
    assert any(h.value == "Sample 9 beside pinned sample 4" for h in at.subheader)
    texts = [t.value for t in at.text]
    assert any(t.startswith("Dev row 9: ") for t in texts) and any(t.startswith("Dev row 4: ") for t in texts)
    at.button(key="t.unpin").click().run()
    assert not any("beside pinned" in h.value for h in at.subheader)
