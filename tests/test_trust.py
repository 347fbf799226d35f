"""Issue 9: exact candidate settings, the goal picker, paired bootstrap intervals, risk-controlled
calibration (LTT / CRC) and the statistics behind their guarantees."""
import json

import numpy as np
import pytest

from core.engine import calibrate, curves, metrics
from core.engine.cache import ExitCache
from core.engine.features import features
from core.engine.strategies import apply, apply_features, candidate_settings
from tests.conftest import synthetic_cache

RULES = ["budget", "entropy", "maxprob", "patience", "pcee", "dge", "voting", "lte"]


def _feats(cache):
    return features(cache.probs, labels=cache.labels, confidence=cache.confidence)


# ---- item 1: exact candidate settings ------------------------------------------------------------
@pytest.mark.parametrize("metric,k", [("accuracy", 3), ("mcc", 2), ("acc_f1", 2), ("macro_f1", 3)])
def test_exact_curves_equal_apply_at_every_candidate(metric, k):
    cache = synthetic_cache(120, 5, k, lte=True, metric=metric, seed=3)
    f = _feats(cache)
    cum = np.concatenate([[0.0], np.cumsum(cache.layer_ms)])
    for rule in RULES:
        for curve in curves.rule_curves(cache, rule, f):
            for i in range(0, len(curve), max(1, len(curve) // 25)):
                exit_layer, pred = apply_features(rule, f, **curve.params(i))
                assert curve.score[i] == pytest.approx(metrics.score(metric, cache.labels, pred), abs=1e-12), rule
                assert curve.mean_exit_layer[i] == pytest.approx(exit_layer.mean(), abs=1e-12), rule
                assert curve.expected_ms[i] == pytest.approx(cache.embed_ms + cum[exit_layer].mean(), abs=1e-9)


def test_candidates_are_distinct_configurations_safest_first():
    cache = synthetic_cache(200, 6, 2, seed=1)
    f = _feats(cache)
    settings = candidate_settings("entropy", f)
    exits = [apply_features("entropy", f, **p)[0] for p in settings]
    means = [e.mean() for e in exits]
    assert means == sorted(means, reverse=True)                        # safest (latest exits) first
    assert all(not np.array_equal(a, b) for a, b in zip(exits, exits[1:]))  # each one changes some exit
    assert means[0] == 6 and means[-1] < 2


def _brute_force_points(rule, cache, f):
    """(score, layer speed-up, expected ms) of the rule at every distinct signal value and just past it."""
    def around(values):
        v = np.unique(np.asarray(values, dtype=np.float64)[np.isfinite(values)])
        return np.unique(np.concatenate([v, np.nextafter(v, np.inf)]))   # at the value and just past it

    L = cache.L
    if rule in ("budget", "patience"):
        grids = [{"layer" if rule == "budget" else "patience": m} for m in range(1, L + 1)]
    elif rule in ("entropy", "maxprob", "lte"):
        sig = {"entropy": f.entropy, "maxprob": f.maxprob, "lte": f.conf}[rule]
        grids = [{"threshold": t} for t in around(sig) if 0 <= t <= 1]
    elif rule == "pcee":
        grids = [{"patience": p, "threshold": t} for p in range(1, L + 1) for t in around(f.entropy) if 0 <= t <= 1]
    elif rule == "dge":
        grids = [{"patience": p, "threshold": t} for p in range(1, L) for t in around(f.divergence("kd")) if t >= 0]
    else:  # voting: every value V_l = c / l^k can take, as Eq. 23 computes it
        grids = []
        for k in (0.0, 0.25, 0.5, 0.75):
            ls = np.arange(1, L + 1, dtype=np.float64)
            vals = [c / ls[l - 1] ** k for l in range(1, L + 1) for c in range(1, l + 1)]
            grids += [{"k": k, "delta": d} for d in around(vals)]
    cum = np.concatenate([[0.0], np.cumsum(cache.layer_ms)])
    out = []
    for p in grids:
        e, pred = apply(rule, cache.probs, confidence=cache.confidence, **p)
        out.append((metrics.score(cache.metric, cache.labels, pred), L / e.mean(), cache.embed_ms + cum[e].mean()))
    return np.array(out)


def test_picker_equals_brute_force_over_all_signal_values():
    cache = synthetic_cache(70, 5, 2, lte=True, seed=7)
    f = _feats(cache)
    full = metrics.score(cache.metric, cache.labels, f.argmax[-1])
    full_ms = cache.embed_ms + cache.layer_ms.sum()
    goals = [{"max_drop": 0.0}, {"max_drop": 0.01}, {"max_drop": 0.03}, {"min_layer_speedup": 1.5},
             {"min_layer_speedup": 2.0}, {"min_layer_speedup": 3.0}, {"max_latency_ms": 0.6 * full_ms}]
    for rule in RULES:
        pts = _brute_force_points(rule, cache, f)
        for goal in goals:
            row = metrics.goal_table(cache, strategies=[rule], feats=f, **goal).iloc[0]
            (name, value), = goal.items()
            if name == "max_drop":
                ok = pts[:, 0] >= full - value - 1e-12
                best = pts[ok][:, 1].max() if ok.any() else None
                got = row.layer_speedup
            elif name == "min_layer_speedup":
                ok = pts[:, 1] >= value - 1e-9
                best = pts[ok][:, 0].max() if ok.any() else None
                got = row.score
            else:
                ok = pts[:, 2] <= value + 1e-9
                best = pts[ok][:, 0].max() if ok.any() else None
                got = row.score
            assert row.meets == (best is not None), (rule, goal)
            if best is not None:
                assert got == pytest.approx(best, abs=1e-12), (rule, goal)


def test_voting_delta_candidates_are_exactly_attainable():
    # 12 layers all voting for class 0: V_l = l / l^0.75 = l^0.25; delta = V_6 must let it out at layer 6
    probs = np.tile(np.array([0.9, 0.1], dtype=np.float32), (3, 12, 1))
    f = features(probs)
    deltas = [p["delta"] for p in candidate_settings("voting", f, k=0.75)]
    v6 = 6 / np.float64(6) ** 0.75
    assert v6 in deltas
    exit_layer, _ = apply("voting", probs, k=0.75, delta=v6)
    assert exit_layer.tolist() == [6, 6, 6]      # Sun et al. Appendix A.1: 6 votes of 6 exit at layer 6
    exit_rounded, _ = apply("voting", probs, k=0.75, delta=round(v6, 6))
    assert exit_rounded.tolist() == [7, 7, 7]    # the old rounded grid value missed it


def test_sweep_is_thinned_but_keeps_each_rules_frontier():
    cache = synthetic_cache(3000, 12, 3, seed=2)
    f = _feats(cache)
    df = metrics.sweep(cache, "entropy", feats=f)
    curve = curves.rule_curves(cache, "entropy", f)[0]
    assert len(curve) > 10 * metrics.SWEEP_POINTS and len(df) < len(curve) / 10
    kept = set(df["params"])
    front = curve.frontier()
    name = lambda i: json.dumps(curve.params(i), sort_keys=True)  # noqa: E731
    if len(front) <= 4 * metrics.SWEEP_POINTS:
        assert {name(i) for i in front} <= kept
    else:   # a long frontier is thinned too, keeping its two ends
        by_speed = front[np.argsort(curve.mean_exit_layer[front])]
        assert {name(by_speed[0]), name(by_speed[-1])} <= kept
        assert len({name(i) for i in front} & kept) == 4 * metrics.SWEEP_POINTS
    assert set(curves.thin(curve, metrics.SWEEP_POINTS, max_frontier=len(front))) >= set(front)


# ---- item 2: the goal picker ---------------------------------------------------------------------
def test_pick_fastest_within_budget_and_its_json():
    cache = synthetic_cache(800, 6, 2, lte=True, seed=4)
    op = metrics.pick(cache, max_drop=0.01, run="demo")
    assert op.score >= op.full_score - 0.01 - 1e-12
    table = metrics.goal_table(cache, max_drop=0.01)
    assert op.layer_speedup == pytest.approx(table[table.meets].layer_speedup.max())
    assert op.goal == {"max_drop": 0.01} and op.score_interval[0] <= op.score <= op.score_interval[1]
    assert metrics.OperatingPoint.from_json(op.to_json()) == op
    ev = metrics.evaluate(cache, op.strategy, **op.params)
    assert ev["score"] == op.score and ev["layer_speedup"] == op.layer_speedup


def test_goal_table_says_why_a_rule_is_absent():
    cache = synthetic_cache(400, 6, 2, seed=5)
    table = metrics.goal_table(cache, min_layer_speedup=3.5)
    pabee = table[table.strategy == "patience"].iloc[0]
    assert not pabee.meets and "layer 2 at the earliest: 3.00x on 6 layers" in pabee.why
    assert pabee.layer_speedup <= 3.0
    assert table.meets.iloc[0]


def test_pick_errors_name_the_problem():
    cache = synthetic_cache(100, 4, 2, seed=0, latency=False)
    with pytest.raises(ValueError, match="exactly one goal"):
        metrics.pick(cache)
    with pytest.raises(ValueError, match="exactly one goal"):
        metrics.pick(cache, max_drop=0.01, min_layer_speedup=2)
    with pytest.raises(ValueError, match="max_drop must be"):
        metrics.pick(cache, max_drop=-1)
    with pytest.raises(ValueError, match="layer_ms"):
        metrics.pick(cache, max_latency_ms=3.0)
    with pytest.raises(ValueError, match="no setting meets"):
        metrics.pick(cache, min_layer_speedup=3.0, strategies=["patience"])


# ---- item 3: paired bootstrap --------------------------------------------------------------------
def test_bootstrap_matches_index_resampling_and_is_seeded():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    a = np.where(rng.random(500) < 0.8, labels, 1 - labels)
    b = np.where(rng.random(500) < 0.75, labels, 1 - labels)
    for metric in ("accuracy", "mcc"):
        got = metrics.diff_interval(metric, labels, a, b, n_resamples=4000, seed=1)
        assert got == metrics.diff_interval(metric, labels, a, b, n_resamples=4000, seed=1)
        idx = rng.integers(0, 500, (4000, 500))     # resampling indices, scored per resample
        conf = lambda p: np.stack([curves.confusion(p[i], labels[i], 2) for i in idx])  # noqa: E731
        ref = curves.confusion_score(metric, conf(a)) - curves.confusion_score(metric, conf(b))
        lo, hi = np.quantile(ref, [0.025, 0.975])
        assert got.low == pytest.approx(lo, abs=0.01) and got.high == pytest.approx(hi, abs=0.01), metric
        assert got.estimate == pytest.approx(metrics.score(metric, labels, a) - metrics.score(metric, labels, b))


def test_identical_predictions_differ_by_exactly_zero_and_runs_need_the_same_dev_set():
    cache = synthetic_cache(300, 4, 2, seed=0)
    pred = cache.probs[:, 1].argmax(-1)
    d = metrics.diff_interval("accuracy", cache.labels, pred, pred)
    assert d.low == d.high == 0 and d.covers_zero
    s, dfull = metrics.point_intervals(cache, pred)
    assert s.low < s.estimate < s.high and dfull.high < 0.5
    other = synthetic_cache(300, 4, 2, seed=1)
    with pytest.raises(ValueError, match="same dev"):
        metrics.runs_diff_interval(cache, pred, other, pred)


# ---- item 4: risk-controlled calibration ---------------------------------------------------------
def test_hb_pvalue_and_selection_rules_by_hand():
    # zero losses in n: the Hoeffding term is (1 - eps)^n
    assert calibrate.hb_pvalue(np.array([0.0]), 300, 0.01)[0] == pytest.approx(0.99 ** 300)
    assert calibrate.hb_pvalue(np.array([0.5]), 300, 0.01)[0] == 1.0
    assert calibrate.ltt_select(np.array([0.0, 0.0, 0.5, 0.0]), 1000, 0.05, 0.1) == 1   # stops at the first failure
    assert calibrate.crc_select(np.array([0.0, 0.01, 0.02, 0.1]), 99, 0.03) == 2      # (99 * 0.02 + 1) / 100 <= 0.03


def _subcache(pop, idx):
    return ExitCache(probs=pop.probs[idx], labels=pop.labels[idx], label_names=pop.label_names,
                     meta={"metric": "accuracy"})


@pytest.mark.parametrize("rule,fixed,risk,eps", [("entropy", {}, "consistency", 0.05),
                                                  ("pcee", {"patience": 2}, "gap", 0.03)])
def test_guarantees_hold_over_many_draws_from_a_known_population(rule, fixed, risk, eps):
    """LTT: P(population risk of the chosen setting > eps) <= delta; CRC: mean population risk <= eps;
    and neither collapses to the full model where a safe, faster setting exists."""
    pop = synthetic_cache(30000, 6, 2, seed=11, latency=False)
    pf = _feats(pop)
    pop_full = pf.argmax[-1]

    def pop_risk(pred):   # the true risk: the loss's mean over the whole population
        lost = pred != pop_full if risk == "consistency" else (pred != pop.labels) & (pop_full == pop.labels)
        return float(lost.mean())

    delta, draws, n = 0.1, 200, 600
    rng = np.random.default_rng(0)
    risks = {"ltt": [], "crc": []}
    speed = {"ltt": [], "crc": []}
    memo = {}
    for d in range(draws):
        sub = _subcache(pop, rng.integers(0, pop.N, n))
        for method in ("ltt", "crc"):
            cal = calibrate.calibrate(sub, rule, risk=risk, epsilon=eps, delta=delta, method=method, seed=d, **fixed)
            key = json.dumps([cal.strategy, cal.params], sort_keys=True)
            if key not in memo:
                e, p = apply_features(cal.strategy, pf, **cal.params)
                memo[key] = (pop_risk(p), pop.L / e.mean())
            risks[method].append(memo[key][0])
            speed[method].append(memo[key][1])
    ltt_risk, crc_risk = np.array(risks["ltt"]), np.array(risks["crc"])
    # sampling tolerance: 3 binomial standard deviations over `draws`
    assert (ltt_risk > eps).mean() <= delta + 3 * np.sqrt(delta * (1 - delta) / draws)
    assert crc_risk.mean() <= eps + 3 * crc_risk.std() / np.sqrt(draws)
    # a safe, faster setting exists in the population, and both find one most of the time
    curve = curves.rule_curves(pop, rule, pf, **fixed)[0]
    safe = [curve.layer_speedup[i] for i in range(0, len(curve), max(1, len(curve) // 200))
            if pop_risk(apply_features(rule, pf, **curve.params(i))[1]) <= eps]
    assert max(safe) > 1.2
    assert np.median(speed["ltt"]) > 1.1 and np.median(speed["crc"]) > np.median(speed["ltt"]) - 1e-9
    assert crc_risk.mean() > 0.5 * eps   # CRC spends its budget, not collapsing to the full model


def test_calibrate_fields_split_and_fallback():
    cache = synthetic_cache(600, 6, 2, seed=3, lte=True)
    cal = calibrate.calibrate(cache, "pcee", epsilon=0.05, risk="gap", patience=2, seed=4)
    assert len(cal.calib_idx) == 300 and len(set(cal.calib_idx) | set(cal.test_idx)) == 600
    assert cal.params["patience"] == 2 and cal.strategy == "pcee"
    exit_layer, pred = apply("pcee", cache.probs, **cal.params)
    t = cal.test_idx
    full = cache.probs[:, -1].argmax(-1)
    assert cal.test_risk == pytest.approx(((pred[t] != cache.labels[t]) & (full[t] == cache.labels[t])).mean())
    assert cal.test_layer_speedup == pytest.approx(6 / exit_layer[t].mean())
    assert "90%" in cal.guarantee
    none = calibrate.calibrate(cache, "entropy", epsilon=0.001, seed=0)   # 300 samples cannot show 0.1%
    assert none.fallback and none.strategy == "budget" and none.params == {"layer": 6}
    assert "full model" in none.guarantee and none.test_risk == 0
    with pytest.raises(ValueError, match="epsilon"):
        calibrate.calibrate(cache, "entropy", epsilon=2)
    with pytest.raises(ValueError, match="risk"):
        calibrate.calibrate(cache, "entropy", epsilon=0.1, risk="other")
    with pytest.raises(ValueError, match="calib_fraction"):
        calibrate.calibrate(cache, "entropy", epsilon=0.1, calib_fraction=1.0)


# ---- Compare: seed groups and method differences -------------------------------------------------
def _run(name, cache):
    from core.app import rundata

    f = _feats(cache)
    per_exit = metrics.per_exit_scores(cache)
    return rundata.RunData(name=name, path=None, cache=cache, feats=f, per_exit=per_exit, full_score=float(per_exit[-1]))


def test_seed_groups_mean_sd_and_noise_verdicts():
    from core.app import trust_views

    runs = [_run(n, synthetic_cache(400, 4, 2, seed=s, method=m))
            for n, s, m in [("t-joint", 0, "joint"), ("t-joint-seed1", 1, "joint"), ("t-joint-seed2", 2, "joint"),
                            ("t-badge", 0, "badge")]]
    table = trust_views.seed_summary(runs).set_index("group")
    assert table.loc["t-joint", "seeds"] == 3 and table.loc["t-badge", "seeds"] == 1
    last = [float(r.per_exit[-1]) for r in runs[:3]]
    assert table.loc["t-joint", "last exit mean"] == pytest.approx(np.mean(last))
    assert table.loc["t-joint", "last exit s.d."] == pytest.approx(np.std(last, ddof=1))
    assert np.isnan(table.loc["t-badge", "last exit s.d."])
    # same dev set (seed 0) -> compared; different dev sets -> left out
    base = synthetic_cache(400, 4, 2, seed=0)
    worse = ExitCache(probs=base.probs.copy(), labels=base.labels, label_names=base.label_names, meta=base.meta)
    flip = np.arange(0, 400, 4)   # a quarter of the samples get the other class at the last exit
    worse.probs[flip, -1] = worse.probs[flip, -1, ::-1]
    diffs = trust_views.method_differences([_run("a", base), _run("b", worse), runs[1]])
    assert list(zip(diffs["run A"], diffs["run B"])) == [("a", "b")]
    assert diffs["verdict"].iloc[0] in ("A better", "B better") and not diffs["95% low"].iloc[0] <= 0 <= diffs["95% high"].iloc[0]
    same = trust_views.method_differences([_run("a", base), _run("a2", base)])
    assert same["verdict"].iloc[0] == "within noise"


def test_goal_table_names_rules_without_settings_on_short_models():
    # DGE compares a layer with earlier ones: a 2-layer model has one DGE exit, nothing to choose;
    # the rule stays in the table with the reason instead of breaking the table (seen on a tiny run)
    rng = np.random.default_rng(3)
    cache = ExitCache(probs=rng.dirichlet([1, 1], size=(40, 2)).astype(np.float32),
                      labels=rng.integers(0, 2, 40), label_names=["a", "b"])
    table = metrics.goal_table(cache, max_drop=0.01)
    dge = table[table.strategy == "dge"].iloc[0]
    assert not dge.meets and "2-layer" in dge.why and np.isnan(dge.score)
    assert table.meets.iloc[0] and metrics.pick(cache, max_drop=0.5).strategy in set(table.strategy)
