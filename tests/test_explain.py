"""core.app.explain: the why-sentence of Traces agrees with the engine's decision, with the numbers it read."""
import re

import numpy as np
import pytest

from core.app.explain import explain
from core.engine.strategies import apply
from tests.conftest import synthetic_cache

CACHE = synthetic_cache(n=60, num_layers=6, k=3, seed=7, lte=True)
SETTINGS = {"budget": {"layer": 3}, "entropy": {"threshold": 0.5}, "maxprob": {"threshold": 0.8},
            "patience": {"patience": 2}, "pcee": {"patience": 2, "threshold": 0.5, "signal": "entropy"},
            "dge": {"patience": 2, "threshold": 0.9, "measure": "kd"}, "voting": {"k": 0.5, "delta": 1.5},
            "lte": {"threshold": 0.6}, "oracle": {}}


@pytest.mark.parametrize("strategy", list(SETTINGS))
def test_exit_layer_matches_the_engine(strategy):
    params = SETTINGS[strategy]
    exits, _ = apply(strategy, CACHE.probs, labels=CACHE.labels, confidence=CACHE.confidence, **params)
    for pos in range(0, 60, 7):
        why = explain(CACHE, pos, strategy, params)
        assert why.exit_layer == exits[pos]
        assert f"layer {exits[pos]}" in why.sentence or f"layer {params.get('layer')}" in why.sentence


def test_entropy_sentence_quotes_the_value_below_the_threshold():
    p = CACHE.probs.astype(np.float64)
    H = -(p * np.log(np.clip(p, 1e-12, None))).sum(-1) / np.log(3)
    exits, _ = apply("entropy", CACHE.probs, threshold=0.5)
    pos = int(np.flatnonzero(exits < 6)[0])
    why = explain(CACHE, pos, "entropy", {"threshold": 0.5})
    value = float(re.search(r"entropy ([0-9.]+) < 0\.500", why.sentence).group(1))
    assert value == pytest.approx(H[pos, exits[pos] - 1], abs=5e-4) and value < 0.5
    assert why.threshold == 0.5 and why.signal == "entropy"


def test_a_sample_that_never_exits_says_so():
    why = explain(CACHE, 0, "entropy", {"threshold": 0.0})
    assert why.exit_layer == 6 and "last layer 6" in why.sentence


def test_patience_window_ends_at_the_exit():
    for pos in range(60):
        why = explain(CACHE, pos, "pcee", SETTINGS["pcee"])
        if why.window:
            assert why.window[1] == why.exit_layer and why.window[1] - why.window[0] + 1 == 2
