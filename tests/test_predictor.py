"""core.serving.predictor: real layer-by-layer early exit decides exactly as strategies.apply on full probs."""

import numpy as np
import pytest
import torch

from core.engine import strategies
from core.models.multi_exit import ModelConfig, MultiExitModel
from core.serving.predictor import EarlyExitPredictor
from tests.conftest import write_tiny_backbone

WORDS = "the a film movie good bad great dull funny boring is was and but not very it this".split()
TEXTS = ["the film was very good!", "a dull , boring movie", "funny", "it is not great but it was fun",
         "bad", "this movie is very very dull", "it was not bad , it was good", "boring but funny"]
L, K = 4, 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster and steadier on a shared machine (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return write_tiny_backbone(tmp_path_factory.mktemp("tiny") / "bert", layers=L, words=WORDS, punctuation=".,!?'",
                               pad_vocab=False, fast=False)


def spread_model(backbone, **kw):
    """A random model whose exits disagree and are confident enough for every rule to fire somewhere."""
    torch.manual_seed(0)
    model = MultiExitModel(ModelConfig(backbone=backbone, num_labels=K, **kw)).eval()
    with torch.no_grad():
        for ex in model.exits:
            for p in ex.parameters():
                p.normal_(std=1.5)
        for part in (model.bypasses or []), (model.lte_heads or []):
            for mod in part:
                for p in mod.parameters():
                    p.normal_(std=1.0)
    return model


def full_probs(model, texts):
    x = model.tokenize(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**x)
    conf = None if out.confidence is None else out.confidence.numpy()
    return out.logits.float().softmax(-1).numpy(), conf


def gap_threshold(values, q):
    """A threshold near quantile q of `values` in the middle of a gap >= 1e-3 (no ties either side)."""
    v = np.unique(np.round(np.asarray(values, dtype=np.float64).ravel(), 9))
    v = v[np.isfinite(v)]
    gaps = np.diff(v)
    ok = np.flatnonzero(gaps > 1e-3)
    j = ok[np.argmin(np.abs(ok - q * len(v)))]
    return float((v[j] + v[j + 1]) / 2)


def signals(probs):
    """The quantities rules threshold, computed here from their definitions (for tie-free thresholds)."""
    logp = np.log(np.clip(probs, 1e-12, None))
    entropy = -(probs * logp).sum(-1) / np.log(K)                                   # [N, L]
    kd = -np.einsum("nmk,nik->nmi", probs, logp)                                    # [N, m, i]
    mix = 0.5 * (probs[:, :, None] + probs[:, None, :])                             # [N, m, i, K]
    kl = lambda p, q: (p * (np.log(np.clip(p, 1e-12, None)) - np.log(np.clip(q, 1e-12, None)))).sum(-1)
    js = 0.5 * kl(probs[:, :, None], mix) + 0.5 * kl(probs[:, None, :], mix)
    lower = np.tri(L, k=-1, dtype=bool)
    onehot = probs.argmax(-1)[..., None] == np.arange(K)                            # [N, L, K]
    top_votes = np.cumsum(onehot, 1).max(-1)                                        # [N, L]
    return dict(entropy=entropy, maxprob=probs.max(-1), kd=kd[:, lower], js=js[:, lower], votes=top_votes)


def strategy_cases(probs, conf):
    s = signals(probs)
    cases = [("budget", dict(layer=m)) for m in range(1, L + 1)]
    for q in (0.25, 0.6):
        cases += [("entropy", dict(threshold=gap_threshold(s["entropy"], q))),
                  ("maxprob", dict(threshold=gap_threshold(s["maxprob"], q))),
                  ("lte", dict(threshold=gap_threshold(conf, q))),
                  ("dge", dict(patience=1, threshold=gap_threshold(s["kd"], q), measure="kd")),
                  ("dge", dict(patience=2, threshold=gap_threshold(s["js"], q), measure="js"))]
    cases += [("patience", dict(patience=p)) for p in (1, 2)]
    for ens in (False, True):
        cases += [("pcee", dict(patience=2, threshold=gap_threshold(s["entropy"], 0.5), signal="entropy",
                                ensemble=ens)),
                  ("pcee", dict(patience=1, threshold=gap_threshold(s["maxprob"], 0.5), signal="maxprob",
                                ensemble=ens)),
                  ("pcee", dict(patience=2, threshold=gap_threshold(conf, 0.4), signal="learned", ensemble=ens))]
    for k in (0.0, 0.5):
        v = s["votes"] / (np.arange(L) + 1.0) ** k
        cases.append(("voting", dict(k=k, delta=gap_threshold(v, 0.6))))
    return cases


def test_predictor_matches_apply_on_full_forward(backbone):
    model = spread_model(backbone, bypass=True, lte=True)
    probs, conf = full_probs(model, TEXTS)
    pred = EarlyExitPredictor(model)
    for strategy, params in strategy_cases(probs, conf):
        want_layer, want_pred = strategies.apply(strategy, probs, confidence=conf, **params)
        got = [pred.predict(t, strategy=strategy, **params) for t in TEXTS]
        assert [r.exit_layer for r in got] == want_layer.tolist(), (strategy, params)
        assert [r.pred for r in got] == want_pred.tolist(), (strategy, params)
    # the rules above really do exit at different layers on this model
    layers, _ = strategies.apply("entropy", probs, threshold=gap_threshold(signals(probs)["entropy"], 0.5))
    assert len(set(layers.tolist())) > 1


def test_predict_result_fields(backbone):
    model = spread_model(backbone, lte=True, exit_kind="mha")
    probs, conf = full_probs(model, TEXTS[:3])
    pred = EarlyExitPredictor(model)
    for j, t in enumerate(TEXTS[:3]):
        r = pred.predict(t, strategy="budget", layer=3)
        assert r.exit_layer == 3 and len(r.layer_ms) == 3 and r.probs.shape == (3, K)
        assert r.probs.dtype == np.float32 and r.latency_ms >= sum(r.layer_ms) > 0 and r.tokenize_ms > 0
        np.testing.assert_allclose(r.probs, probs[j, :3], atol=1e-5)
        np.testing.assert_allclose(r.confidence, conf[j, :3], atol=1e-5)
        assert r.pred == int(probs[j, 2].argmax())


def test_text_pairs(backbone):
    model = spread_model(backbone)
    pairs = [("the film", "was very good"), ("dull", "not funny at all , a boring movie")]
    x = model.tokenize([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = model(**x).logits.softmax(-1).numpy()
    pred = EarlyExitPredictor(model)
    for j, (a, b) in enumerate(pairs):
        np.testing.assert_allclose(pred.predict(a, b, strategy="budget", layer=L).probs, probs[j], atol=1e-5)


def test_fast_tokenization_equals_the_tokenizer(backbone):
    model = spread_model(backbone)
    model.cfg.max_length = 9  # forces truncation of the long inputs
    pred = EarlyExitPredictor(model)
    assert pred._backend is not None
    for a, b in [("the film was very good!", None), ("a very very long and dull and boring movie", None),
                 ("funny", "this movie is very very dull and it is not great"), ("zzz qq", "x")]:
        ref = model.tokenize(a, b, return_tensors="pt")
        ids, tt = pred._encode(a, b)
        assert torch.equal(ids, ref["input_ids"])
        if tt is None:  # single segment: None stands for all zeros
            assert not ref["token_type_ids"].any()
        else:
            assert torch.equal(tt, ref["token_type_ids"]) and b is not None


def test_training_model_is_run_in_eval_mode_and_restored(backbone):
    model = spread_model(backbone)
    probs, _ = full_probs(model, TEXTS[:1])
    model.train()  # dropout on: the predictor must still be deterministic
    pred = EarlyExitPredictor(model)
    r = pred.predict(TEXTS[0], strategy="budget", layer=L)
    np.testing.assert_allclose(r.probs, probs[0], atol=1e-5)
    assert model.training and model.encoder.training


def test_latency_helpers(backbone):
    pred = EarlyExitPredictor(spread_model(backbone, bypass=True))
    embed_ms, layer_ms = pred.measure_layer_ms(TEXTS[:2], repeats=2)
    assert embed_ms > 0 and layer_ms.shape == (L,) and (layer_ms > 0).all()
    assert pred.full_latency_ms("the film", repeats=2) > 0
    embed_ms, _ = pred.measure_layer_ms([("the film", "good")], repeats=1)
    assert embed_ms > 0


def test_bad_requests_raise(backbone):
    pred = EarlyExitPredictor(spread_model(backbone))
    with pytest.raises(ValueError, match="unknown strategy"):
        pred.predict("good", strategy="fastest")
    with pytest.raises(ValueError, match="out of range"):
        pred.predict("good", strategy="budget", layer=L + 1)
    with pytest.raises(ValueError, match="learned exit heads"):
        pred.predict("good", strategy="lte", threshold=0.5)
    with pytest.raises(ValueError, match="learned exit heads"):
        pred.predict("good", strategy="pcee", signal="learned")
    with pytest.raises(ValueError, match="labels"):
        pred.predict("good", strategy="oracle")
    with pytest.raises(ValueError, match="one text"):
        pred.predict(["good", "bad"], strategy="budget", layer=1)
    with pytest.raises(ValueError, match="at least one text"):
        pred.measure_layer_ms([])


@pytest.mark.integration
def test_default_backbone_predict():
    torch.manual_seed(0)
    model = MultiExitModel.from_config({"num_labels": 2})
    r = EarlyExitPredictor(model).predict("a gripping, funny film", strategy="budget", layer=2)
    assert r.exit_layer == 2 and r.probs.shape == (2, 2)
