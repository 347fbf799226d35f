"""Issue 22 item 5: one answer to "lose at most x points", both ways (the dev-set optimum and a
Learn-then-Test guarantee on the gap risk, calibrated on rows the reported numbers never saw), the
`python -m core.calibrate` command, `core.export --intervals / --guarantee`, and the LTT choice
cross-checked against MAPIE on the same cached risks."""
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy.stats import beta, binom

from core.engine import calibrate as CAL
from core.engine import goal, metrics
from core.engine.features import features
from core.engine.strategies import apply_features, candidate_settings
from core.serving import export
from tests.conftest import REPO, synthetic_cache, write_synthetic_run

CACHE = synthetic_cache(600, 6, 2, seed=3, lte=True)    # 8 deployable rules
FEATS = features(CACHE.probs, labels=CACHE.labels, confidence=CACHE.confidence)
FULL = CACHE.probs[:, -1].argmax(-1)


def _gap_lost(pred, idx):
    return (pred[idx] != CACHE.labels[idx]) & (FULL[idx] == CACHE.labels[idx])


# ---- the engine: both answers ---------------------------------------------------------------------
def test_dev_answer_is_the_goal_pickers_optimum_with_its_bootstrap_intervals():
    res = goal.lose_at_most(CACHE, 2, delta=0.1)
    op = metrics.pick(CACHE, max_drop=0.02)
    assert (res.dev.strategy, res.dev.params) == (op.strategy, op.params)
    assert res.dev.whole["score"] == pytest.approx(op.score)
    assert res.dev.whole["layer_speedup"] == pytest.approx(op.layer_speedup)
    assert res.dev.whole["points_lost"] <= 2 + 1e-9
    assert res.dev.uncertainty["score_interval"] == op.score_interval
    assert res.dev.uncertainty["delta_interval"] == op.delta_interval
    assert "same rows" in res.dev.uncertainty["note"]


def test_guarantee_tests_every_rule_at_delta_over_rules_and_takes_the_fastest_on_calibration_rows():
    res = goal.lose_at_most(CACHE, 2, delta=0.1)
    rules = metrics.goal_rules(CACHE)
    R = len(rules)
    assert res.rules == rules and R == 8 and res.per_rule_delta == pytest.approx(0.1 / R)
    table = res.per_rule.set_index("rule")
    candidates = []
    for i, r in enumerate(rules):
        cal = CAL.calibrate(CACHE, r, risk="gap", epsilon=0.02, delta=0.1 / R, seed=0)
        assert bool(table.loc[r, "passed"]) == (not cal.fallback)
        assert json.loads(table.loc[r, "params"]) == cal.params
        if not cal.fallback:
            e = apply_features(cal.strategy, FEATS, **cal.params)[0]
            candidates.append((-CACHE.L / e[cal.calib_idx].mean(), cal.calib_risk, i, cal))
    assert len(candidates) >= 2
    best = min(candidates, key=lambda c: c[:3])[3]
    assert (res.guaranteed.strategy, res.guaranteed.params) == (best.strategy, best.params)
    # its numbers are the held-out part's, by hand
    t = best.test_idx
    assert len(set(t) & set(best.calib_idx)) == 0 and len(t) + len(best.calib_idx) == CACHE.N
    e, p = apply_features(best.strategy, FEATS, **best.params)
    lost = _gap_lost(p, t)
    h = res.guaranteed.heldout
    assert h["rows"] == len(t) and h["risk"] == pytest.approx(lost.mean())
    assert h["score"] == pytest.approx((p[t] == CACHE.labels[t]).mean())
    assert h["full_score"] == pytest.approx((FULL[t] == CACHE.labels[t]).mean())
    assert h["layer_speedup"] == pytest.approx(CACHE.L / e[t].mean())
    k, n = int(lost.sum()), len(t)
    lo, hi = res.guaranteed.uncertainty["heldout_risk_interval"]     # Clopper-Pearson, by its beta quantiles
    assert lo == pytest.approx(beta.ppf(0.025, k, n - k + 1) if k else 0.0)
    assert hi == pytest.approx(beta.ppf(0.975, k + 1, n - k) if k < n else 1.0)
    # both answers, and the one sentence on why the guarantee is slower
    assert res.guaranteed.whole["layer_speedup"] < res.dev.whole["layer_speedup"]
    assert res.why.startswith("The guaranteed setting is slower") and "90%" in res.why and "optimistic" in res.why
    assert f"delta / {R}" in res.guarantee and "at most 2.0%" in res.guarantee
    rec = res.record()
    assert rec["delta"] == 0.1 and rec["rules"] == rules and rec["guarantee"] == res.guarantee
    assert rec["test_risk"] == pytest.approx(h["risk"]) and "params" not in rec


def test_one_rule_is_calibrate_itself_at_the_full_delta():
    res = goal.lose_at_most(CACHE, 2, delta=0.1, strategies=["pcee"], fixed={"patience": 1})
    cal = CAL.calibrate(CACHE, "pcee", risk="gap", epsilon=0.02, delta=0.1, patience=1)
    assert res.per_rule_delta == 0.1 and res.rules == ["pcee"]
    assert res.guaranteed.params == cal.params and res.guarantee == cal.guarantee
    op = metrics.pick(CACHE, max_drop=0.02, strategies=["pcee"])
    assert (res.dev.strategy, res.dev.params) == (op.strategy, op.params)


def test_too_few_calibration_rows_give_the_full_model_and_say_so():
    small = synthetic_cache(300, 6, 2, seed=0)
    res = goal.lose_at_most(small, 1, delta=0.1)
    assert res.fallback and res.guaranteed.strategy == "budget" and res.guaranteed.params == {"layer": 6}
    assert res.guaranteed.heldout["risk"] == 0 and res.guaranteed.whole["layer_speedup"] == 1
    assert "No setting of any rule passed" in res.guarantee and "full model" in res.why


@pytest.mark.parametrize("kw,match", [
    ({"points": 0}, "epsilon"), ({"points": 100}, "epsilon"), ({"points": "1"}, "number of points"),
    ({"points": float("nan")}, "epsilon"), ({"points": 1, "delta": 0}, "delta"),
    ({"points": 1, "fixed": {"patience": 2}}, "exactly one rule"),
    ({"points": 1, "method": "crc"}, "one rule"), ({"points": 1, "strategies": ["bogus"]}, "unknown rule"),
    ({"points": 1, "risk": "other"}, "risk"),
])
def test_bad_arguments_are_one_sentence(kw, match):
    with pytest.raises(ValueError, match=match):
        goal.lose_at_most(CACHE, **kw)


def test_trust_views_memoizes_both_answers_for_the_page():
    from core.app import rundata, trust_views

    per_exit = metrics.per_exit_scores(CACHE)
    run = rundata.RunData(name="g", path=None, cache=CACHE, feats=FEATS, per_exit=per_exit, full_score=float(per_exit[-1]))
    a = trust_views.lose_at_most(run, 2, delta=0.1)
    assert a is trust_views.lose_at_most(run, 2, delta=0.1)
    b = goal.lose_at_most(CACHE, 2, delta=0.1)
    assert (a.dev.params, a.guaranteed.params, a.why) == (b.dev.params, b.guaranteed.params, b.why)


# ---- the LTT choice against MAPIE on the same cached risks -----------------------------------------
def _hoeffding(r, n, eps):
    a = np.minimum(r, eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where(a > 0, a * np.log(a / eps), 0.0) + (1 - a) * np.log((1 - a) / (1 - eps))
    return np.exp(-n * h1)


@pytest.mark.parametrize("rule,fixed,eps", [("entropy", {}, 0.03), ("pcee", {"patience": 2}, 0.03),
                                             ("voting", {"k": 0.5}, 0.05), ("lte", {}, 0.02)])
def test_ltt_choice_matches_mapie_on_the_same_cached_risks(rule, fixed, eps):
    """MAPIE's ltt_procedure with the general Hoeffding-Bentkus p-value (binary=False) and fixed-sequence
    testing from the safest setting picks calibrate's setting. MAPIE's BinaryClassificationController,
    given the gap loss as a BinaryRisk on (full model right, exit right), measures the same risks but
    uses the binary p-value min(Hoeffding, binomial tail) - Ringel et al.'s - where calibrate keeps
    Bentkus' factor e (valid for any loss in [0, 1]); so on the same sequence the controller's p-values
    go at least as far, and where they go further it is by that factor alone."""
    from mapie.risk_control import BinaryClassificationController, BinaryRisk
    from mapie.risk_control._base_controller import ltt_procedure

    delta = 0.1
    cal = CAL.calibrate(CACHE, rule, risk="gap", epsilon=eps, delta=delta, **fixed)
    idx = cal.calib_idx
    n = len(idx)
    sub = features(CACHE.probs[idx], labels=CACHE.labels[idx], confidence=CACHE.confidence[idx])
    settings = candidate_settings(rule, sub, **fixed)                  # the calibration rows' breakpoints, safest first
    early_right = np.array([(apply_features(rule, FEATS, **p)[1] == CACHE.labels)[idx] for p in settings])
    full_right = (FULL == CACHE.labels)[idx]
    r_hat = (full_right & ~early_right).mean(1)                        # the gap risk of every setting, computed here
    ours = CAL.hb_pvalue(r_hat, n, eps)

    # MAPIE rounds n * r_hat up with no tolerance: where float error puts k / n * n above k it tests k + 1
    # losses (more conservative); every other p-value must agree
    exact = np.ceil(n * r_hat) == np.round(n * r_hat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                # "risk not monotonic": ours is not, by design
        valid, p = ltt_procedure(r_hat[None], np.array([[eps]]), delta, np.full((1, len(r_hat)), n),
                                 binary=False, fwer_method="fixed_sequence")
    np.testing.assert_allclose(p[exact, 0], ours[exact], rtol=1e-9, atol=1e-15)
    assert np.all(p[~exact, 0] >= ours[~exact])
    j = CAL.ltt_select(r_hat, n, eps, delta)
    assert j >= 0 and valid[0] == list(range(j + 1))                   # MAPIE certifies the same prefix
    e_ours, p_ours = apply_features(cal.strategy, FEATS, **cal.params)
    e_mapie, p_mapie = apply_features(rule, FEATS, **settings[j])
    assert np.array_equal(e_ours, e_mapie) and np.array_equal(p_ours, p_mapie)   # the same setting

    gap = BinaryRisk(risk_occurrence=lambda y_true, y_pred: (y_true == 1) & (y_pred == 0),
                     risk_condition=lambda y_true, y_pred: np.ones_like(y_true, dtype=bool), higher_is_better=False)
    ctl = BinaryClassificationController(
        predict_function=lambda X, s: early_right[int(s)][np.asarray(X)].astype(int), risk=gap, target_level=eps,
        confidence_level=1 - delta, best_predict_param_choice=gap,
        list_predict_params=np.arange(len(settings), dtype=float)[:, None])
    ctl.calibrate(np.arange(n), full_right.astype(int))
    binary = np.minimum(_hoeffding(r_hat, n, eps), binom.cdf(np.round(n * r_hat), n, eps))
    np.testing.assert_allclose(ctl.p_values[exact, 0], binary[exact], rtol=1e-9, atol=1e-15)
    assert np.all(ours >= binary - 1e-15) and np.all(ours <= math.e * binary + 1e-15)
    fail = np.nonzero(binary > delta)[0]
    j_binary = (int(fail[0]) if fail.size else len(binary)) - 1
    assert j_binary >= j
    if j_binary > j:                                                   # the factor e alone stopped calibrate there
        assert binary[j + 1] <= delta < ours[j + 1] <= math.e * binary[j + 1] + 1e-15


# ---- the command: python -m core.calibrate --------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = write_synthetic_run(tmp_path_factory.mktemp("goal") / "synth", n=600, num_layers=6, k=2, seed=3)
    (d / "model.safetensors").write_bytes(b"stand-in weights: only their sha256 is read here")
    return d


def test_calibrate_command_prints_both_answers_and_writes_the_guaranteed_point(run_dir, tmp_path, capsys):
    from core.engine.cache import ExitCache

    out = tmp_path / "g.json"
    assert CAL.main(["--run", str(run_dir), "--lose-at-most", "2", "--delta", "0.1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    cache = ExitCache.load(run_dir)
    res = goal.lose_at_most(cache, 2, delta=0.1)
    assert f"dev optimum: {res.dev.setting}" in text and f"guarantee: {res.guaranteed.setting}" in text
    assert f"why: {res.why}" in text and f"guarantee: {res.guarantee}" in text
    point = export.read_point(out)
    assert (point.strategy, point.params) == (res.guaranteed.strategy, res.guaranteed.params)
    assert point.promise["guarantee"] == json.loads(json.dumps(res.record()))
    pred = apply_features(res.guaranteed.strategy, features(cache.probs, labels=cache.labels), **res.guaranteed.params)[1]
    s_int, _ = metrics.point_intervals(cache, pred)
    assert point.promised("score")[1] == pytest.approx([s_int.low, s_int.high])
    # --epsilon is the same goal as a fraction; one --rule is calibrate's own answer
    assert CAL.main(["--run", str(run_dir), "--epsilon", "0.02", "--rule", "entropy"]) == 0
    one = capsys.readouterr().out
    cal = CAL.calibrate(cache, "entropy", risk="gap", epsilon=0.02, delta=0.1)
    assert f"guarantee: {cal.guarantee}" in one and "rules: entropy" in one


@pytest.mark.parametrize("argv,words", [
    ([], "one of the arguments --lose-at-most --epsilon is required"),
    (["--lose-at-most", "1", "--epsilon", "0.01"], "not allowed with"),
    (["--lose-at-most", "abc"], "invalid float value"),
    (["--lose-at-most", "0"], "epsilon"),
    (["--lose-at-most", "150"], "epsilon"),
    (["--lose-at-most", "1", "--delta", "1.5"], "delta"),
    (["--lose-at-most", "1", "--rule", "bogus"], "unknown rule"),
    (["--lose-at-most", "1", "--rule", "oracle"], "Oracle"),
    (["--lose-at-most", "1", "--fixed", '{"patience": 2}'], "exactly one rule"),
    (["--lose-at-most", "1", "--rule", "pcee", "--fixed", "{patience"], "--fixed is not valid JSON"),
    (["--lose-at-most", "1", "--rule", "pcee", "--fixed", '{"patience": 100}'], "patience"),
    (["--lose-at-most", "1", "--method", "crc"], "one rule"),
    (["--lose-at-most", "1", "--risk", "other"], "invalid choice"),
    (["--lose-at-most", "1", "--out", "/no/such/folder/p.json"], "does not exist"),
])
def test_calibrate_command_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys, argv, words):
    out = tmp_path / "never.json"
    argv = ["--run", str(run_dir), *argv]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    assert CAL.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("core.calibrate: error: ") and words in err, err
    assert not out.exists()


def test_calibrate_command_names_a_missing_run_and_debug_adds_the_traceback(tmp_path, capsys):
    assert CAL.main(["--run", str(tmp_path / "nope"), "--lose-at-most", "1"]) == 2
    assert "no cache.npz" in capsys.readouterr().err
    assert CAL.main(["--run", str(tmp_path / "nope"), "--lose-at-most", "1", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_calibrate_help_is_a_real_command():
    out = subprocess.run([sys.executable, "-m", "core.calibrate", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--lose-at-most" in out.stdout and "--delta" in out.stdout, out.stderr


# ---- core.export --intervals / --guarantee: what the app's downloads carry --------------------------
def test_export_intervals_and_guarantee_carry_what_the_apps_downloads_carry(run_dir, tmp_path):
    from core.app import trust_views
    from core.engine.cache import ExitCache

    out = tmp_path / "cli.json"
    assert export.main(["--run", str(run_dir), "--strategy", "pcee", "--params", '{"patience": 2, "threshold": 0.3}',
                        "--intervals", "--guarantee", '{"epsilon": 0.03, "delta": 0.2, "risk": "gap"}',
                        "--out", str(out)]) == 0
    cli = export.read_point(out)
    cache = ExitCache.load(run_dir)
    cal = CAL.calibrate(cache, "pcee", epsilon=0.03, delta=0.2, risk="gap", patience=2)
    assert not cal.fallback and (cli.strategy, cli.params) == (cal.strategy, cal.params)
    ev = metrics.evaluate(cache, cal.strategy, **cal.params)
    s_int, _ = metrics.point_intervals(cache, ev["pred"])
    app, _, _, _ = export.app_export(run_dir, cache, ev, intervals={"score": (s_int.low, s_int.high)},
                                     guarantee=trust_views.guarantee_record(cal))
    assert cli.promise == json.loads(json.dumps(app["promise"]))
    # --intervals alone: the knobs as given, the score's interval, no guarantee
    assert export.main(["--run", str(run_dir), "--strategy", "entropy", "--params", '{"threshold": 0.4}',
                        "--intervals", "--out", str(out)]) == 0
    plain = export.read_point(out)
    pred = apply_features("entropy", features(cache.probs, labels=cache.labels), threshold=0.4)[1]
    s_int, _ = metrics.point_intervals(cache, pred)
    assert plain.params == {"threshold": 0.4} and plain.promise["guarantee"] is None
    assert plain.promised("score")[1] == pytest.approx([s_int.low, s_int.high])


@pytest.mark.parametrize("value,words", [("{eps", "--guarantee is not valid JSON"), ('{"eps": 0.01}', "unknown key"),
                                         ('{"delta": 0.1}', "needs an epsilon"), ('"x"', "JSON object or a number"),
                                         ("2", "epsilon"), ('{"epsilon": 0.01, "risk": "other"}', "risk")])
def test_export_bad_guarantee_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys, value, words):
    out = tmp_path / "never.json"
    assert export.main(["--run", str(run_dir), "--strategy", "entropy", "--guarantee", value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not out.exists()
