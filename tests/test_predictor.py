"""core.serving.predictor: real layer-by-layer early exit decides exactly as strategies.apply on full probs."""

import numpy as np
import pytest
import torch

from core.engine import strategies
from core.models.multi_exit import MultiExitModel
from core.serving.predictor import EarlyExitPredictor
from tests.helpers import (
    SPREAD_CLASSES,
    SPREAD_LAYERS,
    TEXTS,
    full_probs,
    gap_threshold,
    signals,
    spread_model,
    strategy_cases,
)

L, K = SPREAD_LAYERS, SPREAD_CLASSES
pytestmark = pytest.mark.usefixtures("one_thread")


def test_predictor_matches_apply_on_full_forward(spread_backbone):
    model = spread_model(spread_backbone, bypass=True, lte=True)
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


def test_predict_result_fields(spread_backbone):
    model = spread_model(spread_backbone, lte=True, exit_kind="mha")
    probs, conf = full_probs(model, TEXTS[:3])
    pred = EarlyExitPredictor(model)
    for j, t in enumerate(TEXTS[:3]):
        r = pred.predict(t, strategy="budget", layer=3)
        assert r.exit_layer == 3 and len(r.layer_ms) == 3 and r.probs.shape == (3, K)
        assert r.probs.dtype == np.float32 and r.latency_ms >= sum(r.layer_ms) > 0 and r.tokenize_ms > 0
        np.testing.assert_allclose(r.probs, probs[j, :3], atol=1e-5)
        np.testing.assert_allclose(r.confidence, conf[j, :3], atol=1e-5)
        assert r.pred == int(probs[j, 2].argmax())


def test_text_pairs(spread_backbone):
    model = spread_model(spread_backbone)
    pairs = [("the film", "was very good"), ("dull", "not funny at all , a boring movie")]
    x = model.tokenize([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = model(**x).logits.softmax(-1).numpy()
    pred = EarlyExitPredictor(model)
    for j, (a, b) in enumerate(pairs):
        np.testing.assert_allclose(pred.predict(a, b, strategy="budget", layer=L).probs, probs[j], atol=1e-5)


def test_fast_tokenization_equals_the_tokenizer(spread_backbone):
    model = spread_model(spread_backbone)
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


def test_training_model_is_run_in_eval_mode_and_restored(spread_backbone):
    model = spread_model(spread_backbone)
    probs, _ = full_probs(model, TEXTS[:1])
    model.train()  # dropout on: the predictor must still be deterministic
    pred = EarlyExitPredictor(model)
    r = pred.predict(TEXTS[0], strategy="budget", layer=L)
    np.testing.assert_allclose(r.probs, probs[0], atol=1e-5)
    assert model.training and model.encoder.training


def test_latency_helpers(spread_backbone):
    pred = EarlyExitPredictor(spread_model(spread_backbone, bypass=True))
    embed_ms, layer_ms = pred.measure_layer_ms(TEXTS[:2], repeats=2)
    assert embed_ms > 0 and layer_ms.shape == (L,) and (layer_ms > 0).all()
    assert pred.full_latency_ms("the film", repeats=2) > 0
    embed_ms, _ = pred.measure_layer_ms([("the film", "good")], repeats=1)
    assert embed_ms > 0


def test_bad_requests_raise(spread_backbone):
    pred = EarlyExitPredictor(spread_model(spread_backbone))
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


# ---- the same predictor on a model whose modules were swapped (issue 22) ---------------------------
def int8(model):
    """torch.ao dynamic int8 on every nn.Linear of the whole multi-exit model (a quantized deep copy)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch 2.13 calls torch.ao's quantized tensors deprecated (torchao)
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def per_row_probs(model, texts):
    """The model's own cache built one row at a time (no padding, no batch-mates): [N, L, K], [N, L]."""
    rows = [full_probs(model, [t]) for t in texts]
    return np.concatenate([p for p, _ in rows]), np.concatenate([c for _, c in rows])


@pytest.mark.parametrize("swap", ["int8", "bfloat16", "float16"])
def test_swapped_modules_decide_as_their_own_cache(spread_backbone, swap):
    """Dynamic int8 (torch.ao) or half precision on CPU: predict() and the batched predictor at batch
    size 1 make exactly the decisions `apply` makes on the swapped model's own per-row cache, and a
    padded batch through the batched predictor equals the swapped model's own forward on that batch."""
    fp32 = spread_model(spread_backbone, bypass=True, lte=True, exit_kind="mha")
    model = int8(fp32) if swap == "int8" else fp32.to(getattr(torch, swap))
    if swap == "int8":
        assert not any(type(m) is torch.nn.Linear for m in model.modules())
        assert model.runner.encoder is model.encoder and model.runner.layers[0] is model.encoder.encoder.layer[0]
    probs, conf = per_row_probs(model, TEXTS)
    assert np.abs(probs - per_row_probs(spread_model(spread_backbone, bypass=True, lte=True, exit_kind="mha"),
                                        TEXTS)[0]).max() > 1e-3  # the swap changed the numbers
    pred = EarlyExitPredictor(model)
    for strategy, params in strategy_cases(probs, conf):
        want_layer, want_pred = strategies.apply(strategy, probs, confidence=conf, **params)
        one = [pred.predict(t, strategy=strategy, **params) for t in TEXTS]
        batched = pred.predict_batch(TEXTS, batch_size=1, strategy=strategy, params=params)
        for got in (one, batched):
            assert [r.exit_layer for r in got] == want_layer.tolist(), (strategy, params)
            assert [r.pred for r in got] == want_pred.tolist(), (strategy, params)
    x = model.tokenize(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**x)
    got = pred.predict_batch(TEXTS, batch_size=len(TEXTS), strategy="budget", params={"layer": L})
    np.testing.assert_allclose(np.stack([r.probs for r in got]), out.logits.float().softmax(-1).numpy(),
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.stack([r.confidence for r in got]), out.confidence.float().numpy(),
                               atol=1e-6, rtol=0)
