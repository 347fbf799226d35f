"""Batched early exit against the batched full model: rows per second at several batch sizes.

    python -m bench.bench_batched_exit [--run checkpoints/rotten_tomatoes-joint] [--batch-sizes 1,8,32,128]
        [--target 2.0] [--rows N] [--device cpu|cuda] [--json FILE]

One run, on the run's dev rows (pre-tokenized, length-sorted batches), with the entropy setting whose
layer speed-up on the cache is nearest `--target`. For every batch the two variants run back to back,
alternating which goes first, so load on a shared machine hits both alike. Timed: token ids to
decisions (padding, embeddings, layers, exits, softmax, decisions); tokenization is the same for both
and left out. The ideal speed-up is the layer speed-up L / mean exit layer on the same rows.
Goals on CPU: >= 1.6x at batch 32, and measured / ideal >= 0.85 at batch 1.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from core import metrics as M
from core.cache import ExitCache
from core.model import MultiExitModel
from core.predictor import EarlyExitPredictor

DEFAULT_RUN = Path(__file__).resolve().parent.parent / "checkpoints" / "rotten_tomatoes-joint"


def entropy_near(cache, target: float) -> dict:
    """The entropy setting of the default sweep whose layer speed-up is nearest `target`."""
    sw = M.sweep(cache, "entropy")
    row = sw.iloc[int(np.argmin(np.abs(sw["layer_speedup"].to_numpy() - target)))]
    return {"threshold": float(row["threshold"]), "dev_layer_speedup": float(row["layer_speedup"]),
            "dev_score": float(row["score"])}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(pred: EarlyExitPredictor, encs, batch_size: int, params: dict) -> dict:
    batches = pred.batches(encs, batch_size)
    dev = pred.device
    t_exit = t_full = 0.0
    layers = []
    with pred._inference():
        pred.run_batch([encs[j] for j in batches[0]], strategy="entropy", params=params)   # warm-up
        pred.full_batch([encs[j] for j in batches[0]])
        for b, idx in enumerate(batches):
            rows = [encs[j] for j in idx]
            for variant in ((0, 1) if b % 2 == 0 else (1, 0)):
                _sync(dev)
                t = time.perf_counter()
                if variant == 0:
                    layer, *_ = pred.run_batch(rows, strategy="entropy", params=params)
                else:
                    pred.full_batch(rows)
                _sync(dev)
                dt = time.perf_counter() - t
                if variant == 0:
                    t_exit += dt
                    layers.append(layer)
                else:
                    t_full += dt
    n = len(encs)
    ideal = pred.num_layers / float(np.concatenate(layers).mean())
    measured = t_full / t_exit
    return {"batch_size": batch_size, "exit_rows_per_s": n / t_exit, "full_rows_per_s": n / t_full,
            "measured": measured, "ideal": ideal, "ratio": measured / ideal}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=str(DEFAULT_RUN))
    ap.add_argument("--batch-sizes", default="1,8,32,128")
    ap.add_argument("--target", type=float, default=2.0, help="layer speed-up the entropy setting aims at")
    ap.add_argument("--rows", type=int, default=None, help="first N dev rows only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    cache = ExitCache.load(args.run)
    setting = entropy_near(cache, args.target)
    params = {"threshold": setting["threshold"]}
    device = torch.device(args.device)
    pred = EarlyExitPredictor(MultiExitModel.from_run(args.run, device=device))
    texts = cache.get_texts()[: args.rows]
    pairs = None
    if texts and not isinstance(texts[0], str):
        texts, pairs = [t[0] for t in texts], [t[1] for t in texts]
    encs = pred.encode_many(texts, pairs)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    print(f"run {Path(args.run).name}, {len(encs)} dev rows, device {device}, torch threads {torch.get_num_threads()}; "
          f"entropy threshold {setting['threshold']:.4f} (dev layer speed-up {setting['dev_layer_speedup']:.2f}x, "
          f"dev score {setting['dev_score']:.4f})")
    rows = [bench(pred, encs, bs, params) for bs in sizes]
    print(f"{'batch':>5} {'exit rows/s':>12} {'full rows/s':>12} {'measured':>9} {'ideal':>6} {'meas/ideal':>10}")
    for r in rows:
        print(f"{r['batch_size']:>5} {r['exit_rows_per_s']:>12.1f} {r['full_rows_per_s']:>12.1f} "
              f"{r['measured']:>8.2f}x {r['ideal']:>5.2f}x {r['ratio']:>10.2f}")
    by = {r["batch_size"]: r for r in rows}
    if 32 in by:
        print(f"goal batch 32 >= 1.6x: {'met' if by[32]['measured'] >= 1.6 else 'NOT met'} ({by[32]['measured']:.2f}x)")
    if 1 in by:
        print(f"goal batch 1 measured/ideal >= 0.85: {'met' if by[1]['ratio'] >= 0.85 else 'NOT met'} "
              f"({by[1]['ratio']:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"setting": setting, "device": str(device),
                                               "threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
