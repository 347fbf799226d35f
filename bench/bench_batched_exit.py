"""Batched early exit against the batched full model: rows per second at several batch sizes.

    python -m bench.bench_batched_exit [--run checkpoints/rotten_tomatoes-joint] [--batch-sizes 1,8,32,128]
        [--target 2.0] [--rows N] [--device cpu|cuda] [--json FILE]

One run, on the run's dev rows (pre-tokenized, length-sorted batches), with the entropy setting whose
layer speed-up on the cache is nearest `--target`. Three variants: the full model, early exit that
shrinks each batch, and early exit with rows pooled across batches at every depth. The rows are cut
into blocks; each block runs all three back to back in rotating order, so load on a shared machine
hits all alike. Timed: token ids to
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

from core.engine import metrics
from core.engine.cache import ExitCache
from core.models.multi_exit import MultiExitModel
from core.serving.predictor import EarlyExitPredictor

DEFAULT_RUN = Path(__file__).resolve().parent.parent / "checkpoints" / "rotten_tomatoes-joint"


def entropy_near(cache, target: float) -> dict:
    """The entropy setting of the default sweep whose layer speed-up is nearest `target`."""
    sw = metrics.sweep(cache, "entropy")
    row = sw.iloc[int(np.argmin(np.abs(sw["layer_speedup"].to_numpy() - target)))]
    return {"threshold": float(row["threshold"]), "dev_layer_speedup": float(row["layer_speedup"]),
            "dev_score": float(row["score"])}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(pred: EarlyExitPredictor, encs, batch_size: int, params: dict, blocks: int = 8) -> dict:
    """Rows per second of three variants on the same rows: the full model, early exit shrinking each
    batch, and early exit with rows pooled across batches (`run_pooled`). The length-sorted rows are cut
    into `blocks` consecutive blocks; each block runs all three back to back, in rotating order."""
    order = np.argsort([len(ids) for ids, _ in encs], kind="stable")
    cuts = [c for c in np.array_split(order, max(1, min(blocks, len(order) // batch_size or 1))) if len(c)]
    dev = pred.device
    secs = {"full": 0.0, "shrink": 0.0, "pooled": 0.0}
    layers = []

    def run(variant, block):
        rows = [encs[j] for j in block]
        if variant == "pooled":
            return pred.run_pooled(rows, strategy="entropy", params=params, batch_size=batch_size)[0]
        out = []
        for idx in pred.batches(rows, batch_size):
            part = [rows[j] for j in idx]
            if variant == "full":
                pred.full_batch(part)
            else:
                out.append(pred.run_batch(part, strategy="entropy", params=params)[0])
        return np.concatenate(out) if out else None

    names = list(secs)
    with pred._inference():
        for v in names:                                                  # warm-up, untimed
            run(v, cuts[0][:batch_size])
        for b, block in enumerate(cuts):
            for v in names[b % 3:] + names[:b % 3]:
                _sync(dev)
                t = time.perf_counter()
                layer = run(v, block)
                _sync(dev)
                secs[v] += time.perf_counter() - t
                if v == "shrink":
                    layers.append(layer)
    n = len(encs)
    ideal = pred.num_layers / float(np.concatenate(layers).mean())
    return {"batch_size": batch_size, "full_rows_per_s": n / secs["full"],
            "exit_rows_per_s": n / secs["shrink"], "pooled_rows_per_s": n / secs["pooled"],
            "measured": secs["full"] / secs["shrink"], "pooled": secs["full"] / secs["pooled"], "ideal": ideal,
            "ratio": secs["full"] / secs["shrink"] / ideal, "pooled_ratio": secs["full"] / secs["pooled"] / ideal}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=str(DEFAULT_RUN))
    ap.add_argument("--batch-sizes", default="1,8,32,128")
    ap.add_argument("--target", type=float, default=2.0, help="layer speed-up the entropy setting aims at")
    ap.add_argument("--rows", type=int, default=None, help="first N dev rows only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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
    print(f"{'batch':>5} {'full rows/s':>11} {'exit rows/s':>11} {'speed-up':>8} {'/ideal':>6} "
          f"{'pooled rows/s':>13} {'speed-up':>8} {'/ideal':>6} {'ideal':>6}")
    for r in rows:
        print(f"{r['batch_size']:>5} {r['full_rows_per_s']:>11.1f} {r['exit_rows_per_s']:>11.1f} "
              f"{r['measured']:>7.2f}x {r['ratio']:>6.2f} {r['pooled_rows_per_s']:>13.1f} {r['pooled']:>7.2f}x "
              f"{r['pooled_ratio']:>6.2f} {r['ideal']:>5.2f}x")
    print("exit = each batch shrinks as its rows exit; pooled = rows waiting for the same layer pooled across "
          "batches (EarlyExitPredictor.run_pooled); ideal = L / mean exit layer on these rows")
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
