"""One frontier over precision x rule x setting (core.engine.frontier) and what core.predict's summary
says it found (core.engine.promise_check). Torch-free: synthetic caches with latency tables."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from core.engine import frontier, metrics, promise_check
from core.engine.cache import ExitCache
from core.engine.strategies import apply

N, L, K = 120, 4, 2


def table(precision: str, scale: float) -> dict:
    """A latency table: per batch of B rows, embeddings 2 ms, each layer 20 ms, each head 1 ms (x scale);
    batch 32 costs 8x batch 1 (so a row is 4x cheaper batched)."""
    def row(b, f):
        return {"rows": b, "embed_ms": 2.0 * scale * f, "layer_ms": [20.0 * scale * f] * L, "head_ms": [1.0 * scale * f] * L}
    return {"precision": precision, "machine": "m", "threads": 1, "torch": "x", "batches": {"1": row(1, 1), "32": row(32, 8)}}


def make_caches(noise: float = 0.05, int8_scale: float = 0.4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, N)
    # exits grow more confident and more often right with depth
    strength = np.linspace(0.5, 3.0, L)
    logit = (2 * (labels[:, None] == 1) - 1) * strength[None] + rng.normal(0, 1.5, (N, L))
    p1 = 1 / (1 + np.exp(-logit))
    probs = np.stack([1 - p1, p1], -1).astype(np.float32)
    noisy = np.clip(p1 + rng.normal(0, noise, p1.shape), 0.001, 0.999)
    probs8 = np.stack([1 - noisy, noisy], -1).astype(np.float32)
    meta = {"task": "t", "metric": "accuracy"}
    fp32 = ExitCache(probs=probs, labels=labels, label_names=["n", "p"], texts=[f"t{i}" for i in range(N)],
                     meta=meta, latency=table("fp32", 1.0), layer_ms=[21.0] * L, embed_ms=2.0)
    int8 = ExitCache(probs=probs8, labels=labels, label_names=["n", "p"], texts=fp32.texts,
                     meta={**meta, "precision": "int8"}, latency=table("int8", int8_scale),
                     layer_ms=[21.0 * int8_scale] * L, embed_ms=2.0 * int8_scale)
    return {"fp32": fp32, "int8": int8}


@pytest.fixture(scope="module")
def caches():
    return make_caches()


def test_every_frontier_point_is_what_its_setting_gives(caches):
    """Each exact setting's score and wall-clock speed-up over fp32 full equal an independent apply +
    metrics.batch_wallclock_speedup of that setting at that precision."""
    pts = frontier.frontier_points(caches, batch_size=32, strategies=["entropy", "patience", "budget"], max_points=None)
    assert set(pts["precision"]) == {"fp32", "int8"}
    sample = pts.iloc[np.linspace(0, len(pts) - 1, 25).round().astype(int)]
    for r in sample.itertuples():
        c = caches[r.precision]
        layers, pred = apply(r.strategy, c.probs, **json.loads(r.params))
        assert r.score == pytest.approx(float((pred == c.labels).mean()))
        want = metrics.batch_wallclock_speedup(layers, c, 32, reference=caches["fp32"])
        assert r.wallclock_speedup == pytest.approx(want, rel=1e-9)


def test_pick_is_the_fastest_setting_within_x_points_of_fp32_full(caches):
    ref = caches["fp32"]
    full = float((ref.probs[:, -1].argmax(-1) == ref.labels).mean())
    for drop in (0.0, 0.01, 0.05):
        op = frontier.pick_precision(caches, max_drop=drop, batch_size=32)
        pts = frontier.frontier_points(caches, batch_size=32, max_points=None)
        ok = pts[pts["score"] >= full - drop - 1e-12]
        assert op.batch_wallclock_speedup == pytest.approx(ok["wallclock_speedup"].max())
        assert op.score >= full - drop - 1e-12 and op.full_score == pytest.approx(full)
        assert op.batch_size == 32 and op.precision in caches
        assert op.delta_interval is not None and op.delta_interval[0] <= op.score - full <= op.delta_interval[1]
    # int8 at 0.4x the time with the same exits would win; its table makes it faster here
    assert frontier.pick_precision(caches, max_drop=0.05, batch_size=32).precision == "int8"


def test_fp32_alone_without_batch_size_is_the_goal_picker(caches):
    one = {"fp32": caches["fp32"]}
    a = frontier.pick_precision(one, max_drop=0.01)
    b = metrics.pick(caches["fp32"], max_drop=0.01)
    assert (a.strategy, a.params, a.layer_speedup, a.score) == (b.strategy, b.params, b.layer_speedup, b.score)
    assert a.precision == "fp32" and a.batch_size is None


def test_slower_precision_is_never_picked():
    slow = make_caches(noise=0.0, int8_scale=1.5)   # same probabilities, but int8 slower: fp32 wins every goal
    for drop in (0.0, 0.02):
        assert frontier.pick_precision(slow, max_drop=drop, batch_size=1).precision == "fp32"


def test_frontier_refuses_what_it_cannot_compare(caches):
    with pytest.raises(ValueError, match="needs a batch size"):
        frontier.pick_precision(caches, max_drop=0.01)
    with pytest.raises(ValueError, match="no latency table at batch size 8 in the fp32, int8"):
        frontier.frontier_points(caches, batch_size=8)
    other = make_caches(seed=1)
    with pytest.raises(ValueError, match="int8 cache holds other dev rows"):
        frontier.check_same_rows({"fp32": caches["fp32"], "int8": other["int8"]})
    with pytest.raises(ValueError, match="must include fp32"):
        frontier.check_same_rows({"int8": caches["int8"]})
    assert frontier.batch_sizes(caches) == [1, 32]


# ---- promise against measurement --------------------------------------------------------------------
def test_verdicts():
    kept = promise_check.verdict("accuracy", 0.81, 0.80, [0.78, 0.83])
    assert kept["verdict"] == "kept" and "inside the promised interval" in kept["sentence"]
    out = promise_check.verdict("accuracy", 0.70, 0.80, [0.78, 0.83])
    assert out["verdict"] == "outside the interval" and "OUTSIDE the promised interval" in out["sentence"]
    by_measured = promise_check.verdict("accuracy", 0.75, 0.80, None, [0.70, 0.79])
    assert by_measured["verdict"] == "outside the interval" and "OUTSIDE the measured 95% interval" in by_measured["sentence"]
    none = promise_check.verdict("speed-up", 2.9, 2.6, note="promised at batch size 1, measured at 32")
    assert none["verdict"] == "no interval" and "cannot be judged" in none["sentence"] and "batch size 1" in none["sentence"]
    assert promise_check.verdict("x", None, 2.0)["verdict"] == "not measured"
    assert promise_check.mean_speedup_note(1, 32) == "promised at batch size 1, measured at 32"
    assert promise_check.mean_speedup_note(32, 32) == ""


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (7, 850), (1, 1)])
def test_clopper_pearson_equals_the_exact_binomial_interval(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert promise_check.clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    with pytest.raises(ValueError):
        promise_check.clopper_pearson(3, 2)


def test_measured_risk_against_the_guarantee():
    labels = np.array([1] * 100)
    full = labels.copy()
    pred = labels.copy()
    pred[:3] = 0                       # 3 of 100 lost against a right full model
    full[3:5] = 0
    pred[3:5] = 0                      # both wrong: no gap loss
    r = promise_check.measured_risk(pred, full, labels, {"epsilon": 0.05, "risk": "gap"})
    assert r["count"] == 3 and r["rows"] == 100 and r["risk"] == "gap"
    assert r["interval"] == pytest.approx(list(promise_check.clopper_pearson(3, 100)))
    assert r["verdict"] == "kept" and "consistent with the guaranteed 5.00%" in r["sentence"]
    broken = promise_check.measured_risk(pred, full, labels, {"epsilon": 0.001})
    assert broken["verdict"] == "outside the interval" and "did not hold" in broken["sentence"]
    plain = promise_check.measured_risk(pred, full, labels, None)
    assert plain["verdict"] is None and "no guarantee" in plain["sentence"]
    assert promise_check.measured_risk(pred, full, labels, risk="consistency")["count"] == 3


def test_exit_drift_names_the_layers_that_moved():
    rng = np.random.default_rng(0)
    ref = rng.choice([1, 2, 3, 4], size=800, p=[0.4, 0.3, 0.2, 0.1])
    same = rng.choice([1, 2, 3, 4], size=300, p=[0.4, 0.3, 0.2, 0.1])
    moved = rng.choice([1, 2, 3, 4], size=300, p=[0.1, 0.2, 0.3, 0.4])
    calm = promise_check.exit_drift(same, ref, 4)
    assert not calm["warn"] and calm["p_value"] > 0.01 and "no drift" in calm["sentence"]
    alarm = promise_check.exit_drift(moved, ref, 4)
    assert alarm["warn"] and alarm["p_value"] < 1e-6 and 1 in alarm["layers"] and 4 in alarm["layers"]
    assert alarm["sentence"].startswith("WARNING") and "layer 4:" in alarm["sentence"] and "may not hold" in alarm["sentence"]
    assert alarm["new_counts"] == np.bincount(moved - 1, minlength=4).tolist()
    few = promise_check.exit_drift(moved[:5], ref, 4)
    assert few["p_value"] is None and "no drift test" in few["sentence"]
    # layers no row reaches on either side are left out of the test (degrees of freedom)
    assert promise_check.exit_drift(np.r_[[1] * 30, [2] * 30], np.r_[[1] * 40, [2] * 40], 6)["dof"] == 1


def test_the_promise_picks_over_precisions(caches):
    """core.promise's choice is the frontier's at the batch size; without tables there, fp32's goal picker."""
    from core.serving.promise import pick_within

    choice = pick_within(caches, 0.01, 32)
    op = frontier.pick_precision(caches, max_drop=0.01, batch_size=32)
    assert (choice["precision"], choice["strategy"], choice["params"]) == (op.precision, op.strategy, op.params)
    assert choice["wallclock_speedup"] == pytest.approx(op.batch_wallclock_speedup)
    assert choice["precisions_searched"] == ["fp32", "int8"]
    fallback = pick_within(caches, 0.01, 8)   # no table at batch size 8: fp32 alone, by layer speed-up
    plain = metrics.pick(caches["fp32"], max_drop=0.01)
    assert (fallback["precision"], fallback["strategy"], fallback["params"]) == ("fp32", plain.strategy, plain.params)
