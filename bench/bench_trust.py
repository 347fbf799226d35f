"""Speed of the trust tools on a random cache of N=10,000, L=12, K=3 (MNLI's dev size): the goal picker
over every rule's exact candidate settings, the calibration of one rule, and one bootstrap interval.

    python bench/bench_trust.py [--n 10000] [--layers 12] [--classes 3] [--repeats 5]

"cold" starts from fresh features (what the first pick on a newly loaded run pays: signals, exact
curves of every rule at every patience / k); "warm" reuses the run's memoized curves (every later
pick in the app). Goals (2-core CPU): pick <= 200 ms, calibrate <= 200 ms, one interval <= 100 ms.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_strategies import random_cache  # noqa: E402
from core.engine import metrics  # noqa: E402
from core.engine.calibrate import calibrate  # noqa: E402


def timed(fn, repeats, setup=lambda: None):
    times = []
    for _ in range(repeats):
        arg = setup()
        t = time.perf_counter()
        fn(arg)
        times.append((time.perf_counter() - t) * 1e3)
    return min(times), sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cache = random_cache(args.n, args.layers, args.classes)
    fresh = lambda: metrics.cache_features(cache)  # noqa: E731
    warm = metrics.cache_features(cache)
    metrics.pick(cache, max_drop=0.01, feats=warm)
    pred = warm.argmax[args.layers // 2]
    n_settings = sum(metrics.goal_table(cache, max_drop=0.01, feats=warm)["candidates"])
    rows = [
        ("pick, all rules, lose <= 1 point (cold)", timed(lambda f: metrics.pick(cache, max_drop=0.01, feats=f), args.repeats, fresh), 200),
        ("pick, all rules, >= 2x faster (warm)", timed(lambda f: metrics.pick(cache, min_layer_speedup=2.0, feats=warm), args.repeats), 200),
        ("pick, all rules, under 60% latency (warm)", timed(lambda f: metrics.pick(cache, max_latency_ms=0.6 * (0.2 + args.layers), feats=warm), args.repeats), 200),
        ("calibrate entropy, LTT (cold)", timed(lambda f: calibrate(cache, "entropy", epsilon=0.02, feats=f), args.repeats, fresh), 200),
        ("calibrate PCEE patience 2, CRC (cold)", timed(lambda f: calibrate(cache, "pcee", epsilon=0.02, method="crc", patience=2, feats=f), args.repeats, fresh), 200),
        ("calibrate DGE patience 2, LTT (cold)", timed(lambda f: calibrate(cache, "dge", epsilon=0.02, patience=2, feats=f), args.repeats, fresh), 200),
        ("one interval: score, 1,000 resamples", timed(lambda f: metrics.score_interval(cache.metric, cache.labels, pred), args.repeats), 100),
        ("one interval: vs full model (paired)", timed(lambda f: metrics.diff_interval(cache.metric, cache.labels, pred, warm.argmax[-1]), args.repeats), 100),
    ]
    print(f"cache N={args.n} L={args.layers} K={args.classes}; {n_settings} exact candidate settings over all rules\n")
    w = max(len(r[0]) for r in rows)
    print(f"{'operation':<{w}}  {'best ms':>8}  {'median ms':>9}  {'goal ms':>7}  {'median / goal':>13}")
    print("-" * (w + 46))
    for name, (best, med), goal in rows:
        print(f"{name:<{w}}  {best:8.1f}  {med:9.1f}  {goal:7.0f}  {med / goal:13.2f}")
    met = all(med <= goal for _, (_, med), goal in rows)
    print("-" * (w + 46))
    print(f"all medians within their goals: {'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
