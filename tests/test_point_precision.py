"""Operating-point files of version 2 (precision and batch size), run at their precision by
`EarlyExitPredictor.from_point` and `python -m core.predict` (with its summary's verdicts, risk and drift).

A tiny random BERT (hidden 32, helpers.SPREAD_LAYERS layers) saved as a run folder with its fp32 cache
and an int8 cache from core.serving.cache_variant (int8: torch.ao dynamic quantization on CPU)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.engine import metrics, strategies
from core.engine.cache import ExitCache
from core.serving import cache_variant as cv
from core.serving.export import read_point, write_point
from core.serving.predictor import EarlyExitPredictor
from tests.helpers import TEXTS, full_probs, spread_model

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, spread_backbone):
    """A run folder with weights, its fp32 cache over TEXTS and an int8 cache, latency tables at 1 and 4."""
    folder = tmp_path_factory.mktemp("run") / "tiny-precision"
    model = spread_model(spread_backbone, bypass=True, lte=True)
    model.save_pretrained(folder)
    probs, conf = full_probs(model, TEXTS)
    ExitCache(probs=probs, labels=np.arange(len(TEXTS)) % 3, label_names=LABELS, texts=list(TEXTS),
              confidence=conf, meta={"task": "tiny", "metric": "accuracy"}).save(folder)
    cv.make_variant(folder, "int8", batch_sizes=(1, 4), batches=2, repeats=1)
    return folder


def _setting(cache):
    """An entropy threshold at which rows exit at several layers."""
    from core.engine.features import normalized_entropy

    h = normalized_entropy(cache.probs, -1)
    return {"threshold": float(np.quantile(h, 0.5))}


def test_int8_point_carries_precision_and_batch_size(run, tmp_path):
    int8, fp32 = ExitCache.load(run / "cache-int8.npz"), ExitCache.load(run)
    params = _setting(int8)
    data = write_point(run, "entropy", params, tmp_path / "p8.json", precision="int8", batch_size=4)
    assert data["format_version"] == 2 and data["precision"] == "int8" and data["batch_size"] == 4
    layers, pred = strategies.apply("entropy", int8.probs, confidence=int8.confidence, **params)
    p = data["promise"]
    assert p["measured_on"]["file"] == "cache-int8.npz"
    assert p["score"]["value"] == pytest.approx(float((pred == int8.labels).mean()))
    assert p["full_score"]["value"] == pytest.approx(float((fp32.probs[:, -1].argmax(-1) == fp32.labels).mean()))
    assert p["wallclock_batch_size"] == 4
    assert p["wallclock_speedup"]["value"] == pytest.approx(metrics.batch_wallclock_speedup(layers, int8, 4, reference=fp32))
    point = read_point(tmp_path / "p8.json")
    assert (point.precision, point.batch_size) == ("int8", 4)


def test_from_point_runs_int8_and_decides_as_the_int8_cache(run, tmp_path):
    int8 = ExitCache.load(run / "cache-int8.npz")
    params = _setting(int8)
    write_point(run, "entropy", params, tmp_path / "p8.json", precision="int8", batch_size=4)
    pred = EarlyExitPredictor.from_point(tmp_path / "p8.json")
    assert pred.precision == "int8"
    assert any("Quantized" in type(m).__name__ or "quantized" in type(m).__module__ for m in pred.model.modules())
    want_layer, want_pred = strategies.apply("entropy", int8.probs, confidence=int8.confidence, **params)
    got = pred.predict_batch(TEXTS, batch_size=1)   # the cache's own batch size: 0 differences
    assert [r.exit_layer for r in got] == want_layer.tolist()
    assert [r.pred for r in got] == want_pred.tolist()
    assert len(set(want_layer.tolist())) > 1
    fp = EarlyExitPredictor.from_point(tmp_path / "p8.json", precision="fp32")
    assert fp.precision == "fp32" and not any("quantized" in type(m).__module__ for m in fp.model.modules())
    # fp16 / bf16 points are for CUDA: refused on CPU with a sentence (the code path runs on a GPU machine)
    half = json.loads((tmp_path / "p8.json").read_text()) | {"precision": "bf16"}
    (tmp_path / "bf16.json").write_text(json.dumps(half))
    assert read_point(tmp_path / "bf16.json").precision == "bf16"
    with pytest.raises(ValueError, match="precision bf16 is for CUDA devices"):
        EarlyExitPredictor.from_point(tmp_path / "bf16.json")


def test_version_1_point_still_loads_as_fp32(run, tmp_path):
    data = write_point(run, "entropy", {"threshold": 0.5}, tmp_path / "p.json")
    v1 = {k: v for k, v in data.items() if k not in ("precision", "batch_size")}
    v1["format_version"] = 1
    for k in ("wallclock_batch_size",):
        v1["promise"].pop(k, None)
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    point = read_point(tmp_path / "v1.json")
    assert (point.precision, point.batch_size) == ("fp32", None)
    pred = EarlyExitPredictor.from_point(tmp_path / "v1.json")
    assert pred.precision == "fp32"
    fp32 = ExitCache.load(run)
    want_layer, _ = strategies.apply("entropy", fp32.probs, confidence=fp32.confidence, threshold=0.5)
    assert [r.exit_layer for r in pred.predict_batch(TEXTS, batch_size=1)] == want_layer.tolist()


def test_predict_runs_the_point_at_its_precision_and_says_what_it_found(run, tmp_path, capsys):
    from core.serving.predict import main

    int8 = ExitCache.load(run / "cache-int8.npz")
    params = _setting(int8)
    write_point(run, "entropy", params, tmp_path / "p8.json", precision="int8", batch_size=4)
    # 24 rows (TEXTS three times) so the drift check has enough rows; labels as the cache's
    texts = list(TEXTS) * 3
    labels = [LABELS[i % 3] for i in range(len(TEXTS))] * 3
    csv = tmp_path / "in.csv"
    csv.write_text("text,label\n" + "".join(f"\"{t}\",{y}\n" for t, y in zip(texts, labels)))
    out = tmp_path / "o.jsonl"
    capsys.readouterr()
    rc = main(["--point", str(tmp_path / "p8.json"), "--input", str(csv), "--output", str(out), "--compare-full",
               "--summary-json", str(tmp_path / "s.json")])
    stdout = capsys.readouterr().out
    assert rc == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["batch_size"] == 4 and s["precision"] == "int8"     # the point's batch size, no --batch-size given
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["full_prediction"] in LABELS for r in rows)
    # the fp32 full model is the baseline: its predictions are fp32's last exit
    fp32 = ExitCache.load(run)
    assert [r["full_prediction"] for r in rows[:len(TEXTS)]] == [LABELS[i] for i in fp32.probs[:, -1].argmax(-1)]
    names = [c["name"] for c in s["checks"]]
    assert names == ["layer speed-up", "wall-clock speed-up over fp32 full", "accuracy", "accuracy of the fp32 full model"]
    assert all(c["verdict"] in ("kept", "outside the interval", "no interval") for c in s["checks"])
    assert "promised against measured:" in stdout and "guarantee: none" in stdout
    assert s["measured_risk"]["rows"] == len(texts) and "Clopper-Pearson" in stdout
    gap = sum(1 for r, y in zip(rows, labels) if r["full_prediction"] == y and r["prediction"] != y)
    assert s["measured_risk"]["count"] == gap
    # the drift check compares with the rows the promise was measured on: the int8 cache's exits
    want_layer, _ = strategies.apply("entropy", int8.probs, confidence=int8.confidence, **params)
    assert s["drift"]["ref_counts"] == np.bincount(want_layer - 1, minlength=int8.L).tolist()
    assert s["drift"]["new_counts"] == np.bincount([r["exit_layer"] - 1 for r in rows], minlength=int8.L).tolist()
    assert "no drift test (24 new rows, 8 dev rows of cache-int8.npz" in stdout   # 8 reference rows are too few


def test_predict_holds_the_measured_risk_against_the_points_guarantee(run, tmp_path, capsys):
    from core.serving.export import promise_extras
    from core.serving.predict import main

    strategy, params, extras = promise_extras(run, "entropy", {}, guarantee={"epsilon": 0.3, "delta": 0.2})
    write_point(run, strategy, params, tmp_path / "g.json", **extras)
    g = read_point(tmp_path / "g.json").promise["guarantee"]
    csv = tmp_path / "in.csv"
    csv.write_text("text,label\n" + "".join(f"\"{t}\",{LABELS[i % 3]}\n" for i, t in enumerate(TEXTS)))
    capsys.readouterr()
    assert main(["--point", str(tmp_path / "g.json"), "--input", str(csv), "--output", str(tmp_path / "o.jsonl"),
                 "--compare-full", "--summary-json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["guarantee"] == g["guarantee"] and f"guarantee: {g['guarantee']}" in out
    r = s["measured_risk"]
    assert r["risk"] == g["risk"] and r["epsilon"] == pytest.approx(0.3) and r["rows"] == len(TEXTS)
    assert r["verdict"] in ("kept", "outside the interval") and "guaranteed 30.00%" in out
