"""Metrics: task scores against sklearn by hand, efficiency arithmetic, sweeps, Pareto, best_at."""
import numpy as np
import pandas as pd
import pytest

from core.engine import metrics
from core.engine.cache import ExitCache
from tests.helpers import random_cache


def make_cache(seed=0, num_layers=6, k=3, with_conf=True, metric="accuracy"):
    probs, labels, conf = random_cache(seed, n=300, num_layers=num_layers, k=k)
    # make later layers more often right, like a trained model
    boost = np.zeros_like(probs)
    boost[np.arange(len(labels)), :, labels] = np.linspace(0, 3, num_layers)
    probs = np.exp(np.log(probs) + boost)
    probs = (probs / probs.sum(-1, keepdims=True)).astype(np.float32)
    return ExitCache(probs, labels, [f"c{i}" for i in range(k)], confidence=conf if with_conf else None,
                     layer_ms=np.linspace(1.0, 2.0, num_layers), embed_ms=0.5, meta={"metric": metric})


def test_task_metrics_by_hand():
    y = [1, 1, 0, 0, 1]
    p = [1, 0, 0, 1, 1]
    # accuracy 3/5; precision 2/3, recall 2/3 -> F1 2/3; MRPC: (0.6 + 0.6667) / 2
    assert metrics.score("accuracy", y, p) == pytest.approx(0.6)
    assert metrics.score("f1", y, p) == pytest.approx(2 / 3)
    assert metrics.score("acc_f1", y, p) == pytest.approx((0.6 + 2 / 3) / 2)
    # MCC = (TP*TN - FP*FN) / sqrt(...) = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert metrics.score("mcc", y, p) == pytest.approx(1 / 6)
    # macro F1: class 1 F1 = 2/3, class 0: P = 1/2, R = 1/2 -> 1/2; mean 7/12
    assert metrics.score("macro_f1", y, p) == pytest.approx(7 / 12)
    with pytest.raises(ValueError, match="unknown metric 'auc'; valid: accuracy"):
        metrics.score("auc", y, p)


def test_efficiency_names_each_speedup():
    # L = 4, exits 1, 2, 4, 1 -> mean 2: layer speed-up 2, saved 50%
    # layer_ms 1, 2, 3, 4 and embed .5: full = .5 + 10 = 10.5; expected = .5 + mean(1, 3, 10, 1) = 4.25
    e = metrics.efficiency(np.array([1, 2, 4, 1]), 4, layer_ms=[1, 2, 3, 4], embed_ms=0.5)
    assert e["mean_exit_layer"] == 2 and e["layer_speedup"] == 2 and e["saved_fraction"] == 0.5
    assert e["expected_ms"] == pytest.approx(4.25)
    assert e["wallclock_speedup"] == pytest.approx(10.5 / 4.25)
    assert metrics.efficiency(np.array([4, 4]), 4)["wallclock_speedup"] is None


def test_per_exit_scores_and_s_avg_best():
    cache = make_cache()
    scores = metrics.per_exit_scores(cache)
    expected = [(cache.probs[:, m].argmax(-1) == cache.labels).mean() for m in range(cache.L)]
    assert np.allclose(scores, expected)
    sb = metrics.s_avg_best([0.5, 0.8, 0.7])
    assert sb == {"s_avg": pytest.approx(2 / 3), "s_best": 0.8, "best_exit": 2}


def test_evaluate_matches_apply_and_full_model():
    cache = make_cache()
    ev = metrics.evaluate(cache, "budget", layer=cache.L)
    assert ev["score"] == ev["full_score"] and ev["delta_vs_full"] == 0
    assert ev["layer_speedup"] == 1 and ev["wallclock_speedup"] == pytest.approx(1)


@pytest.mark.parametrize("num_layers", [6, 12])
def test_default_sweeps_cover_the_range(num_layers):
    cache = make_cache(num_layers=num_layers)
    df = metrics.sweep_all(cache)
    assert set(df.strategy) == set(metrics.STRATEGIES)
    for name, rows in df.groupby("strategy"):
        if name == "oracle":
            continue
        assert len(rows) >= (num_layers if name in ("budget", "patience") else 20), name
        assert rows.layer_speedup.min() == pytest.approx(1.0, abs=0.05), name
    # threshold rules reach (nearly) everyone exiting at layer 1
    for name in ("budget", "entropy", "maxprob", "pcee", "voting", "lte"):
        assert df[df.strategy == name].layer_speedup.max() >= 0.9 * num_layers, name
    cols = {"strategy", "params", "score", "mean_exit_layer", "layer_speedup", "saved_fraction", "wallclock_speedup"}
    assert cols <= set(df.columns)


def test_sweep_rows_agree_with_evaluate():
    cache = make_cache()
    df = metrics.sweep(cache, "pcee")
    for _, row in df.sample(5, random_state=0).iterrows():
        ev = metrics.evaluate(cache, "pcee", patience=int(row.patience), threshold=row.threshold)
        assert ev["score"] == pytest.approx(row.score)
        assert ev["layer_speedup"] == pytest.approx(row.layer_speedup)
        assert ev["wallclock_speedup"] == pytest.approx(row.wallclock_speedup)


def test_caches_without_confidence_skip_learned_strategies():
    cache = make_cache(with_conf=False)
    assert "lte" not in metrics.available_strategies(cache)
    assert "lte" not in set(metrics.sweep_all(cache).strategy)


def test_pareto_by_hand():
    pts = pd.DataFrame({"strategy": ["a", "a", "b", "b", "c", "oracle"],
                        "layer_speedup": [1.0, 2.0, 1.5, 3.0, 2.0, 4.0],
                        "score": [0.90, 0.85, 0.91, 0.70, 0.80, 1.0]})
    front = metrics.pareto(pts)
    # (1.0, .90) is beaten by (1.5, .91); (2.0, .80) by (2.0, .85); the oracle is a reference only
    assert list(zip(front.layer_speedup, front.score)) == [(1.5, 0.91), (2.0, 0.85), (3.0, 0.70)]


def test_best_at_picks_best_score_meeting_the_target():
    pts = pd.DataFrame({"strategy": ["a", "a", "a", "b", "b", "oracle"],
                        "layer_speedup": [1.5, 2.1, 3.0, 1.9, 2.5, 5.0],
                        "score": [0.95, 0.85, 0.88, 0.99, 0.80, 1.0]})
    best = metrics.best_at(pts, 2.0)
    assert list(zip(best.strategy, best.score)) == [("a", 0.88), ("b", 0.80)]
    assert metrics.best_at(pts, 9.0).empty


def test_best_under_latency():
    cache = make_cache()
    df = metrics.sweep_all(cache)
    full_ms = cache.embed_ms + cache.layer_ms.sum()
    best = metrics.best_under_latency(df, full_ms / 2, cache)
    assert (best.wallclock_speedup >= 2 - 1e-9).all() and len(best) > 3
    with pytest.raises(ValueError, match="no measured layer latencies"):
        metrics.best_under_latency(df, 1.0, make_cache().__class__(cache.probs, cache.labels, cache.label_names))


def test_operating_point_json_round_trip():
    cache = make_cache()
    ev = metrics.evaluate(cache, "voting", k=0.5, delta=1.5)
    op = metrics.OperatingPoint.from_evaluation("demo-run", cache, ev)
    back = metrics.OperatingPoint.from_json(op.to_json())
    assert back == op and back.params == {"k": 0.5, "delta": 1.5}
    with pytest.raises(ValueError, match="lacks"):
        metrics.OperatingPoint.from_json('{"run": "x"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        metrics.OperatingPoint.from_json("{")


def test_every_task_metric_has_a_scorer_and_words():
    from core.data.tasks import METRICS as TASK_METRICS

    assert set(TASK_METRICS) <= set(metrics.METRICS) == set(metrics.METRIC_WORDS)
