"""`core.train --precisions int8`: the precision caches written at the end of training, through
core.serving.cache_variant's make_variant (what `python -m core.cache_variant` runs); the Train form's field."""
from __future__ import annotations

import numpy as np
import pytest

from core.app import train_form
from core.engine.cache import ExitCache, precision_caches
from core.runs.folders import read_config
from core.training.config import precision_list, resolve_config
from tests.helpers import base_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_with_int8(tiny, tmp_path_factory):
    from core.training.run import train

    out = tmp_path_factory.mktemp("runs") / "tiny-int8"
    return train(base_config(tiny, out, method="joint", precisions="int8"))


def test_training_writes_the_int8_cache_as_cache_variant_does(run_with_int8):
    from core.serving import cache_variant as cv

    run = run_with_int8
    assert set(precision_caches(run)) == {"fp32", "int8"}
    int8, fp32 = ExitCache.load(run / "cache-int8.npz"), ExitCache.load(run)
    assert int8.precision == "int8" and fp32.precision == "fp32"
    assert sorted(int8.latency["batches"], key=int) == ["1", "32"] and fp32.latency["precision"] == "fp32"
    assert "--precisions int8" in int8.meta["command"]
    np.testing.assert_array_equal(int8.labels, fp32.labels)
    # the same probabilities the command's code gives from the saved weights
    _, pred = cv.load_at(run, "int8")
    probs, _ = cv.exit_probs(pred, int8.get_texts(), batch_size=1)
    np.testing.assert_allclose(probs, int8.probs, atol=1e-6)
    assert read_config(run)["precisions"] == "int8"
    assert "--precisions int8" in read_config(run)["canonical_command"]


def test_precisions_option_is_checked():
    assert precision_list("int8, bf16,int8") == ["int8", "bf16"] and precision_list(None) == []
    with pytest.raises(ValueError, match="'int4' is not a precision to add; valid: int8, fp16, bf16"):
        resolve_config({"out": "checkpoints/x", "precisions": "int4"})
    with pytest.raises(ValueError, match="fp32 is the run's own cache"):
        resolve_config({"out": "checkpoints/x", "precisions": "fp32"})
    with pytest.raises(ValueError, match="needs them written"):
        resolve_config({"out": "checkpoints/x", "precisions": "int8", "save_weights": False})
    assert resolve_config({"out": "checkpoints/x", "precisions": " INT8 "})["precisions"] == "int8"
    assert resolve_config({"out": "checkpoints/x"})["precisions"] is None


def test_train_form_offers_int8():
    field = train_form.fields()["precisions"]
    assert field.choices == ("", "int8") and field.name in train_form.SECTIONS["output"]
    assert "precisions" in [f.name for f in train_form.visible_fields("output", {"method": "joint"})]
    assert "precisions" not in [f.name for f in train_form.visible_fields("output", {"save_weights": False})]
    argv = train_form.build_argv({"method": "joint", "precisions": "int8"})
    assert argv[argv.index("--precisions") + 1] == "int8"
    assert "--precisions" not in train_form.build_argv({"method": "joint", "precisions": ""})
