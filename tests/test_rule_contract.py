"""Every registered exit rule keeps one contract (as transformers' shared model tester does for every
model): `decide` on prefixes == `apply`; the exits its signal's breakpoints imply == `apply`; the
why-sentence's exit == an independent per-sample loop; the real batched predictor == `apply`. And a
complete new threshold rule registered in one place gets every feature: exact curves, a quantile
slider, a why-sentence, calibration, the goal picker and the batched predictor."""
from __future__ import annotations

import numpy as np
import pytest

from core.app import knob_scale
from core.app.explain import explain
from core.engine import metrics
from core.engine.calibrate import calibrate
from core.engine.curves import rule_curves
from core.engine.features import ExitFeatures, features
from core.engine.registry import STRATEGIES, Param, Strategy, register
from core.engine.strategies import apply, apply_features, candidate_settings, decide, exit_signal, fixed_choices
from tests.conftest import synthetic_cache
from tests.reference_loop import exit_all

CACHE = synthetic_cache(n=80, num_layers=5, k=3, seed=11, lte=True)
FEATS = features(CACHE.probs, labels=CACHE.labels, confidence=CACHE.confidence)
RULES = list(STRATEGIES)  # the papers' rules, as registered on import


def gap_midpoints(values: np.ndarray, qs=(0.25, 0.6), min_gap: float = 1e-3) -> list[float]:
    """Knob values in the middle of gaps >= min_gap between observed signal values (no ties)."""
    v = np.unique(np.round(values[np.isfinite(values)], 9))
    ok = np.flatnonzero(np.diff(v) > min_gap)
    if ok.size == 0:
        return []
    picks = {int(ok[np.argmin(np.abs(ok - q * len(v)))]) for q in qs}
    return [float((v[j] + v[j + 1]) / 2) for j in sorted(picks)]


def contract_settings(rule: str, f: ExitFeatures) -> list[dict]:
    """Settings of `rule` that no float rounding can flip: its listed settings, or for a signal rule
    knob values in gaps of its own signal, at the first two choices of its other knobs."""
    spec = STRATEGIES[rule]
    if spec.signal is None:
        return spec.settings(f) if spec.settings else [{}]
    out = []
    choice_values = [{}] + [{name: c} for name, p in spec.params.items() if p.choices
                            for c in p.choices[1:] if "confidence" not in spec.needs_for({name: c})
                            or f.confidence is not None]
    for extra in choice_values:
        for fixed in fixed_choices(rule, f, **extra)[:2]:
            sig = exit_signal(rule, f, **fixed)
            if sig is None:       # knob-dependent predictions: the plain rule's gaps
                sig = exit_signal(rule, f, **{**fixed, "ensemble": False})
            out += [{**fixed, spec.knob: t} for t in gap_midpoints(sig.signal)]
    return out


def signal_decisions(sig, f: ExitFeatures, knob: float) -> tuple[np.ndarray, np.ndarray]:
    """Exit layers and predictions read off an ExitSignal alone (no rule code)."""
    fire = sig.signal < knob if sig.fires_below else sig.signal >= knob          # [L, N]
    fired = fire.any(0)
    first = np.where(fired, fire.argmax(0), f.L - 1)
    cols = np.arange(f.N)
    own = f.probs[cols, first].argmax(-1)
    pred = own if sig.pred_at is None else sig.pred_at[first, cols]
    final = f.probs[:, -1].argmax(-1) if sig.final is None else sig.final
    return first + 1, np.where(fired, pred, final)


@pytest.mark.parametrize("rule", RULES)
def test_decide_on_prefixes_equals_apply(rule):
    for params in contract_settings(rule, FEATS)[:6]:
        want_layer, want_pred = apply(rule, CACHE.probs, labels=CACHE.labels, confidence=CACHE.confidence, **params)
        for i in range(0, CACHE.N, 9):
            for m in range(1, CACHE.L + 1):
                fired, pred = decide(rule, CACHE.probs[i, :m], confidence=CACHE.confidence[i],
                                     label=int(CACHE.labels[i]), **params)
                if fired or m == CACHE.L:
                    break
            if not fired:   # ran to the end: the rule's final prediction over every layer
                pred = int(apply(rule, CACHE.probs[i:i + 1], labels=CACHE.labels[i:i + 1],
                                 confidence=CACHE.confidence[i:i + 1], **params)[1][0])
            assert (m, pred) == (want_layer[i], want_pred[i]), (rule, params, i)


@pytest.mark.parametrize("rule", [r for r in RULES if STRATEGIES[r].signal is not None])
def test_signal_breakpoints_equal_apply(rule):
    spec = STRATEGIES[rule]
    settings = candidate_settings(rule, FEATS)
    assert settings, rule
    step = max(1, len(settings) // 40)
    for params in settings[::step]:
        fixed = {k: v for k, v in params.items() if k != spec.knob}
        sig = exit_signal(rule, FEATS, **fixed)
        if sig is None:
            continue   # PCEE's ensemble: predictions depend on the knob (checked by apply itself)
        layer, pred = signal_decisions(sig, FEATS, params[spec.knob])
        want_layer, want_pred = apply_features(rule, FEATS, **params)
        np.testing.assert_array_equal(layer, want_layer, err_msg=f"{rule} {params}")
        np.testing.assert_array_equal(pred, want_pred, err_msg=f"{rule} {params}")


@pytest.mark.parametrize("rule", RULES)
def test_why_exit_equals_an_independent_loop(rule):
    for params in contract_settings(rule, FEATS)[:6]:
        ref_layers, _ = exit_all(rule, CACHE.probs, labels=CACHE.labels, confidence=CACHE.confidence, **params)
        for i in range(0, CACHE.N, 7):
            why = explain(CACHE, i, rule, params)
            assert why.exit_layer == ref_layers[i], (rule, params, i)
            assert why.sentence and str(why.exit_layer) in why.sentence or str(params.get("layer")) in why.sentence


# ---- the real batched predictor, on a tiny random model ------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from core.models.multi_exit import ModelConfig, MultiExitModel
    from tests.conftest import write_tiny_backbone

    torch.set_num_threads(1)
    backbone = write_tiny_backbone(tmp_path_factory.mktemp("tiny") / "bert", layers=4)
    torch.manual_seed(0)
    model = MultiExitModel(ModelConfig(backbone=backbone, num_labels=3, lte=True)).eval()
    with torch.no_grad():   # exits that disagree and are sure enough for every rule to fire somewhere
        for part in (model.exits, model.lte_heads):
            for p in part.parameters():
                p.normal_(std=1.5)
    texts = [f"the film {w} was {v}" for w in ("good", "bad", "dull", "fun") for v in ("very", "not", "so")]
    x = model.tokenize(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**x)
    probs = out.logits.float().softmax(-1).numpy()
    return model, texts, probs, out.confidence.numpy()


def predictor_agrees(model, texts, probs, conf, rule, settings):
    from core.serving.predictor import EarlyExitPredictor

    predictor = EarlyExitPredictor(model)
    for params in settings:
        want_layer, want_pred = apply(rule, probs, confidence=conf, **params)
        got = predictor.predict_batch(texts, strategy=rule, params=params, batch_size=5)
        assert [r.exit_layer for r in got] == want_layer.tolist(), (rule, params)
        assert [r.pred for r in got] == want_pred.tolist(), (rule, params)


@pytest.mark.parametrize("rule", [r for r in RULES if "labels" not in STRATEGIES[r].needs])
def test_batched_predictor_equals_apply(tiny_model, rule):
    model, texts, probs, conf = tiny_model
    f = features(probs, confidence=conf)
    predictor_agrees(model, texts, probs, conf, rule, contract_settings(rule, f)[:4])


# ---- a complete new rule, registered in one place --------------------------------------------------------
def _margin(f: ExitFeatures, *, threshold: float):
    top2 = np.sort(f.planes, axis=0)[-2:]                  # [2, L, N]
    return top2[1] - top2[0] >= threshold, None, None


MARGIN = Strategy(
    "margin", _margin, {"threshold": Param(float, 0.5, 0.0, 1.0, help="top-2 gap")},
    title="Top-2 margin", source="a test", tab="Margin", color="#0d9488",
    explain="Stop once the top two classes are far enough apart.", labels={"threshold": "Margin threshold"},
    knob="threshold", signal=lambda f, p: ((t := np.sort(f.planes, axis=0)[-2:])[1] - t[0], False, None, None),
    signal_name="top-2 margin",
    grid=lambda f: [{"threshold": float(t)} for t in np.linspace(0, 1, 21)])


@pytest.fixture
def margin_rule():
    register(MARGIN)
    yield "margin"
    STRATEGIES.pop("margin")


def test_a_complete_rule_registered_in_one_place_gets_every_feature(margin_rule, tiny_model):
    f = FEATS
    # exact curves: one point per distinct exit configuration, matching apply
    curve = rule_curves(CACHE, "margin", f)[0]
    assert curve.knob == "threshold" and len(curve.knobs) > 10
    for j in range(0, len(curve.knobs), 7):
        exits, _ = apply_features("margin", f, threshold=float(curve.knobs[j]))
        assert exits.mean() == pytest.approx(curve.mean_exit_layer[j])
    # a quantile slider
    stops = knob_scale.stops_for(CACHE, "margin", "threshold", {}, 0.0, 1.0, feats=f)
    assert stops is not None and len(stops) > 50
    # a why-sentence with the numbers it read
    exits, _ = apply_features("margin", f, threshold=0.4)
    i = int(np.flatnonzero(exits < CACHE.L)[0])
    why = explain(CACHE, i, "margin", {"threshold": 0.4})
    assert why.exit_layer == exits[i] and "Top-2 margin" in why.sentence and ">= 0.400" in why.sentence
    # calibration
    cal = calibrate(CACHE, "margin", epsilon=0.2, delta=0.2, feats=f)
    assert cal.strategy == "margin" and "threshold" in cal.params
    # the goal picker
    table = metrics.goal_table(CACHE, max_drop=0.05, strategies=["margin", "entropy"], feats=f)
    assert "margin" in set(table["strategy"])
    point = metrics.pick(CACHE, min_layer_speedup=1.2, strategies=["margin"], feats=f)
    assert point.strategy == "margin" and point.layer_speedup >= 1.2
    # the batched predictor
    model, texts, probs, conf = tiny_model
    predictor_agrees(model, texts, probs, conf, "margin", contract_settings("margin", features(probs))[:3])
