"""One frontier over precision x rule x setting: a run's precision caches searched together. Torch-free.

    caches = load_precisions(run)                       # {"fp32": ExitCache, "int8": ExitCache, ...}
    frontier_points(caches, batch_size=32)              # every exact setting of every rule at every precision
    pick_precision(caches, max_drop=0.01, batch_size=32)  # "lose at most 1 point", fastest in wall clock

Scores are each precision's own (its cache holds the probabilities that precision computes), but the
reference is always the fp32 full model: "lose at most x points" is against fp32 full's dev score, and
wall-clock speed-up is fp32 full's ms per row at the named batch size over the setting's expected ms
per row at its precision (`metrics.batch_wallclock_speedup`, read off the caches' latency tables: a row
costs embeddings + every layer and exit head it runs through, divided by the batch size). Layer
speed-up (L / mean exit layer) is the same number at every precision, so precisions are only compared in
wall clock: searching several precisions needs a batch size with a latency table in each cache.

The search reuses the exact curves (`core.engine.curves.rule_curves`) on a view of each cache whose
per-layer costs are the latency table's ms per row at that batch size, so every candidate setting's
expected cost is exact, not sampled.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd

from core.engine import metrics
from core.engine.cache import PRECISIONS, ExitCache, precision_caches
from core.engine.curves import rule_curves
from core.engine.strategies import apply_features


def load_precisions(run) -> dict[str, ExitCache]:
    """{precision: cache} of every precision cache in a run folder (fp32 first). ValueError when a
    variant's dev rows are not the fp32 cache's (then its scores could not be compared)."""
    paths = precision_caches(run)
    if "fp32" not in paths:
        raise ValueError(f"{run}: no cache.npz (the fp32 cache every precision is compared with)")
    caches = {p: ExitCache.load(path) for p, path in paths.items()}
    check_same_rows(caches)
    return caches


def check_same_rows(caches: dict) -> None:
    """Every cache holds the same dev rows (labels, classes, layers) as the fp32 one; ValueError naming it."""
    if "fp32" not in caches:
        raise ValueError("the precisions searched must include fp32 (the reference every speed-up and score loss is against)")
    ref = caches["fp32"]
    for p, c in caches.items():
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {p!r}; valid: {', '.join(PRECISIONS)}")
        if (c.N, c.L, c.K) != (ref.N, ref.L, ref.K) or not np.array_equal(c.labels, ref.labels):
            raise ValueError(f"the {p} cache holds other dev rows than the fp32 cache ({c.N} rows, {c.L} layers "
                             f"against {ref.N}, {ref.L}); write it again with `python -m core.cache_variant`")


def has_batch(cache, batch_size: int) -> bool:
    table = cache.latency if isinstance(cache.latency, dict) else None
    return table is not None and str(int(batch_size)) in table.get("batches", {})


def batch_sizes(caches: dict) -> list[int]:
    """Batch sizes every cache has a latency table for (what a wall-clock comparison can name)."""
    sets = [set(map(int, (c.latency or {}).get("batches", {}))) for c in caches.values()]
    return sorted(set.intersection(*sets)) if sets else []


def batch_view(cache, batch_size: int):
    """A shallow copy of `cache` whose layer_ms / embed_ms are its latency table's ms per ROW at
    `batch_size` (layer + exit head, embeddings), so the exact curves' expected_ms is the mean ms per row
    of exiting there (`metrics.batch_exit_latency_ms`)."""
    row = metrics._batch_row(metrics._latency_table(cache), batch_size)
    view = copy.copy(cache)
    view.layer_ms = np.add(row["layer_ms"], row["head_ms"]) / int(row["rows"])
    view.embed_ms = float(row["embed_ms"]) / int(row["rows"])
    return view


def _check(caches: dict, batch_size, *, need_batch: bool = True) -> int | None:
    check_same_rows(caches)
    if batch_size is None:
        if len(caches) > 1 and need_batch:
            raise ValueError("comparing precisions needs a batch size for the wall-clock speed-up (layer speed-up is "
                             f"the same at every precision); name one of {batch_sizes(caches) or [1, 32]}")
        return None
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or int(batch_size) < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    lacking = [p for p, c in caches.items() if not has_batch(c, int(batch_size))]
    if lacking:
        raise ValueError(f"no latency table at batch size {batch_size} in the {', '.join(lacking)} cache(s); measure "
                         "one with `python -m core.cache_variant --run R --precision P` (batch sizes "
                         f"{batch_sizes(caches) or 'none'} are measured in every cache)")
    return int(batch_size)


def _fp32_full(caches: dict, batch_size: int | None) -> tuple[float, float | None]:
    """What every precision is measured against: fp32 full's dev score and, at `batch_size`, its latency
    (ms per row; None without a batch size)."""
    ref = caches["fp32"]
    score = metrics.score(ref.metric, ref.labels, ref.probs[:, -1].argmax(-1))
    return score, (None if batch_size is None else metrics.batch_full_latency_ms(ref, batch_size))


def frontier_points(caches: dict, *, batch_size: int | None = None, strategies=None,
                    max_points: int | None = metrics.SWEEP_POINTS) -> pd.DataFrame:
    """Every rule's exact settings (thinned to `max_points` a curve for drawing; None: all) at every
    precision, one frame: precision, strategy, params, score, delta_vs_fp32_full, mean_exit_layer,
    layer_speedup and, with `batch_size`, wallclock_speedup over fp32 full at that batch size (else NaN)."""
    bs = _check(caches, batch_size, need_batch=False)
    ref_full, ref_ms = _fp32_full(caches, bs)
    frames = []
    for p, c in caches.items():
        view = c if bs is None else batch_view(c, bs)
        f = metrics.cache_features(view)
        names = [s for s in (strategies or metrics.available_strategies(view)) if s != "oracle"]
        for s in names:
            frame = metrics.exact_sweep(view, s, feats=f, max_points=max_points)
            if frame.empty:
                continue
            if bs is None:
                frame["wallclock_speedup"] = np.nan
            else:   # exact_sweep's is over the view's own all-heads full model: rescale to fp32 plain full
                own_full = float(view.embed_ms + np.sum(view.layer_ms))
                frame["wallclock_speedup"] = ref_ms / (own_full / frame["wallclock_speedup"].to_numpy())
            frame.insert(0, "precision", p)
            frame["delta_vs_fp32_full"] = frame["score"] - ref_full
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def frontier_table(caches: dict, *, max_drop: float, batch_size: int | None = None, strategies=None) -> pd.DataFrame:
    """One row per (precision, rule): its fastest exact setting within `max_drop` (a fraction) of fp32
    full's dev score, fastest in wall clock at `batch_size` (layer speed-up when only fp32 is searched
    with no batch size); `meets` False (and the closest setting) when none is. Best first."""
    _, value = metrics.check_goal(max_drop=max_drop)
    bs = _check(caches, batch_size)
    ref_full, ref_ms = _fp32_full(caches, bs)
    rows = []
    for p, c in caches.items():
        view = c if bs is None else batch_view(c, bs)
        f = metrics.cache_features(view)
        for s in metrics.goal_rules(view, strategies):
            best = None   # (meets, key0, key1, curve, index)
            for cv in rule_curves(view, s, f):
                if not len(cv):
                    continue
                speed = cv.layer_speedup if bs is None else ref_ms / cv.expected_ms
                ok = cv.score >= ref_full - value - 1e-12
                meets = bool(ok.any())
                key = (speed, cv.score) if meets else (cv.score, speed)
                i = metrics._best_index(ok if meets else np.ones(len(cv), dtype=bool), key)
                cand = (meets, float(key[0][i]), float(key[1][i]), cv, i)
                if best is None or cand[:3] > best[:3]:
                    best = cand
            if best is None:
                continue
            meets, _, _, cv, i = best
            rows.append({"precision": p, "strategy": s, "params": json.dumps(cv.params(i), sort_keys=True),
                         "score": float(cv.score[i]), "delta": float(cv.score[i] - ref_full),
                         "layer_speedup": float(cv.layer_speedup[i]),
                         "wallclock_speedup": np.nan if bs is None else float(ref_ms / cv.expected_ms[i]),
                         "meets": meets})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    speed = "layer_speedup" if bs is None else "wallclock_speedup"
    return df.sort_values(["meets", speed, "score"], ascending=False, kind="stable").reset_index(drop=True)


def pick_precision(caches: dict, *, max_drop: float, batch_size: int | None = None, strategies=None,
                   run: str = "", seed: int = 0) -> metrics.OperatingPoint:
    """The goal picker over precision x rule x setting: the fastest setting (in wall clock over fp32 full at
    `batch_size`) whose dev score is within `max_drop` of fp32 full's, with its paired bootstrap
    intervals against fp32 full's predictions. One cache {"fp32": c} and no batch size is `metrics.pick`'s
    search by layer speed-up. ValueError, naming the closest, when nothing meets the goal."""
    table = frontier_table(caches, max_drop=max_drop, batch_size=batch_size, strategies=strategies)
    if table.empty or not table["meets"].iloc[0]:
        close = "; ".join(f"{r.precision} {r.strategy} loses at best {-100 * r.delta:.2f} points"
                          for r in table.itertuples()) or "no rule was searched"
        raise ValueError(f"no setting at any precision loses at most {100 * max_drop:g} points against fp32 full: {close}")
    best = table.iloc[0]
    p, params = best["precision"], json.loads(best["params"])
    cache, ref = caches[p], caches["fp32"]
    f = metrics.cache_features(cache)
    exit_layer, pred = apply_features(best["strategy"], f, **params)
    full_pred = ref.probs[:, -1].argmax(-1)
    scorer = metrics._fast_scorer(cache.metric, cache.labels)
    ev = {"strategy": best["strategy"], "params": params, "score": scorer(pred), "full_score": scorer(full_pred),
          **metrics.efficiency(exit_layer, cache.L, cache.layer_ms, cache.embed_ms)}
    op = metrics.OperatingPoint.from_evaluation(run, cache, ev)
    op.goal = {"max_drop": float(max_drop)}
    op.expected_ms = ev["expected_ms"]
    op.precision = p
    op.batch_size = None if batch_size is None else int(batch_size)
    if batch_size is not None:
        op.batch_wallclock_speedup = metrics.batch_wallclock_speedup(exit_layer, cache, int(batch_size), reference=ref)
    if cache.N < metrics.MIN_INTERVAL_N:
        op.interval_note = f"no interval: {cache.N} dev samples are too few (it needs at least {metrics.MIN_INTERVAL_N})"
        return op
    s_int, d_int = metrics.point_intervals(cache, pred, full_pred=full_pred, seed=seed)
    op.score_interval, op.delta_interval = [s_int.low, s_int.high], [d_int.low, d_int.high]
    op.interval_note = (f"{100 * metrics.LEVEL:g}% paired bootstrap over the {cache.N} dev samples against fp32 full "
                        f"({metrics.N_RESAMPLES} resamples, seed {seed})")
    return op
