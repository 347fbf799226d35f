"""Early exit x int8: rows per second of fp32 full, fp32 early exit, int8 full and int8 early exit.

    python -m bench.bench_precision [--run checkpoints/rotten_tomatoes-joint] [--max-drop 0.005]
        [--batch-sizes 1,32] [--rows N] [--threads 1] [--json FILE]

One run on the run's dev rows (pre-tokenized, length-sorted batches; timed from token ids to decisions,
tokenization left out), the four variants interleaved: the batches are cut into blocks and each block
runs all four back to back in rotating order, so load on a shared machine hits all alike. Each
precision's early exit uses the setting `core.engine.metrics.pick(max_drop=...)` chooses on THAT
precision's dev cache (cache.npz, cache-int8.npz from `python -m core.cache_variant --precision int8`).
Also printed: the estimate from the caches' latency tables (`metrics.batch_wallclock_speedup`), both
precisions' per-exit dev scores, and the four variants' scores on the 850-row test split
(`core.data.tasks.load_test_split`). Goal (issue 22): int8 early exit >= 3.5x fp32 full at batch 32 on
1 thread, within 1.5 points of fp32 full on test.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from core.engine import metrics, strategies
from core.engine.cache import ExitCache
from core.serving.cache_variant import load_at, precision_caches

DEFAULT_RUN = Path(__file__).resolve().parent.parent / "checkpoints" / "rotten_tomatoes-joint"
VARIANTS = ("fp32 full", "fp32 early exit", "int8 full", "int8 early exit")


def timed_rows_per_s(preds: dict, points: dict, encs, batch_size: int, block: int) -> tuple[dict, dict]:
    """rows/s of each variant over all rows at `batch_size`, blocks of `block` batches interleaved;
    also each early-exit variant's predictions [N] (input order)."""
    any_pred = next(iter(preds.values()))
    batches = any_pred.batches(encs, batch_size)
    spent = {v: 0.0 for v in VARIANTS}
    out = {v: np.zeros(len(encs), dtype=np.int64) for v in VARIANTS}
    for b0 in range(0, len(batches), block):
        chunk = batches[b0:b0 + block]
        k = (b0 // block) % len(VARIANTS)
        for v in VARIANTS[k:] + VARIANTS[:k]:
            prec, kind = v.split(" ", 1)
            pred = preds[prec]
            with pred._inference():
                t0 = time.perf_counter()
                for idx in chunk:
                    rows = [encs[j] for j in idx]
                    if kind == "full":
                        out[v][idx] = pred.full_batch(rows).argmax(-1)
                    else:
                        out[v][idx] = pred.run_batch(rows, **points[prec])[1]
                spent[v] += time.perf_counter() - t0
    return {v: len(encs) / spent[v] for v in VARIANTS}, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_precision", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=str(DEFAULT_RUN))
    ap.add_argument("--max-drop", type=float, default=0.005, help="pick's goal on each precision's dev cache")
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--rows", type=int, default=0, help="time only the first N dev rows (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    run = Path(args.run)
    have = precision_caches(run)
    if "int8" not in have:
        raise SystemExit(f"{run}: no int8 cache; run `python -m core.cache_variant --run {run} --precision int8`")
    caches = {p: ExitCache.load(have[p]) for p in ("fp32", "int8")}
    points, picked = {}, {}
    for p, c in caches.items():
        op = metrics.pick(c, max_drop=args.max_drop, run=run.name)
        points[p] = {"strategy": op.strategy, "params": op.params}
        picked[p] = op
    preds = {p: load_at(run, p)[1] for p in ("fp32", "int8")}
    texts = caches["fp32"].get_texts()
    if args.rows:
        texts = texts[:args.rows]
    encs = preds["fp32"].encode_many([t if isinstance(t, str) else t[0] for t in texts],
                                     None if all(isinstance(t, str) for t in texts) else [t[1] for t in texts])
    print(f"run {run.name}: {len(encs)} dev rows, {args.threads} thread(s), torch {torch.__version__}, "
          f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    for p, op in picked.items():
        print(f"  {p} early exit: {op.strategy} {json.dumps(op.params, sort_keys=True)} (pick max_drop={args.max_drop} on "
              f"{p} dev cache: score {op.score:.4f}, full {op.full_score:.4f}, layer speed-up {op.layer_speedup:.2f}x)")
    result = {"run": run.name, "rows": len(encs), "threads": args.threads, "torch": torch.__version__,
              "points": points, "batches": {}}
    n_dev = len(encs)
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        block = max(1, 32 // bs) if bs < 32 else 2
        rps, out = timed_rows_per_s(preds, points, encs, bs, block)
        base = rps["fp32 full"]
        print(f"\nbatch {bs}:  {'variant':<16} {'rows/s':>8} {'x fp32 full':>11} {'estimate':>9}")
        row = {}
        for v in VARIANTS:
            prec, kind = v.split(" ", 1)
            c = caches[prec]
            layers = (np.full(c.N, c.L) if kind == "full" else
                      strategies.apply(points[prec]["strategy"], c.probs, confidence=c.confidence,
                                       **points[prec]["params"])[0])
            try:
                est = metrics.batch_wallclock_speedup(layers, c, bs, reference=caches["fp32"])
            except ValueError:
                est = None
            print(f"          {v:<16} {rps[v]:8.1f} {rps[v] / base:10.2f}x {'' if est is None else f'{est:8.2f}x'}")
            row[v] = {"rows_per_s": rps[v], "ratio": rps[v] / base, "estimate": est}
        # the timed int8 early exit against the int8 cache's decisions on the same rows (batch effects)
        want = strategies.apply(points["int8"]["strategy"], caches["int8"].probs[:n_dev],
                                confidence=None if caches["int8"].confidence is None else caches["int8"].confidence[:n_dev],
                                **points["int8"]["params"])[1]
        diff = int((out["int8 early exit"] != want).sum())
        print(f"          int8 early exit at batch {bs} vs the int8 cache's decisions: {diff} of {n_dev} rows differ")
        row["int8_cache_differences"] = diff
        result["batches"][str(bs)] = row
    fp, i8 = (metrics.per_exit_scores(caches[p]) for p in ("fp32", "int8"))
    print("\nper-exit dev scores (" + caches["fp32"].metric + ")")
    print("  exit  " + " ".join(f"{m:>7d}" for m in range(1, len(fp) + 1)))
    print("  fp32  " + " ".join(f"{s:7.4f}" for s in fp))
    print("  int8  " + " ".join(f"{s:7.4f}" for s in i8))
    result["per_exit_dev"] = {"fp32": [float(s) for s in fp], "int8": [float(s) for s in i8]}
    from core.data.tasks import load_test_split

    test = load_test_split()
    labels = np.asarray([caches["fp32"].label_names.index(str(x)) if not isinstance(x, (int, np.integer)) else int(x)
                         for x in test["label"]])
    tenc = preds["fp32"].encode_many(list(test["text"]))
    _, tout = timed_rows_per_s(preds, points, tenc, 32, 4)
    scores = {v: metrics.score(caches["fp32"].metric, labels, tout[v]) for v in VARIANTS}
    print(f"\ntest split ({len(test)} rows, batch 32): " + ", ".join(f"{v} {s:.4f}" for v, s in scores.items()))
    result["test"] = scores
    result["test_diff_vs_fp32_full"] = {}
    for v in VARIANTS[1:]:  # paired bootstrap over the test rows: each variant against fp32 full
        d = metrics.diff_interval(caches["fp32"].metric, labels, tout[v], tout["fp32 full"])
        print(f"  {v} - fp32 full: {100 * d.estimate:+.2f} points (95% paired bootstrap "
              f"{100 * d.low:+.2f} to {100 * d.high:+.2f})")
        result["test_diff_vs_fp32_full"][v] = [d.estimate, d.low, d.high]
    load_end = os.getloadavg()
    print(f"load average at the end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    result["load"] = [load_start, load_end]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
