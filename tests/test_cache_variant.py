"""A run's exit cache at another precision (core.serving.cache_variant) and the latency tables by batch size.

Tiny random BERTs (hidden 32, helpers.SPREAD_LAYERS layers) saved as run folders; int8 is torch.ao's
dynamic quantization on CPU; bf16 is tested on CPU as a code path (CUDA is where it is served)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.engine import metrics, strategies
from core.engine.cache import ExitCache
from core.serving import cache_variant as cv
from tests.conftest import REPO
from tests.helpers import SPREAD_LAYERS, TEXTS, full_probs, spread_model, strategy_cases

pytestmark = pytest.mark.usefixtures("one_thread")


def write_run(folder, backbone) -> "Path":  # noqa: F821
    """A run folder: spread_model's weights, config.json, and its fp32 cache.npz over TEXTS (no latency table)."""
    model = spread_model(backbone, bypass=True, lte=True)
    model.save_pretrained(folder)
    probs, conf = full_probs(model, TEXTS)
    ExitCache(probs=probs, labels=np.arange(len(TEXTS)) % 3, label_names=["a", "b", "c"], texts=list(TEXTS),
              confidence=conf, meta={"task": "tiny", "metric": "accuracy"}).save(folder)
    return folder


@pytest.fixture(scope="module")
def run_int8(tmp_path_factory, spread_backbone):
    run = write_run(tmp_path_factory.mktemp("run") / "tiny-int8", spread_backbone)
    fp32_before = ExitCache.load(run)
    written = cv.make_variant(run, "int8", batch_sizes=(1, 4), batches=2, repeats=1)
    return run, written, fp32_before


def test_int8_cache_equals_the_int8_predictor(run_int8):
    run, written, fp32_before = run_int8
    assert set(written) == {"int8", "fp32"} and written["int8"] == run / "cache-int8.npz"
    cache = ExitCache.load(written["int8"])
    assert cache.precision == "int8" and cache.meta["precision"] == "int8"
    # the probabilities are int8's own, not fp32's
    assert np.abs(cache.probs - fp32_before.probs).max() > 1e-4
    _, pred = cv.load_at(run, "int8")
    seen = set()
    for strategy, params in strategy_cases(cache.probs, cache.confidence):
        want_layer, want_pred = strategies.apply(strategy, cache.probs, confidence=cache.confidence, **params)
        got = pred.predict_batch(TEXTS, batch_size=1, strategy=strategy, params=params)
        assert [r.exit_layer for r in got] == want_layer.tolist(), (strategy, params)
        assert [r.pred for r in got] == want_pred.tolist(), (strategy, params)
        seen |= set(want_layer.tolist())
    assert len(seen) > 2
    # batched, dynamic int8 takes its activation scale from the whole batch: close, not equal
    batched, _ = cv.exit_probs(pred, TEXTS, batch_size=len(TEXTS))
    assert 0 < np.abs(batched - cache.probs).max() < 0.1


def test_variant_round_trips_its_latency_table(run_int8, tmp_path):
    run, written, fp32_before = run_int8
    cache = ExitCache.load(written["int8"])
    lat = cache.latency
    assert lat["precision"] == "int8" and lat["threads"] == 1 and lat["torch"] == torch.__version__
    assert lat["machine"] and sorted(lat["batches"], key=int) == ["1", "4"]
    for size, row in lat["batches"].items():
        assert row["rows"] == int(size) and len(row["layer_ms"]) == len(row["head_ms"]) == SPREAD_LAYERS
    # layer_ms stays the batch-1 layer + exit latency, now of this precision
    np.testing.assert_allclose(cache.layer_ms, np.add(lat["batches"]["1"]["layer_ms"], lat["batches"]["1"]["head_ms"]))
    again = ExitCache.load(cache.save(tmp_path / "again.npz"))
    assert again.latency == lat and again.meta == cache.meta
    np.testing.assert_array_equal(again.probs, cache.probs)
    # fp32's cache gains its table, measured alongside; its probabilities are untouched
    fp32 = ExitCache.load(run)
    assert fp32.latency["precision"] == "fp32" and fp32.precision == "fp32"
    np.testing.assert_array_equal(fp32.probs, fp32_before.probs)
    assert fp32.layer_ms is None  # not measured by core.train here, and not invented
    assert cv.precision_caches(run) == {"fp32": run / "cache.npz", "int8": run / "cache-int8.npz"}
    s = metrics.batch_wallclock_speedup(np.full(cache.N, cache.L), cache, 4, reference=fp32)
    assert np.isfinite(s) and s > 0


def test_old_caches_load_without_latency(tmp_path):
    c = ExitCache(probs=np.full((3, 2, 2), 0.5), labels=[0, 1, 0], label_names=["n", "p"], texts=["a", "b", "c"])
    path = c.save(tmp_path / "cache.npz")
    with np.load(path) as z:
        header = json.loads(bytes(z["header"]).decode())
    assert "latency" not in header  # the format old readers know
    old = ExitCache.load(path)
    assert old.latency is None and old.precision == "fp32"
    committed = ExitCache.load(REPO / "checkpoints" / "rotten_tomatoes-joint")
    assert committed.layer_ms is not None and committed.precision == "fp32"


def table(precision="fp32", scale=1.0, **over):
    row = {"rows": 32, "embed_ms": 3.2 * scale, "layer_ms": [32.0 * scale, 32.0 * scale],
           "head_ms": [3.2 * scale, 3.2 * scale]}
    return {"precision": precision, "machine": "m", "threads": 1, "torch": "x",
            "batches": {"32": row, "1": {**row, "rows": 1}}, **over}


def test_batch_wallclock_speedup_from_tables():
    fp32, int8 = table(), table("int8", 0.5)
    # fp32 full: (3.2 + 64 + 3.2) / 32 = 2.2 ms a row; everyone exiting at layer 1: (3.2 + 32 + 3.2) / 32 = 1.2
    assert metrics.batch_full_latency_ms(fp32, 32) == pytest.approx(2.2)
    assert metrics.batch_wallclock_speedup([1, 1], fp32, 32) == pytest.approx(2.2 / 1.2)
    # int8 at half the time, every head on the way: layer 1 (1.6 + 16 + 1.6) / 32 = 0.6, layer 2 36.8 / 32 = 1.15
    assert metrics.batch_wallclock_speedup([2, 2], int8, 32, reference=fp32) == pytest.approx(2.2 / 1.15)
    assert metrics.batch_wallclock_speedup([1, 2], int8, 32, reference=fp32) == pytest.approx(2.2 / (0.5 * 0.6 + 0.5 * 1.15))
    assert metrics.batch_wallclock_speedup([1, 1], fp32, 1) == pytest.approx(2.2 / 1.2)
    with pytest.raises(ValueError, match="batch size 8.*measured: 1, 32"):
        metrics.batch_wallclock_speedup([1], fp32, 8)
    with pytest.raises(ValueError, match="not fp32"):
        metrics.batch_wallclock_speedup([1], fp32, 32, reference=int8)
    with pytest.raises(ValueError, match="no latency table"):
        metrics.batch_wallclock_speedup([1], None, 32)


@pytest.mark.parametrize("change,field", [
    (lambda t: t.update(threads=0), "latency'.threads"),
    (lambda t: t["batches"]["32"].update(layer_ms=[1.0]), "batches.32.layer_ms"),
    (lambda t: t["batches"].update(x={}), "batches key 'x'"),
    (lambda t: t.update(batches=[]), "latency'.batches"),
])
def test_malformed_latency_table_is_named(tmp_path, change, field):
    t = table()
    change(t)
    with pytest.raises(ValueError, match="latency"):
        ExitCache(probs=np.full((1, 2, 2), 0.5), labels=[0], label_names=["n", "p"], texts=["a"], latency=t)
    good = ExitCache(probs=np.full((1, 2, 2), 0.5), labels=[0], label_names=["n", "p"], texts=["a"], latency=table())
    path = good.save(tmp_path / "c.npz")
    good.latency = t
    good.save(path)  # save does not validate; load must name the file and the field
    with pytest.raises(ValueError, match=f"{path.name}.*{field.split('.')[-1]}"):
        ExitCache.load(path)


def test_bf16_code_path_on_cpu(spread_backbone):
    model = spread_model(spread_backbone)
    want, _ = full_probs(model, TEXTS)
    from core.serving.predictor import EarlyExitPredictor

    with pytest.raises(ValueError, match="CUDA"):
        cv.convert(model, "bf16")
    cv.convert(model, "bf16", allow_cpu_half=True)
    assert next(model.parameters()).dtype == torch.bfloat16
    got, _ = cv.exit_probs(EarlyExitPredictor(model), TEXTS, batch_size=3)
    assert got.dtype == np.float32 and np.abs(got.sum(-1) - 1).max() < 1e-4
    assert np.abs(got - want).max() < 0.2  # bf16 keeps ~3 significant digits through 4 random layers


def test_command_refuses_bad_input(tmp_path, capsys, run_int8):
    assert cv.main(["--run", str(tmp_path / "nope"), "--precision", "int8"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert cv.main(["--run", str(tmp_path), "--precision", "int8"]) == 2
    assert "no cache.npz there" in capsys.readouterr().err
    assert cv.main(["--run", str(run_int8[0]), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda" in err
    assert cv.main(["--run", str(run_int8[0]), "--precision", "int8", "--batch-sizes", "0"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err
    assert not (tmp_path / "cache-int8.npz").exists()


def test_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "core.cache_variant", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--precision" in out.stdout
