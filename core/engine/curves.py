"""Exact trade-off curves: a rule's score and cost at EVERY knob value where some sample's exit
changes (core.engine.strategies.candidate_settings), computed in one pass instead of one `apply` per value.

A threshold rule moves a sample's exit only when the knob crosses one of that sample's breakpoints
(a layer where its signal reaches a new extreme), so sorting all breakpoints once and accumulating
each one's change of exit layer and of (prediction, label) cell gives every setting's confusion
matrix, mean exit layer and expected latency at once. Scores come from the confusion matrices, so
any task metric is exact, not just accuracy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from core.engine.features import ExitFeatures
from core.engine.strategies import apply_features, candidate_settings, exit_signal, fixed_choices


# ---- task scores from confusion matrices C[..., pred, label] -------------------------------------
def _safe_div(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def _f1_pos(C):  # binary F1 of class 1, zero_division=0 (sklearn's default average="binary")
    tp, fp, fn = C[..., 1, 1], C[..., 1, 0], C[..., 0, 1]
    return _safe_div(2 * tp, 2 * tp + fp + fn)


def confusion_score(metric: str, C: np.ndarray) -> np.ndarray:
    """Task score of every confusion matrix in C [..., K, K] (rows: prediction, cols: label); equals
    core.engine.metrics.score on the predictions the matrix counts."""
    C = np.asarray(C, dtype=np.float64)
    n = C.sum((-2, -1))
    correct = np.trace(C, axis1=-2, axis2=-1)
    if metric == "accuracy":
        return _safe_div(correct, n)
    if metric == "f1":
        return _f1_pos(C)
    if metric == "acc_f1":
        return 0.5 * (_safe_div(correct, n) + _f1_pos(C))
    pred_n, true_n = C.sum(-1), C.sum(-2)
    if metric == "mcc":  # sklearn's multiclass form (Gorodkin's R_K)
        cov_tp = correct * n - (pred_n * true_n).sum(-1)
        cov_pp = n ** 2 - (pred_n ** 2).sum(-1)
        cov_tt = n ** 2 - (true_n ** 2).sum(-1)
        return _safe_div(cov_tp, np.sqrt(cov_pp * cov_tt))
    if metric == "macro_f1":  # mean over the classes present in labels or predictions
        tp = np.diagonal(C, axis1=-2, axis2=-1)
        f1 = _safe_div(2 * tp, pred_n + true_n)
        present = (pred_n + true_n) > 0
        return _safe_div((f1 * present).sum(-1), present.sum(-1))
    raise ValueError(f"unknown metric {metric!r}; valid: accuracy, f1, acc_f1, mcc, macro_f1")


def confusion(pred: np.ndarray, labels: np.ndarray, K: int) -> np.ndarray:
    return np.bincount(pred * K + labels, minlength=K * K).reshape(K, K)


# ---- one rule at fixed other knobs: every setting ------------------------------------------------
@dataclass
class Curve:
    """Every distinct setting of one rule at fixed other knobs, safest first."""
    strategy: str
    fixed: dict                   # the knobs held fixed along the curve
    knob: str | None              # the swept knob (None: `listed` holds every setting)
    knobs: np.ndarray | None      # [J] its values
    listed: list[dict] | None     # [J] full params, when there is no single swept knob
    mean_exit_layer: np.ndarray   # [J]
    score: np.ndarray             # [J]
    expected_ms: np.ndarray | None = None   # [J] expected batch-1 latency
    L: int = 1
    full_ms: float | None = None
    _frontier: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.mean_exit_layer)

    def params(self, i) -> dict:
        """Full params of setting i, usable as apply(strategy, probs, **params)."""
        if self.listed is not None:
            return dict(self.listed[i])
        return {**self.fixed, self.knob: float(self.knobs[i])}

    @property
    def settings(self) -> list[dict]:
        return [self.params(i) for i in range(len(self))]

    @property
    def layer_speedup(self) -> np.ndarray:
        return self.L / self.mean_exit_layer

    @property
    def wallclock_speedup(self) -> np.ndarray | None:
        return None if self.expected_ms is None else self.full_ms / self.expected_ms

    def frontier(self) -> np.ndarray:
        """Indices of the settings no other setting of this curve beats on speed-up and score."""
        if self._frontier is None:
            self._frontier = pareto_mask(self.layer_speedup, self.score).nonzero()[0]
        return self._frontier


def spread(n: int, k: int) -> np.ndarray:
    """Up to `k` indices into n items, evenly spread and keeping both ends (how long lists are thinned)."""
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[J] bool: no other point has x >= and y > (or x > and y >=); higher is better on both."""
    order = np.lexsort((-y, -x))                    # x descending, then y descending
    best = np.maximum.accumulate(y[order])
    keep = y[order] > np.concatenate([[-np.inf], best[:-1]])
    mask = np.zeros(len(x), dtype=bool)
    mask[order[keep]] = True
    return mask


@dataclass
class Events:
    """A threshold rule's breakpoints over some samples, sorted from the safest knob value to the most
    aggressive: at event e, sample nn[e] moves its exit to layer mm[e] + 1 (from old_exit[e]) and its
    prediction from old_pred[e] to new_pred[e]. count[j] events have happened at knobs[j]."""
    mm: np.ndarray
    nn: np.ndarray               # position within the samples given (0..n-1)
    old_exit: np.ndarray
    old_pred: np.ndarray
    new_pred: np.ndarray
    final: np.ndarray            # [n] prediction when the rule never fires
    knobs: np.ndarray            # [J]
    count: np.ndarray            # [J]


def signal_events(sig, f: ExitFeatures, idx: np.ndarray | None = None) -> Events:
    """The breakpoints of `sig` (an ExitSignal on `f`) over the samples `idx` (all when None)."""
    L = f.L
    signal = sig.signal if idx is None else sig.signal[:, idx]
    sub = sig if idx is None else type(sig)(**{**sig.__dict__, "signal": signal})
    s = signal if sig.fires_below else -signal
    rec = sub.records()
    pred_at = f.argmax if sig.pred_at is None else sig.pred_at
    final = f.argmax[-1] if sig.final is None else sig.final
    if idx is not None:
        pred_at, final = pred_at[:, idx], final[idx]
    N = signal.shape[1]
    # next deeper breakpoint of each sample (L: none, the sample runs to the end)
    nxt = np.empty((L, N), dtype=np.int64)
    cur = np.full(N, L, dtype=np.int64)
    for m in range(L - 1, -1, -1):
        nxt[m] = cur
        cur = np.where(rec[m], m, cur)
    flat = np.flatnonzero(rec)                       # events, as m * N + n
    v = s.ravel().take(flat)
    order = np.argsort(v)
    flat, v = flat.take(order), v.take(order)
    mm, nn = np.divmod(flat, N)
    old = nxt.ravel().take(flat)
    old_pred = np.where(old == L, final.take(nn), pred_at.ravel().take(np.minimum(old, L - 1) * N + nn))
    first = np.flatnonzero(np.concatenate([[True], v[1:] != v[:-1]])) if len(v) else np.zeros(0, dtype=np.int64)
    distinct = v[first]
    knobs = sub.knob_values(distinct if sig.fires_below else -distinct[::-1], in_range_only=False)
    # events applied at each knob value, under the rule's own comparison (strict < or >=): knob j sits
    # just past the j-th distinct breakpoint, so it has applied every event before the (j+1)-th
    ends = np.concatenate([first[1:], [len(v)]])
    count = np.concatenate([[0], ends])[: len(knobs)] if sig.fires_below else \
        np.concatenate([[0] if len(knobs) > len(distinct) else [], ends]).astype(np.int64)
    keep = sub.in_range(knobs)
    knobs, count = knobs[keep], count[keep]
    return Events(mm, nn, np.minimum(old, L - 1) + 1, old_pred, pred_at.ravel().take(flat), final, knobs, count)


def exit_latency_ms(layer_ms, embed_ms=None) -> np.ndarray:
    """[L + 1] batch-1 latency of stopping after m layers, m = 0..L: embed_ms + sum(layer_ms[:m]).
    The last entry is the full model's latency. The one copy of this formula (core.engine.metrics re-exports it)."""
    return float(embed_ms or 0.0) + np.concatenate([[0.0], np.cumsum(layer_ms)])


def _signal_curve(sig, f: ExitFeatures, labels, metric: str, cum_ms, embed_ms: float) -> Curve:
    L, N, K = f.L, f.N, f.K
    ev = signal_events(sig, f)
    mm, count, old_exit, old_pred, new_pred, final = ev.mm, ev.count, ev.old_exit, ev.old_pred, ev.new_pred, ev.final
    lab = labels.take(ev.nn)
    knobs = ev.knobs

    def accumulate(delta, base):
        c = np.concatenate([[0], np.cumsum(delta)])
        return base + c[count]

    exit_sum = accumulate(mm + 1 - old_exit, float(N * L))
    if metric == "accuracy":
        score = accumulate((new_pred == lab).astype(np.int64) - (old_pred == lab), float((final == labels).sum())) / N
    else:
        cells = K * K
        rows = np.arange(1, len(mm) + 1)
        delta = np.zeros((len(mm) + 1, cells), dtype=np.int64)
        np.add.at(delta, (rows, new_pred * K + lab), 1)
        np.add.at(delta, (rows, old_pred * K + lab), -1)
        C = confusion(final, labels, K).ravel() + np.cumsum(delta, axis=0)[count]
        score = confusion_score(metric, C.reshape(-1, K, K))
    ms = full_ms = None
    if cum_ms is not None:
        full_ms = embed_ms + float(cum_ms[-1])
        ms = embed_ms + accumulate(cum_ms[mm + 1] - cum_ms[old_exit], float(cum_ms[-1] * N)) / N
    return Curve(sig.strategy, sig.fixed, sig.knob, knobs, None, exit_sum / N, score, ms, L, full_ms)


def _apply_curve(strategy: str, settings: list[dict], f: ExitFeatures, labels, metric, cum_ms,
                 embed_ms: float) -> Curve:
    """The same by one `apply` per setting (rules without a single swept threshold)."""
    exits, scores = [], []
    for p in settings:
        e, pred = apply_features(strategy, f, **p)
        exits.append(e)
        scores.append(confusion_score(metric, confusion(pred, labels, f.K)))
    exits = np.array(exits)
    ms = full_ms = None
    if cum_ms is not None:
        full_ms = embed_ms + float(cum_ms[-1])
        ms = embed_ms + cum_ms[exits].mean(1)
    return Curve(strategy, {}, None, None, list(settings), exits.mean(1), np.array(scores, dtype=np.float64), ms, f.L, full_ms)


def rule_curves(cache, strategy: str, f: ExitFeatures, *, max_apply: int = 64, **fixed) -> list[Curve]:
    """Every candidate setting of `strategy` (other knobs in `fixed`, else every patience / the
    paper's k values) with its score, mean exit layer and expected latency. Memoized on `f`."""
    key = ("_curves", strategy, json.dumps(fixed, sort_keys=True))
    memo = f.__dict__.setdefault("_curve_memo", {})
    if key in memo:
        return memo[key]
    labels = np.asarray(cache.labels)
    cum_ms = None if cache.layer_ms is None else exit_latency_ms(cache.layer_ms)   # embeddings added below
    embed_ms = float(cache.embed_ms or 0.0)
    curves = []
    for fx in fixed_choices(strategy, f, **fixed):
        sig = exit_signal(strategy, f, **fx)
        if sig is not None:
            curves.append(_signal_curve(sig, f, labels, cache.metric, cum_ms, embed_ms))
            continue
        settings = candidate_settings(strategy, f, **fx)
        if len(settings) > max_apply:  # PCEE ensemble: quantiles of the plain rule's breakpoints
            settings = [settings[i] for i in spread(len(settings), max_apply)]
        curves.append(_apply_curve(strategy, settings, f, labels, cache.metric, cum_ms, embed_ms))
    memo[key] = curves
    return curves


def thin(curve: Curve, max_points: int, *, max_frontier: int | None = None) -> np.ndarray:
    """Indices to keep when drawing: quantiles along the mean exit layer plus the curve's own frontier
    (all of it up to `max_frontier` points, default 4 x max_points; a longer frontier, as on large
    caches where nearly every setting trades a little score for a little speed, is itself thinned by
    quantiles, keeping both ends). Searches (metrics.pick, goal_table, calibrate) use every setting."""
    J = len(curve)
    if J <= max_points:
        return np.arange(J)
    max_frontier = 4 * max_points if max_frontier is None else max_frontier
    order = np.argsort(curve.mean_exit_layer, kind="stable")
    spaced = order[spread(J, max_points)]
    front = curve.frontier()
    if len(front) > max_frontier:
        front = front[np.argsort(curve.mean_exit_layer[front], kind="stable")]
        front = front[spread(len(front), max_frontier)]
    return np.union1d(spaced, front)
