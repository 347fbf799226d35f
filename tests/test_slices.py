"""Slices (issue 23 items 11 and 12): per-slice metrics against a direct computation on a hand-built cache,
the ranking of the samples where two rules differ, the slice finder on a constructed case, the hand-off of
the second rule to Traces, and the page under AppTest on the synthetic runs and the bundled default run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.app import rundata, slice_views
from core.engine import metrics, slices
from core.engine.cache import ExitCache
from core.engine.strategies import apply
from tests.helpers import APP

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "rotten_tomatoes-joint"


# ---- a small hand-built cache ------------------------------------------------------------------------
def hand_cache(n: int = 90, L: int = 4, K: int = 2, seed: int = 0) -> ExitCache:
    """Exits that grow surer layer by layer, some of them wrong; class 1 samples are harder (later exits)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    logits = rng.normal(0, 1, (n, L, K))
    growth = np.linspace(0.2, 2.5, L)[None, :] * np.where(labels == 1, 0.6, 1.0)[:, None]
    logits[np.arange(n), :, labels] += growth + rng.normal(0, 0.8, (n, L))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    texts = [" ".join(["word"] * int(w)) for w in rng.integers(1, 30, n)]
    return ExitCache(probs=probs.astype(np.float32), labels=labels.astype(np.int64),
                     label_names=["neg", "pos"][:K], texts=texts, meta={"metric": "accuracy"})


@pytest.fixture(scope="module")
def cache():
    return hand_cache()


def direct_slice(metric, y, pred, full, exit_layer, L, members):
    """The numbers of one slice computed plainly, one slice at a time."""
    m = np.asarray(members)
    el = exit_layer[m].astype(float)
    mean = el.mean()
    half = 1.959963984540054 * el.std(ddof=1) / np.sqrt(m.sum())
    return {"n": int(m.sum()), "score": metrics.score(metric, y[m], pred[m]), "full_score": metrics.score(metric, y[m], full[m]),
            "mean_exit_layer": mean, "exit_low": mean - half, "exit_high": mean + half, "layer_speedup": L / mean,
            "lost": int(((pred[m] != y[m]) & (full[m] == y[m])).sum()),
            "gained": int(((pred[m] == y[m]) & (full[m] != y[m])).sum())}


@pytest.mark.parametrize("metric", ["accuracy", "f1", "macro_f1", "mcc"])
def test_per_slice_metrics_equal_a_direct_computation(cache, metric):
    y, L = cache.labels, cache.L
    exit_layer, pred = apply("entropy", cache.probs, threshold=0.45)
    full = cache.probs[:, -1].argmax(-1)
    assert len(set(exit_layer)) > 1 and (pred != full).any()      # a case where the numbers can be wrong
    codes = np.where(y == 1, 1, 0)
    codes[:5] = -1                                                  # left out of every group
    t = slices.slice_metrics(metric, y, pred, full, exit_layer, L, 2, codes, ["neg", "pos"]).set_index("slice")
    for g, name in enumerate(["neg", "pos"]):
        want = direct_slice(metric, y, pred, full, exit_layer, L, codes == g)
        got = t.loc[name]
        for k, v in want.items():
            assert got[k] == pytest.approx(v, abs=1e-12), (name, k)
        assert got["delta"] == pytest.approx(want["score"] - want["full_score"])
        # the score's interval is the paired bootstrap of core.engine.metrics on the same samples
        m = codes == g
        b = metrics.bootstrap_scores(metric, y[m], pred[m], full[m])
        lo, hi = np.quantile(b[:, 0], [0.025, 0.975])
        dlo, dhi = np.quantile(b[:, 0] - b[:, 1], [0.025, 0.975])
        assert (got["score_low"], got["score_high"]) == pytest.approx((lo, hi))
        assert (got["delta_low"], got["delta_high"]) == pytest.approx((dlo, dhi))
        assert got["speedup_low"] == pytest.approx(L / want["exit_high"])


def test_a_slice_of_one_class_is_scored_and_a_small_one_gets_no_interval():
    y = np.array([1] * 25 + [0] * 3)
    pred = np.array([1] * 20 + [0] * 5 + [0] * 3)
    full = y.copy()
    el = np.array([2] * 28)
    codes = np.array([0] * 25 + [1] * 3)
    t = slices.slice_metrics("f1", y, pred, full, el, 4, 2, codes, ["ones", "zeros"]).set_index("slice")
    assert t.loc["ones", "score"] == pytest.approx(metrics.score("f1", y[:25], pred[:25]))
    assert t.loc["zeros", "score"] == 0.0 and np.isnan(t.loc["zeros", "score_low"])    # 3 < MIN_INTERVAL_N
    assert t.loc["ones", "exit_low"] == t.loc["ones", "exit_high"] == 2.0                 # no spread, exact
    assert t.loc["ones", "lost"] == 5


def test_length_bins_follow_the_word_counts():
    w = np.array([1, 2, 2, 3, 5, 8, 8, 8, 13, 40])
    codes, names = slices.length_bins(w, 4)
    assert len(names) == codes.max() + 1 and np.all(np.diff(codes[np.argsort(w, kind="stable")]) >= 0)
    for g, name in enumerate(names):
        lo, hi = (int(x) for x in name.split()[0].split("-")) if "-" in name else (int(name.split()[0]),) * 2
        assert w[codes == g].min() == lo and w[codes == g].max() == hi
    assert slices.word_counts(["a  b\tc", ["one two", "three"], ""]).tolist() == [3, 3, 0]


# ---- two decisions --------------------------------------------------------------------------------
def test_differences_rank_flips_first_then_the_larger_exit_gap():
    labels = np.array([0, 1, 0, 1, 0, 1, 0])
    exit_a = np.array([2, 2, 3, 1, 4, 2, 5])
    exit_b = np.array([2, 5, 3, 2, 1, 2, 5])
    pred_a = np.array([0, 1, 0, 1, 0, 1, 0])
    pred_b = np.array([0, 1, 1, 1, 1, 0, 0])
    d = slices.differences(labels, exit_a, pred_a, exit_b, pred_b)
    # flips: 4 (gap -3), 2 (gap 0), 5 (gap 0); then exit moves: 1 (gap 3), 3 (gap 1); 0 and 6 agree
    assert d["pos"].tolist() == [4, 2, 5, 1, 3]
    assert d["gap"].tolist() == [-3, 0, 0, 3, 1]
    assert d["flip"].tolist() == [True, True, True, False, False]
    assert d["right_b"].tolist() == [False, False, False, True, True]


def test_wilson_interval_matches_its_textbook_values():
    lo, hi = slices.wilson(np.array([0, 5, 20]), np.array([10, 10, 20]))
    # Wilson 95% intervals (z = 1.96): 0/10 -> [0, 0.2775], 5/10 -> [0.2366, 0.7634], 20/20 -> [0.8389, 1]
    assert lo == pytest.approx([0.0, 0.2366, 0.8389], abs=1e-4)
    assert hi == pytest.approx([0.2775, 0.7634, 1.0], abs=1e-4)


def test_the_slice_finder_names_the_slice_that_differs_most():
    n = 200
    rng = np.random.default_rng(3)
    color = np.arange(n) % 2                  # 0 red, 1 blue
    size = (np.arange(n) // 2) % 4            # 0..3
    differ = rng.random(n) < 0.1
    differ[(color == 1) & (size == 2)] = rng.random(((color == 1) & (size == 2)).sum()) < 0.9   # 50 samples, ~90%
    tiny = np.flatnonzero((color == 0) & (size == 0))[:5]
    differ[tiny] = True                       # 5 samples, 100%: below the minimum size
    feats = {"color": (color, ["red", "blue"]), "size": (size, ["s0", "s1", "s2", "s3"]),
             "shape": (np.zeros(n, dtype=np.int64), ["round"])}
    top = slices.find_slices(feats, differ, min_size=20, top=50)
    assert not top["slice"].str.contains("shape = round &|& shape = round").any()   # says nothing its part does not
    best = top.iloc[0]
    members = (color == 1) & (size == 2)
    assert best["slice"] == "color = blue & size = s2" and best["n"] == members.sum()
    assert best["differ"] == differ[members].sum() and best["rate"] == pytest.approx(differ[members].mean())
    assert best["lift"] == pytest.approx(differ[members].mean() / differ.mean())
    assert (top["n"] >= 20).all() and top["rate"].is_monotonic_decreasing
    # every listed slice's counts are what its members give
    for _, r in top.iterrows():
        m = np.ones(n, dtype=bool)
        for part in r["slice"].split(" & "):
            name, value = part.split(" = ")
            codes, names = feats[name]
            m &= codes == names.index(value)
        assert (r["n"], r["differ"]) == (m.sum(), differ[m].sum())
    assert slices.find_slices(feats, differ, min_size=10_000).empty


# ---- the app's side -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(run_root):
    return rundata.load_run(Path(run_root) / "synth-joint")


def test_select_filters_by_plain_text_and_ranges(synth):
    a = slice_views.arm(synth, "entropy", synth.default_params("entropy"))
    s = slice_views.slicer(synth, a.exit_layer, a.pred)
    f = s.frame
    word = f["text"].iloc[0].split()[0]
    keep = slice_views.select(s, query=word.upper())
    assert keep.sum() == f["text"].str.lower().str.contains(word.lower(), regex=False).sum() > 0
    assert not slice_views.select(s, query="[(*").any()           # a pattern's characters are just characters
    keep = slice_views.select(s, gold=[synth.cache.label_names[1]], layers=(2, 4), words_range=(3, 12))
    want = (synth.cache.labels == 1) & (a.exit_layer >= 2) & (a.exit_layer <= 4) & f["words"].between(3, 12).to_numpy()
    assert np.array_equal(keep, want)
    t = slice_views.slice_table(synth, s, a.pred, keep, slice_views.EXIT).set_index("slice")
    assert t.loc[slice_views.SELECTED, "n"] == want.sum()
    assert t.filter(like="exit layer =", axis=0)["n"].sum() == want.sum()


def test_who_pays_names_the_group_that_loses_most_and_the_fastest(synth):
    a = slice_views.arm(synth, "entropy", synth.default_params("entropy"))
    s = slice_views.slicer(synth, a.exit_layer, a.pred)
    t = slice_views.slice_table(synth, s, a.pred, np.ones(synth.cache.N, dtype=bool), slice_views.GOLD)
    groups = t.iloc[1:]
    said = slice_views.who_pays(t, "Accuracy")
    fast = groups.loc[groups["mean_exit_layer"].idxmin(), "slice"]
    assert f"Exits earliest: {fast}, mean exit layer" in said
    worst = groups.loc[groups["delta"].idxmin()]
    assert (f"Gives up the most: {worst['slice']}, {worst['delta']:+.3f}" in said) == (worst["delta"] < 0)
    assert slice_views.who_pays(t.iloc[:2], "Accuracy") is None


def test_the_second_rule_travels_to_traces_exactly(synth):
    b = slice_views.arm(synth, "pcee", {**synth.default_params("pcee"), "threshold": 0.123456789123})
    q = slice_views.second_rule_params("other-run", b)
    assert q["t.vs.run"] == synth.name
    back = slice_views.second_arm(q, synth, load=lambda name: "not needed")
    assert back.rule == "pcee" and back.params == b.params
    assert np.array_equal(back.exit_layer, b.exit_layer)
    assert slice_views.read_second_rule({"t.vs.rule": "nope"}).startswith("The second rule 'nope'")
    assert slice_views.read_second_rule({"sample": "3"}) is None


def test_runs_on_other_dev_samples_are_refused(run_root, synth):
    deep = rundata.load_run(Path(run_root) / "synth-deep")
    assert "same dev set" in slice_views.same_samples(synth, deep)
    assert slice_views.same_samples(synth, synth) is None


# ---- the page ------------------------------------------------------------------------------------------
def open_slices(root, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(rundata.ROOT_ENV, str(root))
        for k, v in params.items():
            at.query_params[k] = v
        at.run()
        at.switch_page("pages/slices.py")
        for k, v in params.items():
            at.query_params[k] = v
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("name", ["synth-pair3", "synth-notexts", "synth-leebert"])
@pytest.mark.parametrize("view", ["Slices", "Where two rules differ"])
def test_the_page_on_every_kind_of_run(run_root, name, view):
    at = open_slices(run_root, run=name, **{"s.view": view})
    assert not at.error, [e.value for e in at.error]
    assert at.dataframe


@pytest.mark.skipif(not (BUNDLED / "cache.npz").exists(), reason=f"no bundled run at {BUNDLED}")
def test_the_page_on_the_bundled_default_run():
    run = rundata.load_run(BUNDLED)
    params = run.default_params("entropy")
    at = open_slices(BUNDLED.parent, run=run.name, **{"s.gold": run.cache.label_names[0]})
    table = at.dataframe[0].value.set_index("slice")
    ev = run.evaluate("entropy", params)
    whole = table.loc[slice_views.WHOLE]
    assert whole["samples"] == run.cache.N and whole["Accuracy"].startswith(f"{ev['score']:.3f} [")
    first = run.cache.labels == 0
    row = table.loc[f"gold label = {run.cache.label_names[0]}"]
    assert row["samples"] == first.sum()
    assert row["mean exit layer"].startswith(f"{ev['exit_layer'][first].mean():.2f} [")
    assert slice_views.SELECTED not in table.index                  # the filter is the one group: said once

    at = open_slices(BUNDLED.parent, run=run.name, **{"s.view": "Where two rules differ"})
    said = "\n".join(t.value for t in at.text)
    b = run.evaluate("patience", run.default_params("patience"))
    n_diff = int(((ev["pred"] != b["pred"]) | (ev["exit_layer"] != b["exit_layer"])).sum())
    assert f"{n_diff} of {run.cache.N} samples differ" in said and "The slice that differs most" in said
    ranked = at.dataframe[-1].value
    assert len(ranked) == n_diff and ranked["flip"].iloc[0] and not ranked["flip"].iloc[-1]


def test_traces_shows_the_second_rule_beside_the_first(run_root, synth):
    b = slice_views.arm(synth, "patience", {"patience": 3})
    at = AppTest.from_file(APP, default_timeout=60)
    params = {"run": synth.name, "sample": str(synth.row_ids()[7]), **slice_views.second_rule_params(synth.name, b)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(rundata.ROOT_ENV, str(run_root))
        at.query_params["run"] = synth.name
        at.run()
        at.switch_page("pages/traces.py")
        for k, v in params.items():
            at.query_params[k] = v
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    sides = [t.value for t in at.text if t.value.startswith(("A: ", "B: "))]
    assert len(sides) == 2
    assert sides[1].startswith(f"B: PABEE patience (patience=3) on {synth.name} exits at layer {int(b.exit_layer[7])} ")
    a_exit = synth.evaluate("entropy", synth.default_params("entropy"))["exit_layer"][7]
    assert f"exits at layer {int(a_exit)} " in sides[0]
    at.button(key="t.vs.close").click().run()
    assert not [t for t in at.text if t.value.startswith("B: ")]


def test_slices_opens_on_the_rule_and_knobs_explore_had(run_root, synth):
    at = AppTest.from_file(APP, default_timeout=60)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(rundata.ROOT_ENV, str(run_root))
        at.query_params["run"] = synth.name
        at.run()
        at.switch_page("pages/explore.py")
        at.query_params["run"], at.query_params["strategy"] = synth.name, "PABEE"
        at.run()
        at.slider(key="patience.patience").set_value(4).run()
        at.switch_page("pages/slices.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="s.rule").value == "patience" and at.slider(key="s.patience.patience").value == 4
    b = synth.evaluate("patience", {"patience": 4})
    assert at.dataframe[0].value.iloc[0]["mean exit layer"].startswith(f"{b['exit_layer'].mean():.2f} [")


@pytest.mark.skipif(not (BUNDLED.parent / "rotten_tomatoes-badge" / "cache.npz").exists(), reason="no bundled badge run")
def test_a_rule_of_another_run_on_the_same_dev_set():
    run = rundata.load_run(BUNDLED)
    other = rundata.load_run(BUNDLED.parent / "rotten_tomatoes-badge")
    at = open_slices(BUNDLED.parent, run=run.name, **{"s.view": "Where two rules differ", "s.vs.run": other.name,
                                                      "s.vs.rule": "Entropy"})
    assert not at.warning, [w.value for w in at.warning]
    a = run.evaluate("entropy", run.default_params("entropy"))
    b = other.evaluate("entropy", other.default_params("entropy"))
    said = "\n".join(t.value for t in at.text)
    n_diff = int(((a["pred"] != b["pred"]) | (a["exit_layer"] != b["exit_layer"])).sum())
    assert f"on {other.name}." in said and f"{n_diff} of {run.cache.N} samples differ" in said
    # Traces gets B with its run, and reads back the same decision
    b_arm = slice_views.arm(other, "entropy", other.default_params("entropy"))
    q = slice_views.second_rule_params(run.name, b_arm)
    assert q["t.vs.run"] == other.name
    back = slice_views.second_arm(q, run, load=lambda name: rundata.load_run(BUNDLED.parent / name))
    assert back.run.name == other.name and np.array_equal(back.exit_layer, b["exit_layer"])
