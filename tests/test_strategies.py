"""Exit strategies: hand-worked examples, edge cases, properties, and equivalence with a plain loop."""
import numpy as np
import pytest

from core.engine import strategies
from tests.helpers import random_cache
from tests.reference_loop import exit_all

# Sample A, K = 2, L = 4 (dyadic numbers, so float32 holds them exactly):
#   p1 = [.625, .375]  argmax 0  max .625   H/log2 = .954434
#   p2 = [.25,  .75 ]  argmax 1  max .75    H/log2 = .811278
#   p3 = [.125, .875]  argmax 1  max .875   H/log2 = .543564
#   p4 = [.0625,.9375] argmax 1  max .9375  H/log2 = .337290
A = np.array([[[.625, .375], [.25, .75], [.125, .875], [.0625, .9375]]], dtype=np.float32)

# Sample B, K = 3, L = 3:
#   q1 = [.25, .4375, .3125] argmax 1  max .4375
#   q2 = [.125, .75, .125]   argmax 1  max .75
#   q3 = [.5, .0625, .4375]  argmax 0  max .5
B = np.array([[[.25, .4375, .3125], [.125, .75, .125], [.5, .0625, .4375]]], dtype=np.float32)


def run(name, probs, **kw):
    e, p = strategies.apply(name, probs, **kw)
    return int(e[0]), int(p[0])


@pytest.mark.parametrize("layer, expected", [(1, (1, 0)), (2, (2, 1)), (4, (4, 1))])
def test_budget(layer, expected):
    assert run("budget", A, layer=layer) == expected


@pytest.mark.parametrize("threshold, expected", [
    (0.9, (2, 1)),    # .954 >= .9, .811 < .9 -> layer 2
    (0.6, (3, 1)),    # .543 is the first below .6
    (0.3, (4, 1)),    # nothing below .3 -> never fires -> layer L, its prediction
    (1.0, (1, 0)),    # .954 < 1 -> layer 1
    (0.0, (4, 1)),    # entropy < 0 never holds
])
def test_entropy(threshold, expected):
    assert run("entropy", A, threshold=threshold) == expected


@pytest.mark.parametrize("threshold, expected", [
    (0.75, (2, 1)),   # .75 >= .75 (ties fire: >=)
    (0.9, (4, 1)),    # .9375 is the first >= .9
    (0.95, (4, 1)),   # never -> L
    (0.0, (1, 0)),    # everything >= 0
    (1.0, (4, 1)),    # no exit is certain
])
def test_maxprob(threshold, expected):
    assert run("maxprob", A, threshold=threshold) == expected


@pytest.mark.parametrize("patience, expected", [
    (1, (3, 1)),   # argmax 0,1,1,1: cnt = 0,0,1,2 -> cnt_3 = 1 >= 1
    (2, (4, 1)),   # cnt_4 = 2
    (3, (4, 1)),   # never (cnt <= L-1 = 3 needs 4 equal layers... here max 2) -> L
    (9, (4, 1)),   # patience >= L never fires
])
def test_patience(patience, expected):
    assert run("patience", A, patience=patience) == expected


def test_patience_k3():
    # B: argmax 1,1,0 -> cnt = 0,1,0: patience 1 fires at layer 2 with prediction 1
    assert run("patience", B, patience=1) == (2, 1)
    assert run("patience", B, patience=2) == (3, 0)


def test_pcee_entropy():
    # A with entropy < .9: confident F,T,T,T -> pct 0,1,2,3
    assert run("pcee", A, patience=2, threshold=0.9) == (3, 1)
    assert run("pcee", A, patience=3, threshold=0.9) == (4, 1)
    assert run("pcee", A, patience=1, threshold=0.6) == (3, 1)   # .543 < .6 at layer 3
    assert run("pcee", A, patience=4, threshold=0.9) == (4, 1)   # never -> L


def test_pcee_maxprob_and_ensemble():
    # B with max-prob >= .5: confident F,T,T -> pct 0,1,2 -> patience 2 fires at layer 3
    assert run("pcee", B, patience=2, threshold=0.5, signal="maxprob") == (3, 0)   # argmax q3 = 0
    # ensemble of layers 1..3 (§4.6.3): mean of q1, q2, q3 = [.2917, .4167, .2917] -> class 1
    assert run("pcee", B, patience=2, threshold=0.5, signal="maxprob", ensemble=True) == (3, 1)
    # variant: mean of the confident run q2, q3 = [.3125, .40625, .28125] -> class 1
    assert run("pcee", B, patience=2, threshold=0.5, signal="maxprob", ensemble=True,
               ensemble_span="confident_run") == (3, 1)
    # patience 3 never fires; without ensemble layer L's argmax (0), with ensemble layers 1..L -> class 1
    assert run("pcee", B, patience=3, threshold=0.5, signal="maxprob") == (3, 0)
    assert run("pcee", B, patience=3, threshold=0.5, signal="maxprob", ensemble=True) == (3, 1)
    assert run("pcee", B, patience=3, threshold=0.5, signal="maxprob", ensemble=True,
               ensemble_span="confident_run") == (3, 1)


# The example (K = 2, L = 6): p1..p3 = [.15, .85], p4 = p5 = [.95, .05], p6 = [.4, .6].
C = np.array([[[.15, .85]] * 3 + [[.95, .05]] * 2 + [[.4, .6]]])


def test_pcee_ensemble_is_over_every_passed_layer_pcee_bert_4_6_3():
    # max-prob >= .9: confident F,F,F,T,T,F -> pct 0,0,0,1,2,0 -> patience 2 fires at layer 5
    assert run("pcee", C, patience=2, threshold=0.9, signal="maxprob") == (5, 0)
    # §4.6.3: layers 1..5: (3 x .15 + 2 x .95) / 5 = .47 -> [.47, .53] -> class 1
    assert run("pcee", C, patience=2, threshold=0.9, signal="maxprob", ensemble=True) == (5, 1)
    # the confident-run variant averages layers 4-5 only: [.95, .05] -> class 0
    assert run("pcee", C, patience=2, threshold=0.9, signal="maxprob", ensemble=True,
               ensemble_span="confident_run") == (5, 0)
    # decide on the 5-layer prefix says the same as apply
    assert strategies.decide("pcee", C[0, :5], patience=2, threshold=0.9, signal="maxprob", ensemble=True) == (True, 1)
    # at layer 4 it does not fire; its ensemble there would be [.35, .65] -> class 1 (p4 alone: class 0)
    assert strategies.decide("pcee", C[0, :4], patience=2, threshold=0.9, signal="maxprob", ensemble=True) == (False, 1)


def test_pcee_learned():
    conf = np.array([[0.2, 0.6, 0.9, 0.1]], dtype=np.float32)
    # confident (>= .5): F,T,T,F -> pct 0,1,2,0
    assert run("pcee", A, confidence=conf, patience=2, threshold=0.5, signal="learned") == (3, 1)
    assert run("pcee", A, confidence=conf, patience=3, threshold=0.5, signal="learned") == (4, 1)


def test_dge_kd():
    # S_kd(p_m, p_i) = -sum_k p_m(k) log p_i(k):
    #   m=2: S(p2,p1) = .25*.470004 + .75*.980829 = .853123
    #   m=3: S(p3,p1) = .916975, S(p3,p2) = .125*1.386294 + .875*.287682 = .425009
    #   m=4: S(p4,p1) = .948902, S(p4,p2) = .356345, S(p4,p3) = .255150
    assert run("dge", A, patience=1, threshold=0.5) == (3, 1)   # cnt_3 = 1 (.425)
    assert run("dge", A, patience=2, threshold=0.5) == (4, 1)   # cnt_4 = 2 (.356, .255)
    assert run("dge", A, patience=1, threshold=0.3) == (4, 1)   # only .255 < .3
    assert run("dge", A, patience=1, threshold=0.9) == (2, 1)   # .853 < .9
    assert run("dge", A, patience=1, threshold=0.2) == (4, 1)   # never -> L
    assert run("dge", A, patience=5, threshold=9.0) == (4, 1)   # patience > L-1 never fires


def test_dge_kl():
    # KL(p_m||p_i) = S_kd - H(p_m) (natural log): KL(p2||p1) = .853123 - .562335 = .290788;
    # KL(p3||p2) = .425009 - .376770 = .048239; KL(p3||p1) = .540205
    assert run("dge", A, patience=1, threshold=0.1, measure="kl") == (3, 1)
    assert run("dge", A, patience=1, threshold=0.3, measure="kl") == (2, 1)
    assert run("dge", A, patience=2, threshold=0.6, measure="kl") == (3, 1)  # .540 and .048 < .6


def test_dge_js_identical_layers_agree():
    # JS of a distribution with itself is 0 < any positive threshold; JS is at most log 2
    same = np.array([[[.75, .25], [.75, .25], [.75, .25]]], dtype=np.float32)
    assert run("dge", same, patience=1, threshold=1e-6, measure="js") == (2, 0)
    assert run("dge", A, patience=1, threshold=np.log(2) + 1e-3, measure="js") == (2, 1)


def test_voting():
    # B: argmax 1,1,0. k = .5: V1 = 1/1 = 1, V2 = 2/sqrt2 = 1.414, V3 = 2/sqrt3 = 1.155
    assert run("voting", B, k=0.5, delta=1.0) == (1, 1)
    assert run("voting", B, k=0.5, delta=1.4) == (2, 1)
    # delta 1.5 never reached: vote over all 3 layers: class 1 has 2 votes -> 1 (layer 3 alone says 0)
    assert run("voting", B, k=0.5, delta=1.5) == (3, 1)
    # k = 0: V_l = top count: 1, 2, 2 -> delta 2 fires at layer 2
    assert run("voting", B, k=0.0, delta=2.0) == (2, 1)


def test_voting_ties_go_to_latest_layer():
    up = np.array([[[.75, .25], [.25, .75]]], dtype=np.float32)     # argmax 0, 1: tie 1-1
    down = np.array([[[.25, .75], [.75, .25]]], dtype=np.float32)   # argmax 1, 0: tie 1-1
    assert run("voting", up, k=0.0, delta=5.0) == (2, 1)    # layer 2 is the latest tied layer
    assert run("voting", down, k=0.0, delta=5.0) == (2, 0)
    # K = 3, argmax 0,1,1,0: classes 0 and 1 tie at 2 votes; layer 4 (class 0) is the latest
    c = np.array([[[.5, .25, .25], [.25, .5, .25], [.25, .5, .25], [.5, .25, .25]]], dtype=np.float32)
    assert run("voting", c, k=0.0, delta=9.0) == (4, 0)
    # at layer 3 the majority is 1 (2 votes vs 1): V_3 = 2 >= 2 fires there with class 1
    # k = 0, delta 2: V = 1, 1 (tie 1-1), 2 -> fires at layer 3, where class 1 leads 2 votes to 1
    assert run("voting", c, k=0.0, delta=2.0) == (3, 1)


def test_lte():
    conf = np.array([[0.2, 0.6, 0.9, 0.1]], dtype=np.float32)
    assert run("lte", A, confidence=conf, threshold=0.5) == (2, 1)
    assert run("lte", A, confidence=conf, threshold=0.95) == (4, 1)
    assert run("lte", A, confidence=conf, threshold=0.0) == (1, 0)
    assert run("lte", A, confidence=conf, threshold=1.0) == (4, 1)


def test_oracle():
    assert run("oracle", A, labels=np.array([0])) == (1, 0)
    assert run("oracle", A, labels=np.array([1])) == (2, 1)
    # B's layers predict 1,1,0: nobody predicts class 2 -> layer L with its prediction
    assert run("oracle", B, labels=np.array([2])) == (3, 0)


def test_single_layer_everything_exits_at_one():
    one = np.array([[[.25, .75]], [[.625, .375]]], dtype=np.float32)
    conf = np.array([[0.1], [0.9]], dtype=np.float32)
    for name, params in [("budget", {"layer": 1}), ("entropy", {"threshold": 0.0}), ("maxprob", {"threshold": 1.0}),
                         ("patience", {"patience": 1}), ("pcee", {"patience": 1, "threshold": 0.0}),
                         ("dge", {"patience": 1, "threshold": 1.0}), ("voting", {"k": 0.0, "delta": 5.0}),
                         ("lte", {"threshold": 0.5}), ("oracle", {})]:
        e, p = strategies.apply(name, one, labels=np.array([0, 1]), confidence=conf, **params)
        assert e.tolist() == [1, 1], name
        assert p.tolist() == [1, 0], name


# ---- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: strategies.apply("nope", A), "unknown strategy 'nope'; valid: budget"),
    (lambda: strategies.apply("entropy", A, threshhold=0.5), "unknown parameter(s) ['threshhold']"),
    (lambda: strategies.apply("budget", A), "needs parameter 'layer'"),
    (lambda: strategies.apply("budget", A, layer=5), "out of range"),
    (lambda: strategies.apply("patience", A, patience=0), "out of range"),
    (lambda: strategies.apply("patience", A, patience=1.5), "must be an integer"),
    (lambda: strategies.apply("pcee", A, signal="vibes"), "must be one of entropy, maxprob, learned"),
    (lambda: strategies.apply("pcee", A, signal="learned"), "needs `confidence`"),
    (lambda: strategies.apply("lte", A), "needs `confidence`"),
    (lambda: strategies.apply("oracle", A), "needs `labels`"),
    (lambda: strategies.apply("dge", A, measure="cosine"), "must be one of kd, kl, js"),
    (lambda: strategies.apply("entropy", A[0]), "probs must be [N, L, K]"),
    (lambda: strategies.apply("entropy", np.full((1, 2, 2), np.nan)), "NaN"),
    (lambda: strategies.apply("oracle", A, labels=np.array([0, 1])), "labels must have shape [1]"),
    (lambda: strategies.apply("lte", A, confidence=np.zeros((1, 3))), "confidence must have shape [1, 4]"),
    (lambda: strategies.apply("pcee", A, ensemble="yes"), "must be True or False"),
    (lambda: strategies.apply("pcee", A, ensemble_span="last"), "must be one of all_passed, confident_run"),
])
def test_errors_name_the_fault(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


# ---- properties on random caches ----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_stricter_threshold_never_exits_earlier(seed):
    probs, labels, conf = random_cache(seed)
    kw = dict(labels=labels, confidence=conf)
    ts = np.linspace(0, 1, 21)
    for name, extra, stricter_is_lower in [("entropy", {}, True), ("maxprob", {}, False), ("lte", {}, False),
                                           ("pcee", {"patience": 2}, True),
                                           ("pcee", {"patience": 2, "signal": "maxprob"}, False)]:
        order = ts[::-1] if stricter_is_lower else ts  # from lenient to strict
        exits = [strategies.apply(name, probs, threshold=t, **extra, **kw)[0] for t in order]
        for looser, stricter in zip(exits, exits[1:]):
            assert (stricter >= looser).all(), name


def test_budget_at_last_layer_is_the_full_model():
    probs, _, _ = random_cache(2, num_layers=5)
    e, p = strategies.apply("budget", probs, layer=5)
    assert (e == 5).all() and (p == probs[:, -1].argmax(-1)).all()


def test_oracle_beats_every_strategy():
    # Every rule predicts some layer's argmax, so it can be right only where the Oracle is.
    # (PCEE's ensemble averages distributions and is left out: its argmax can name a class no layer chose.)
    probs, labels, conf = random_cache(3)
    _, oracle_pred = strategies.apply("oracle", probs, labels=labels)
    best = (oracle_pred == labels).mean()
    settings = [("budget", {"layer": 2}), ("entropy", {"threshold": .5}), ("maxprob", {"threshold": .7}),
                ("patience", {"patience": 2}), ("pcee", {"patience": 2, "threshold": .5}),
                ("dge", {"patience": 2, "threshold": 1.0}), ("voting", {"k": .5, "delta": 1.5}),
                ("lte", {"threshold": .5})]
    for name, params in settings:
        _, pred = strategies.apply(name, probs, labels=labels, confidence=conf, **params)
        assert best >= (pred == labels).mean(), name


EQUIVALENCE_CASES = [
    ("budget", {"layer": 1}), ("budget", {"layer": 3}),
    ("entropy", {"threshold": 0.2}), ("entropy", {"threshold": 0.7}),
    ("maxprob", {"threshold": 0.6}), ("maxprob", {"threshold": 0.95}),
    ("patience", {"patience": 1}), ("patience", {"patience": 3}),
    ("pcee", {"patience": 2, "threshold": 0.5}), ("pcee", {"patience": 1, "threshold": 0.8, "signal": "maxprob"}),
    ("pcee", {"patience": 2, "threshold": 0.4, "signal": "learned"}),
    ("pcee", {"patience": 2, "threshold": 0.6, "ensemble": True}),
    ("pcee", {"patience": 3, "threshold": 0.7, "signal": "maxprob", "ensemble": True}),
    ("pcee", {"patience": 2, "threshold": 0.6, "ensemble": True, "ensemble_span": "confident_run"}),
    ("pcee", {"patience": 3, "threshold": 0.7, "signal": "maxprob", "ensemble": True,
              "ensemble_span": "confident_run"}),
    ("dge", {"patience": 1, "threshold": 0.5}), ("dge", {"patience": 2, "threshold": 0.9, "measure": "kl"}),
    ("dge", {"patience": 2, "threshold": 0.05, "measure": "js"}),
    ("voting", {"k": 0.0, "delta": 2}), ("voting", {"k": 0.5, "delta": 1.3}), ("voting", {"k": 0.75, "delta": 1.1}),
    ("lte", {"threshold": 0.7}), ("oracle", {}),
]


@pytest.mark.parametrize("num_layers, k", [(1, 2), (3, 2), (6, 3), (12, 4)])
@pytest.mark.parametrize("name, params", EQUIVALENCE_CASES)
def test_equivalent_to_per_sample_loop(num_layers, k, name, params):
    if name == "budget":
        params = {"layer": min(params["layer"], num_layers)}
    probs, labels, conf = random_cache(num_layers * 10 + k, n=150, num_layers=num_layers, k=k)
    e, p = strategies.apply(name, probs, labels=labels, confidence=conf, **params)
    ref_e, ref_p = exit_all(name, probs.astype(np.float64), labels=labels, confidence=conf, **params)
    assert e.tolist() == ref_e
    assert p.tolist() == ref_p


@pytest.mark.parametrize("name, params", EQUIVALENCE_CASES)
def test_decide_on_prefixes_matches_apply(name, params):
    """What the layer-by-layer predictor relies on: stopping at the first `decide` that fires."""
    probs, labels, conf = random_cache(7, n=60, num_layers=5, k=3)
    e, p = strategies.apply(name, probs, labels=labels, confidence=conf, **params)
    for i in range(len(probs)):
        for m in range(1, 6):
            fired, pred = strategies.decide(name, probs[i, :m], confidence=conf[i], label=labels[i], **params)
            if fired or m == 5:
                break
        if not fired:
            pred = int(strategies.apply(name, probs[i:i + 1], labels=labels[i:i + 1], confidence=conf[i:i + 1], **params)[1][0])
        assert (m, pred) == (e[i], p[i]), (name, i)
