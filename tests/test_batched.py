"""Batched early exit (core.serving.predictor), the operating-point file (core.export) and `python -m core.predict`.

Tiny random BERTs (hidden 32) for the decision tests; a tiny run folder trained by core.train for the
file and command tests; the default run's real spread_backbone only in the `integration` test."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.engine import strategies
from core.serving.export import main as export_main
from core.serving.export import read_point, write_point
from core.serving.predictor import EarlyExitPredictor, decide_rows
from tests.helpers import TEXTS, base_config, full_probs, spread_model, strategy_cases

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUN = REPO / "checkpoints" / "rotten_tomatoes-joint"

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- decisions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size,sort", [(3, True), (3, False), (8, True), (1, True)])
def test_batched_decisions_equal_apply(spread_backbone, batch_size, sort):
    model = spread_model(spread_backbone, bypass=True, lte=True)
    probs, conf = full_probs(model, TEXTS)
    pred = EarlyExitPredictor(model)
    seen_layers = set()
    for strategy, params in strategy_cases(probs, conf):
        want_layer, want_pred = strategies.apply(strategy, probs, confidence=conf, **params)
        got = pred.predict_batch(TEXTS, batch_size=batch_size, strategy=strategy, params=params,
                                 sort_by_length=sort)
        assert [r.exit_layer for r in got] == want_layer.tolist(), (strategy, params)
        assert [r.pred for r in got] == want_pred.tolist(), (strategy, params)
        for j, r in enumerate(got):
            np.testing.assert_allclose(r.probs, probs[j, :r.exit_layer], atol=1e-5)
            np.testing.assert_allclose(r.confidence, conf[j, :r.exit_layer], atol=1e-5)
        seen_layers |= set(want_layer.tolist())
    assert len(seen_layers) > 2, "the cases should exit at several layers"


def test_decide_rows_equals_decide_row_by_row(spread_backbone):
    model = spread_model(spread_backbone, lte=True)
    probs, conf = full_probs(model, TEXTS)
    for strategy, params in strategy_cases(probs, conf):
        for m in range(1, probs.shape[1] + 1):
            fired, pred = decide_rows(strategy, probs[:, :m], confidence=conf[:, :m], **params)
            one = [strategies.decide(strategy, probs[j, :m], confidence=conf[j, :m], **params)
                   for j in range(len(TEXTS))]
            assert fired.tolist() == [f for f, _ in one] and pred.tolist() == [p for _, p in one]


def test_exited_rows_leave_the_batch(spread_backbone):
    model = spread_model(spread_backbone)
    probs, _ = full_probs(model, TEXTS)
    pred = EarlyExitPredictor(model)
    sizes: list[tuple[int, int]] = []
    step = model.layer_step

    def spy(i, h, **kw):
        sizes.append((i, h.shape[0]))
        return step(i, h, **kw)

    model.layer_step = spy
    params = {"patience": 1}
    want_layer, _ = strategies.apply("patience", probs, **params)
    pred.predict_batch(TEXTS, batch_size=len(TEXTS), strategy="patience", params=params)
    want = [int((want_layer > i).sum()) for i in range(int(want_layer.max()))]
    assert [b for _, b in sizes] == want and want[-1] < want[0]


def test_batched_pairs_and_bad_input(spread_backbone):
    model = spread_model(spread_backbone)
    a, b = TEXTS[:4], TEXTS[4:]
    x = model.tokenize(a, b, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = model(**x).logits.softmax(-1).numpy()
    got = EarlyExitPredictor(model).predict_batch(a, b, batch_size=3, strategy="budget", params={"layer": 4})
    np.testing.assert_allclose(np.stack([r.probs for r in got]), probs, atol=1e-5)
    pred = EarlyExitPredictor(model)
    with pytest.raises(ValueError, match="text_pairs has 1 entries for 4 texts"):
        pred.predict_batch(a, b[:1], strategy="budget", params={"layer": 1})
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        pred.predict_batch(a, batch_size=0, strategy="budget", params={"layer": 1})
    with pytest.raises(ValueError, match="needs strategy"):
        pred.predict_batch(a)
    assert pred.predict_batch([], strategy="budget", params={"layer": 1}) == []


# ---- a tiny trained run: export, from_point, the command -------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):  # noqa: F811
    from core.training.run import train

    out = tmp_path_factory.mktemp("runs") / "tiny-joint"
    return train(base_config(tiny, out, method="joint", latency_samples=2))


def test_export_roundtrip_and_from_point(tiny_run, tmp_path):
    from core.engine.cache import ExitCache

    out = tmp_path / "points" / "p.json"
    out.parent.mkdir()
    data = write_point(tiny_run, "entropy", {"threshold": 0.9}, out)
    assert data["format_version"] == 2 and data["precision"] == "fp32" and not Path(data["run"]).is_absolute()
    assert data["promise"]["score"]["interval"] is None and data["promise"]["guarantee"] is None
    assert data["promise"]["measured_on"]["rows"] == 12 and data["label_names"] == ["neg", "pos"]
    point = read_point(out)
    assert point.run_dir.resolve() == Path(tiny_run).resolve()
    pred = EarlyExitPredictor.from_point(out)
    cache = ExitCache.load(tiny_run)
    got = pred.predict_batch(cache.get_texts(), batch_size=5)
    want_layer, want_pred = strategies.apply("entropy", np.stack(
        [pred.predict_batch([t], strategy="budget", params={"layer": 3})[0].probs for t in cache.get_texts()]),
        threshold=0.9)
    assert [r.exit_layer for r in got] == want_layer.tolist()
    assert [r.label for r in got] == [["neg", "pos"][p] for p in want_pred]
    # the point travels with its run when both move together (relative path)
    a = tmp_path / "a"
    shutil.copytree(Path(tiny_run), a / "runs" / "tiny-joint")
    write_point(a / "runs" / "tiny-joint", "entropy", {"threshold": 0.9}, a / "points" / "p.json")
    assert json.loads((a / "points" / "p.json").read_text())["run"] == "../runs/tiny-joint"
    shutil.move(a, tmp_path / "b")
    moved = read_point(tmp_path / "b" / "points" / "p.json")
    assert moved.run_dir.resolve() == (tmp_path / "b" / "runs" / "tiny-joint").resolve()


def _mutated(path: Path, tmp_path: Path, fn) -> Path:
    data = json.loads(path.read_text())
    fn(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    return bad


def test_point_file_errors_name_the_file_and_fault(tiny_run, tmp_path):
    good = tmp_path / "p.json"
    write_point(tiny_run, "patience", {"patience": 2}, good)
    cases = [(lambda d: d.pop("strategy"), "missing field 'strategy'"),
             (lambda d: d.update(format_version=3), "format_version 3 is not supported"),
             (lambda d: d.update(params={"patience": 0}), "params: patience.patience = 0 is out of range"),
             (lambda d: d["promise"]["score"].update(interval=[0.9, 0.1]), "interval must be"),
             (lambda d: d["weights"].update(sha256="0" * 64), "the point was made for 000000000000"),
             (lambda d: d.update(format="something"), "not an operating-point file")]
    for fn, msg in cases:
        bad = _mutated(good, tmp_path, fn)
        with pytest.raises(ValueError, match=msg) as e:
            read_point(bad)
        assert str(e.value).startswith(str(bad))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        read_point(tmp_path / "broken.json")
    # missing weights: the message says which command rebuilds them
    gone = tmp_path / "gone"
    shutil.copytree(Path(tiny_run), gone)
    write_point(gone, "patience", {"patience": 2}, tmp_path / "g.json")
    (gone / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"weights it names are missing .*rebuild them with: python -m core.train"):
        read_point(tmp_path / "g.json")


def test_export_cli(tiny_run, tmp_path, capsys):
    out = tmp_path / "cli.json"
    assert export_main(["--run", str(tiny_run), "--strategy", "maxprob", "--params", '{"threshold": 0.7}',
                        "--out", str(out)]) == 0
    assert "python -m core.predict --point" in capsys.readouterr().err
    assert read_point(out).params == {"threshold": 0.7}
    assert export_main(["--run", str(tiny_run), "--strategy", "maxprob", "--params", "{threshold",
                        "--out", str(tmp_path / "x.json")]) == 2
    assert "--params is not valid JSON" in capsys.readouterr().err
    assert export_main(["--run", str(tiny_run), "--strategy", "oracle", "--out", str(tmp_path / "x.json")]) == 2
    assert "needs the gold labels" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def _predict(args, stdin=None):
    return subprocess.run([sys.executable, "-m", "core.predict", *args], cwd=REPO, input=stdin, text=True,
                          capture_output=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def _predict_here(capsys, args):
    """core.predict's main in this process: (exit code, stdout, stderr)."""
    from core.serving.predict import main

    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_command_csv_jsonl_stdin(tiny_run, tmp_path, capsys, monkeypatch):
    from core.engine.cache import ExitCache

    point = tmp_path / "p.json"
    write_point(tiny_run, "entropy", {"threshold": 0.9}, point)
    cache = ExitCache.load(tiny_run)
    texts = cache.get_texts()
    csv = tmp_path / "in.csv"
    csv.write_text("review,sentiment\n" + "".join(f"{t},{['neg', 'pos'][y]}\n" for t, y in zip(texts, cache.labels)))
    r = _predict(["--point", str(point), "--input", str(csv), "--output", str(tmp_path / "o.jsonl"),
                  "--batch-size", "5", "--compare-full"])
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    pred = EarlyExitPredictor.from_point(point).predict_batch(texts)
    assert [x["row"] for x in rows] == list(range(len(texts)))
    assert [(x["prediction"], x["exit_layer"]) for x in rows] == [(p.label, p.exit_layer) for p in pred]
    assert all(0.0 <= x["probability"] <= 1.0 for x in rows)
    for word in ("mean exit layer", "layer speed-up", "rows per second", "measured speed-up", "accuracy:", "promised"):
        assert word in r.stdout
    # JSONL in, and standard input
    jl = tmp_path / "in.jsonl"
    jl.write_text("".join(json.dumps({"review": t}) + "\n" for t in texts))
    # the rest in-process (the subprocess above is the command as users run it): JSONL in, standard input
    jl = tmp_path / "in.jsonl"
    jl.write_text("".join(json.dumps({"review": t}) + "\n" for t in texts))
    code, out, _ = _predict_here(capsys, ["--point", str(point), "--input", str(jl), "--text-column", "review",
                                          "--output", str(tmp_path / "o2.jsonl")])
    assert code == 0
    # --compare-full adds the fp32 full model's answer to each row; the rest is the same
    assert all(r["full_prediction"] in ("neg", "pos") for r in rows)
    plain = [json.dumps({k: v for k, v in r.items() if k != "full_prediction"}) for r in rows]
    assert (tmp_path / "o2.jsonl").read_text().splitlines() == plain
    assert "accuracy:" not in out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\n".join(texts[:3]) + "\n\n").encode())))
    code, _, _ = _predict_here(capsys, ["--point", str(point), "--input", "-", "--output", str(tmp_path / "o3.jsonl")])
    assert code == 0
    assert (tmp_path / "o3.jsonl").read_text().splitlines() == plain[:3]
    # bad input: one clear line naming what was wrong
    code, _, err = _predict_here(capsys, ["--point", str(point), "--input", str(csv), "--text-column", "nope",
                                          "--output", str(tmp_path / "o4.jsonl")])
    assert code == 2 and "unknown --text-column 'nope'; available columns: review, sentiment" in err
    assert not (tmp_path / "o4.jsonl").exists()


# ---- the real default run ----------------------------------------------------------------------
@pytest.mark.integration
def test_default_run_batched_exits_equal_the_cache(tmp_path):
    """On the default run's dev rows, batched early exit exits and predicts as `apply` on the cache.

    The cache holds probabilities of the float32 model at the end of training; the run saved float16
    weights, so reloaded probabilities differ by up to about 1e-3. Rows whose rule signal lies that close
    to the threshold (or whose top two classes are that close) can flip: those are the ties, counted and
    required to be few. Against the reloaded model's own probabilities the decisions are exact."""
    from core.engine.cache import ExitCache

    if not (DEFAULT_RUN / "model.safetensors").exists():
        pytest.skip("the default run has no weights")
    cache = ExitCache.load(DEFAULT_RUN)
    texts = cache.get_texts()
    point = tmp_path / "p.json"
    write_point(DEFAULT_RUN, "budget", {"layer": cache.L}, point)
    pred = EarlyExitPredictor.from_point(point)
    mine = np.stack([r.probs for r in pred.predict_batch(texts, batch_size=64)])        # [N, L, K], all layers
    tol = float(np.abs(mine - cache.probs).max())
    assert tol < 5e-3, "reloaded probabilities drifted further than float16 weights explain"
    ent = strategies.features(cache.probs).entropy.T                                     # [N, L]
    top2 = np.sort(cache.probs, -1)
    margin = top2[..., -1] - top2[..., -2]                                               # [N, L]
    total_ties = 0
    for strategy, params, near in [
            ("entropy", {"threshold": float(np.quantile(ent[:, 2], 0.5))}, lambda p: np.abs(ent - p["threshold"])),
            ("entropy", {"threshold": 0.3}, lambda p: np.abs(ent - p["threshold"])),
            ("maxprob", {"threshold": 0.9}, lambda p: np.abs(cache.probs.max(-1) - p["threshold"])),
            ("patience", {"patience": 2}, lambda p: margin)]:
        got = pred.predict_batch(texts, batch_size=32, strategy=strategy, params=params)
        layer = np.array([r.exit_layer for r in got])
        guess = np.array([r.pred for r in got])
        own_layer, own_pred = strategies.apply(strategy, mine, **params)                 # exact
        assert (layer == own_layer).all() and (guess == own_pred).all(), strategy
        want_layer, want_pred = strategies.apply(strategy, cache.probs, **params)
        differ = np.flatnonzero((layer != want_layer) | (guess != want_pred))
        near_tie = near(params).min(axis=1) <= 10 * tol                                  # any layer that close
        assert near_tie[differ].all(), f"{strategy}: rows {differ[~near_tie[differ]]} differ without a near tie"
        total_ties += len(differ)
        print(f"{strategy} {params}: {len(differ)} of {len(texts)} rows differ from the cache, all near ties "
              f"(max |prob difference| {tol:.2e})")
    assert total_ties <= 0.005 * len(texts) * 4, f"{total_ties} ties"


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_pooled_decisions_equal_apply(spread_backbone, batch_size):
    """Rows pooled across input batches at every depth: the same exits and predictions as `apply`."""
    model = spread_model(spread_backbone, bypass=True, lte=True)
    probs, conf = full_probs(model, TEXTS)
    pred = EarlyExitPredictor(model)
    encs = pred.encode_many(TEXTS)
    for strategy, params in strategy_cases(probs, conf):
        want_layer, want_pred = strategies.apply(strategy, probs, confidence=conf, **params)
        with torch.inference_mode():
            layer, guess, got_probs, got_conf = pred.run_pooled(encs, strategy=strategy, params=params,
                                                                batch_size=batch_size)
        assert layer.tolist() == want_layer.tolist() and guess.tolist() == want_pred.tolist(), (strategy, params)
        for j, m in enumerate(layer):
            np.testing.assert_allclose(got_probs[j, :m], probs[j, :m], atol=1e-5)
            np.testing.assert_allclose(got_conf[j, :m], conf[j, :m], atol=1e-5)


def test_pooled_layer_calls_stay_full(spread_backbone):
    model = spread_model(spread_backbone)
    probs, _ = full_probs(model, TEXTS * 3)
    pred = EarlyExitPredictor(model)
    sizes = []
    step = model.layer_step
    model.layer_step = lambda i, h, **kw: (sizes.append(h.shape[0]), step(i, h, **kw))[1]
    params = {"patience": 1}
    with torch.inference_mode():
        layer, *_ = pred.run_pooled(pred.encode_many(TEXTS * 3), strategy="patience", params=params, batch_size=4)
    want_layer, _ = strategies.apply("patience", probs, **params)
    assert layer.tolist() == want_layer.tolist()
    assert sum(sizes) == int(want_layer.sum())                      # every row runs exactly its layers
    assert len(sizes) <= sum(-(-int((want_layer > i).sum()) // 4) for i in range(4)) + 4   # near-full calls
