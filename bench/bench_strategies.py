"""Strategy-engine speed: one `apply` and one default-grid sweep of every strategy, against a plain
per-sample Python loop (tests/reference_loop.py), on a random cache of N=10,000, L=12, K=3 (MNLI's
dev size). Prints a table and the ratios measured in this run.

    python bench/bench_strategies.py [--n 10000] [--layers 12] [--classes 3] [--loop-sample 1000]

The loop is timed on `--loop-sample` samples and scaled to N (it is linear in N) to keep the run short.
Goals (2-core CPU): apply <= 20 ms, sweep <= 300 ms, apply >= 50x faster than the loop.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.engine import (
    metrics,
    strategies,  # noqa: E402
)
from core.engine.cache import ExitCache  # noqa: E402
from tests.reference_loop import exit_all  # noqa: E402

SETTINGS = {
    "budget": {"layer": 6}, "entropy": {"threshold": 0.4}, "maxprob": {"threshold": 0.8},
    "patience": {"patience": 3}, "pcee": {"patience": 2, "threshold": 0.4},
    "dge": {"patience": 2, "threshold": 0.8}, "voting": {"k": 0.5, "delta": 2.0},
    "lte": {"threshold": 0.7}, "oracle": {},
}


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def random_cache(n, num_layers, k, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, num_layers, k)) * rng.uniform(0.3, 3.0, size=(n, num_layers, 1))
    logits[np.arange(n), :, labels] += np.linspace(0, 2.5, num_layers)  # deeper layers know more
    probs = np.exp(logits)
    probs = (probs / probs.sum(-1, keepdims=True)).astype(np.float32)
    return ExitCache(probs, labels, [str(c) for c in range(k)], confidence=rng.random((n, num_layers)),
                     layer_ms=np.full(num_layers, 1.0), embed_ms=0.2, meta={"metric": "accuracy"})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--loop-sample", type=int, default=1_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cache = random_cache(args.n, args.layers, args.classes)
    kw = dict(labels=cache.labels, confidence=cache.confidence)
    sub = slice(0, args.loop_sample)
    probs64 = cache.probs[sub].astype(np.float64)
    print(f"N={cache.N} L={cache.L} K={cache.K}; loop timed on {args.loop_sample} samples, scaled to N")
    header = f"{'strategy':<10}{'apply ms':>10}{'loop ms':>12}{'speed-up':>10}{'points':>8}{'sweep ms':>10}{'loop sweep s':>14}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    worst = {"apply": 0.0, "sweep": 0.0, "ratio": np.inf, "sweep_ratio": np.inf}
    for name, params in SETTINGS.items():
        t_apply = best_of(lambda: strategies.apply(name, cache.probs, **kw, **params), args.repeats)
        t0 = time.perf_counter()
        exit_all(name, probs64, labels=cache.labels[sub], confidence=cache.confidence[sub], **params)
        t_loop = (time.perf_counter() - t0) * 1e3 * cache.N / args.loop_sample
        grid = metrics.default_grid(name, metrics.cache_features(cache))
        t_sweep = best_of(lambda: metrics.sweep(cache, name), max(1, args.repeats // 2))  # features included
        t_loop_sweep = t_loop * len(grid) / 1e3
        ratio, sweep_ratio = t_loop / t_apply, t_loop_sweep * 1e3 / t_sweep
        print(f"{name:<10}{t_apply:>10.2f}{t_loop:>12.0f}{ratio:>9.0f}x{len(grid):>8}{t_sweep:>10.1f}"
              f"{t_loop_sweep:>14.1f}{sweep_ratio:>9.0f}x")
        worst = {"apply": max(worst["apply"], t_apply), "sweep": max(worst["sweep"], t_sweep),
                 "ratio": min(worst["ratio"], ratio), "sweep_ratio": min(worst["sweep_ratio"], sweep_ratio)}
    t_all = best_of(lambda: metrics.sweep_all(cache), 1)
    print("-" * len(header))
    print(f"slowest apply {worst['apply']:.2f} ms (goal <= 20), slowest sweep {worst['sweep']:.1f} ms (goal <= 300), "
          f"smallest apply speed-up over the loop {worst['ratio']:.0f}x (goal >= 50), "
          f"smallest sweep speed-up {worst['sweep_ratio']:.0f}x; all strategies swept together {t_all:.0f} ms")
    ok = worst["apply"] <= 20 and worst["sweep"] <= 300 and worst["ratio"] >= 50
    print("GOALS MET" if ok else "GOALS NOT MET")


if __name__ == "__main__":
    main()
