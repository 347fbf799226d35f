"""A run's exit cache at another precision, and the latency tables every cache carries.

    python -m core.cache_variant --run R --precision int8|fp16|bf16|fp32 [--batch-sizes 1,32] [--debug]

Per-exit probabilities change with precision, so the exit rules are scored on each precision's own
cache. This loads the run's weights (`MultiExitModel.from_run`), converts them (`convert`: CPU int8 is
`torch.ao.quantization.quantize_dynamic` on every nn.Linear, qint8; CUDA fp16 / bf16 is `.to(dtype)`;
fp32 is the weights as trained), runs the dev rows the run's cache holds (`ExitCache.get_texts()`)
through the batched predictor's forward at batch size 1 (every exit kept: the budget rule at layer L),
and writes `cache-<precision>.npz` beside `cache.npz`, atomically, with `meta.precision`.

Batch size 1 because dynamic int8 picks its activation scale per call from the whole input tensor:
a row's int8 probabilities depend on the rows and padding batched with it. At batch size 1 the cache
equals what the predictor decides row by row; at larger batches it is what the row gives alone (the
difference is a near tie in the quantized activations, see tests/test_cache_variant.py).

Each command also measures, on one CPU thread, the latency table (`measure_latency`: embeddings, each
layer, each exit head, batch sizes 1 and 32, with machine, threads and torch version) of this precision
and of fp32, interleaved so load hits both alike, and stores fp32's in `cache.npz` (its probabilities
untouched). `--precision fp32` only refreshes that table. `precision_caches(run)` lists what a run has.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from core.engine.cache import PRECISIONS, precision_caches, variant_file  # noqa: F401 (re-exported)
from core.runs.folders import CACHE_FILE

CPU_PRECISIONS = ("fp32", "int8")
LATENCY_BATCHES = (1, 32)


# ---- precision ---------------------------------------------------------------------------------------
def convert(model, precision: str, *, allow_cpu_half: bool = False):
    """The model at `precision`, converted in place (returned). int8: dynamic int8 of every nn.Linear
    (CPU only); fp16 / bf16: `.to(dtype)` (CUDA; on CPU only with allow_cpu_half, for tests)."""
    import torch
    from torch import nn

    device = next(model.parameters()).device
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return model
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError("int8 (dynamic quantization) runs on CPU; use --device cpu, or fp16/bf16 on CUDA")
        with warnings.catch_warnings():  # torch.ao's deprecation notice (torchao is its successor)
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    if device.type != "cuda" and not allow_cpu_half:
        raise ValueError(f"{precision} is for CUDA devices; on CPU use int8 or fp32")
    return model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[precision])


def load_at(run_folder, precision: str, *, device: str = "cpu", allow_cpu_half: bool = False):
    """(model, predictor) of a run at `precision`."""
    from core.models.multi_exit import MultiExitModel
    from core.serving.predictor import EarlyExitPredictor

    model = MultiExitModel.from_run(run_folder, device=device)
    return model, EarlyExitPredictor(convert(model, precision, allow_cpu_half=allow_cpu_half))


def exit_probs(predictor, texts, *, batch_size: int = 1):
    """Every exit's probabilities [N, L, K] (and LTE confidence [N, L] | None) of `texts` (strings or
    [a, b] pairs) through the predictor's batched forward, no row exiting early (budget at layer L)."""
    pairs = [t for t in texts if not isinstance(t, str)]
    a = [t if isinstance(t, str) else t[0] for t in texts]
    b = None if not pairs else [t[1] for t in texts]
    encs = predictor.encode_many(a, b)
    L, K = predictor.num_layers, predictor.num_labels
    probs = np.zeros((len(encs), L, K), dtype=np.float32)
    conf = np.zeros((len(encs), L), dtype=np.float32) if predictor.has_confidence else None
    with predictor._inference():
        for idx in predictor.batches(encs, batch_size):
            _, _, p, c, _ = predictor.run_batch([encs[j] for j in idx], strategy="budget", params={"layer": L})
            probs[idx] = p
            if conf is not None:
                conf[idx] = c
    return probs, conf


# ---- latency tables ------------------------------------------------------------------------------------
def machine() -> str:
    return f"{platform.node()} {platform.machine()} {platform.processor() or platform.system()}".strip()


def _sample_batches(predictor, encs, batch_size: int, count: int) -> list:
    """`count` length-sorted batches spread over the rows (the batches the predictor would form)."""
    batches = predictor.batches(encs, batch_size)
    full = [b for b in batches if len(b) == batch_size] or batches
    pick = np.unique(np.linspace(0, len(full) - 1, min(count, len(full))).round().astype(int))
    return [[encs[j] for j in full[k]] for k in pick]


def _time_batch(predictor, batch, embed_t, layer_t, head_t) -> None:
    """One timed pass: embeddings, then each layer and its exit head (+ softmax) timed apart."""
    import torch

    from core.serving.predictor import _sync

    model, dev = predictor.model, predictor.device
    ids, mask, tt = predictor._pad(batch)
    mask = None if len(batch) == 1 or bool(mask.all()) else mask
    _sync(dev)
    t0 = time.perf_counter()
    h, ext = model.embed(ids, mask, tt)
    _sync(dev)
    t1 = time.perf_counter()
    embed_t.append((t1 - t0) * 1e3)
    for i in range(predictor.num_layers):
        out, pre_ln = model.runner.run_layer(i, h, ext)
        _sync(dev)
        t2 = time.perf_counter()
        logits, _ = model.exit_logits(i, hidden_in=h, hidden_out=out, pre_ln=pre_ln, attention_mask=mask)
        torch.softmax(logits.float(), dim=-1).cpu().numpy()
        t3 = time.perf_counter()
        layer_t[i].append((t2 - t1) * 1e3)
        head_t[i].append((t3 - t2) * 1e3)
        h, t1 = out, t3


def measure_latency(predictors: dict, texts, *, batch_sizes=LATENCY_BATCHES, batches: int = 3,
                    repeats: int = 3, threads: int = 1) -> dict:
    """{precision: latency table} of each predictor on the same rows, timed interleaved.

    A table: {"precision", "machine", "threads", "torch", "measured", "batches": {"B": {"rows": B,
    "embed_ms", "layer_ms": [L], "head_ms": [L]}}}, milliseconds per batch of B rows (medians over
    `repeats` passes of `batches` length-sorted dev batches; one untimed warm-up pass). Torch runs on
    `threads` CPU threads for the measurement (restored after)."""
    import torch

    texts = [t if isinstance(t, str) else tuple(t) for t in texts]
    any_pred = next(iter(predictors.values()))
    a = [t if isinstance(t, str) else t[0] for t in texts]
    b = None if all(isinstance(t, str) for t in texts) else [t[1] for t in texts]
    encs = any_pred.encode_many(a, b)
    L = any_pred.num_layers
    tables = {p: {"precision": p, "machine": machine(), "threads": int(threads), "torch": torch.__version__,
                  "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "batches": {}} for p in predictors}
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        for bs in batch_sizes:
            sample = _sample_batches(any_pred, encs, int(bs), batches)
            times = {p: ([], [[] for _ in range(L)], [[] for _ in range(L)]) for p in predictors}
            for rep in range(int(repeats) + 1):
                for p, pred in predictors.items():
                    with pred._inference():
                        for batch in sample:
                            if rep == 0:  # warm-up
                                _time_batch(pred, batch, [], [[] for _ in range(L)], [[] for _ in range(L)])
                            else:
                                _time_batch(pred, batch, *times[p])
            for p, (e, lt, ht) in times.items():
                tables[p]["batches"][str(int(bs))] = {
                    "rows": int(bs), "embed_ms": float(np.median(e)),
                    "layer_ms": [float(np.median(t)) for t in lt], "head_ms": [float(np.median(t)) for t in ht]}
    finally:
        torch.set_num_threads(old)
    return tables


# ---- the command ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core.cache_variant", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run folder (holds cache.npz and model.safetensors)")
    ap.add_argument("--precision", required=True, choices=PRECISIONS,
                    help="int8 (CPU), fp16 / bf16 (CUDA), fp32 (only refreshes cache.npz's latency table)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (fp16 / bf16 need cuda)")
    ap.add_argument("--batch-sizes", default=",".join(map(str, LATENCY_BATCHES)),
                    help="batch sizes of the latency tables (default 1,32)")
    ap.add_argument("--latency-rows", type=int, default=3, help="batches timed per batch size (default 3)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per batch (default 3)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    return ap


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--batch-sizes {text!r}: give positive integers separated by commas, e.g. 1,32")
    return sizes


def make_variant(run, precision: str, *, device: str = "cpu", batch_sizes=LATENCY_BATCHES, batches: int = 3,
                 repeats: int = 3, allow_cpu_half: bool = False, command: str = "") -> dict[str, Path]:
    """Write `precision`'s cache (not for fp32) and the fp32 cache's latency table; {precision: path}."""
    import torch

    from core.engine.cache import ExitCache
    from core.engine.metrics import per_exit_scores

    run = Path(run)
    if not (run / CACHE_FILE).is_file():
        raise ValueError(f"--run {run}: no {CACHE_FILE} there; name a run folder (e.g. checkpoints/rotten_tomatoes-joint)")
    base = ExitCache.load(run / CACHE_FILE)
    if base.meta.get("precision", "fp32") != "fp32":
        raise ValueError(f"{run / CACHE_FILE}: meta.precision is {base.meta['precision']!r}; cache.npz must be fp32")
    texts = base.get_texts()
    predictors = {"fp32": load_at(run, "fp32", device=device)[1]}
    if precision != "fp32":
        predictors[precision] = load_at(run, precision, device=device, allow_cpu_half=allow_cpu_half)[1]
    written: dict[str, Path] = {}
    variant = None
    if precision != "fp32":
        probs, conf = exit_probs(predictors[precision], texts, batch_size=1)
        meta = {**base.meta, "precision": precision, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": command or f"python -m core.cache_variant --run {run} --precision {precision}",
                "forward": "batched predictor, batch size 1", "torch": torch.__version__}
        variant = ExitCache(probs=probs, labels=base.labels, label_names=base.label_names, texts=base.texts,
                            source=base.source, confidence=conf, meta=meta)
        variant.meta["exit_scores"] = [float(s) for s in per_exit_scores(variant)]
    tables = measure_latency(predictors, texts, batch_sizes=batch_sizes, batches=batches, repeats=repeats)
    if variant is not None:
        variant.latency = tables[precision]
        variant.layer_ms, variant.embed_ms = _batch1(tables[precision], variant.L)
        variant.validate()
        written[precision] = variant.save(run / variant_file(precision))
    base.latency = tables["fp32"]  # fp32 probabilities and layer_ms (bench_early_exit's) kept as they are
    base.validate()
    written["fp32"] = base.save(run / CACHE_FILE)
    return written


def _batch1(table: dict, L: int):
    """(layer_ms [L] = layer + head at batch 1, embed_ms) from a latency table, or (None, None)."""
    one = table["batches"].get("1")
    if one is None:
        return None, None
    return np.add(one["layer_ms"], one["head_ms"]), one["embed_ms"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or argparse's own usage error (exit code 2)
        return int(e.code or 0)
    try:
        if args.device not in ("cpu", "cuda") and not str(args.device).startswith("cuda:"):
            raise ValueError(f"--device {args.device!r}: use cpu or cuda")
        if args.precision in ("fp16", "bf16") and args.device == "cpu":
            raise ValueError(f"--precision {args.precision} is for CUDA; add --device cuda, or use int8 on CPU")
        if args.precision == "int8" and args.device != "cpu":
            raise ValueError("--precision int8 (dynamic quantization) runs on CPU; use --device cpu")
        if args.latency_rows < 1 or args.repeats < 1:
            raise ValueError("--latency-rows and --repeats must be >= 1")
        sizes = _batch_sizes(args.batch_sizes)
        run = Path(args.run)
        if not run.is_dir():
            raise ValueError(f"--run {run}: no such run folder")
        if not os.access(run, os.W_OK):
            raise ValueError(f"--run {run}: the folder is not writable")
        t0 = time.perf_counter()
        written = make_variant(run, args.precision, device=args.device, batch_sizes=sizes,
                               batches=args.latency_rows, repeats=args.repeats,
                               command="python -m core.cache_variant " + " ".join(argv))
    except (ValueError, FileNotFoundError, PermissionError, OSError) as e:
        if debug:
            traceback.print_exc()
        print(f"core.cache_variant: error: {e}", file=sys.stderr)
        return 2
    for p, path in written.items():
        print(f"core.cache_variant: wrote {path} ({p}{', latency table only' if p == 'fp32' else ''})")
    print(f"core.cache_variant: done in {time.perf_counter() - t0:.1f} s")
    return 0
