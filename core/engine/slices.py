"""Slices of the dev samples: what an exit rule scores, where it lets samples out and what it saves on each
slice, where two rules (or one rule at two settings, or two runs on one dev set) disagree, and the slice
that disagrees most (a small slice finder in the spirit of Zeno's). Torch-free numpy; no loop over samples.

A slice feature is a pair (codes [N] int, names [G]): sample n belongs to group codes[n]; -1 is no group.

Uncertainty, named where it is shown:
    score, and its difference to the full model   paired percentile bootstrap over the slice's samples
                                                   (as core.engine.metrics.bootstrap_scores, 1,000 resamples,
                                                   seeded); no interval under metrics.MIN_INTERVAL_N samples
    mean exit layer, layer speed-up                normal interval of the slice's mean exit layer
                                                   (mean +- 1.96 s / sqrt(n)); the speed-up's is L / its ends
    a difference rate (share of samples differing) Wilson score interval of a binomial proportion
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from core.engine.curves import confusion_score
from core.engine.metrics import LEVEL, MIN_INTERVAL_N, N_RESAMPLES

Z95 = 1.959963984540054   # the normal quantile of a two-sided 95% interval
INTERVAL_WORDS = {
    "score": f"paired percentile bootstrap over the slice's samples ({N_RESAMPLES:,} resamples), "
             f"none under {MIN_INTERVAL_N} samples",
    "exit": "normal interval of the mean exit layer (mean +- 1.96 standard errors); the layer speed-up's "
            "interval is L over its ends",
    "rate": "Wilson score interval of a binomial proportion",
}


# ---- slice features ----------------------------------------------------------------------------------
def categories(values: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """A feature whose groups are given: values [N] in 0..len(names)-1."""
    return np.asarray(values, dtype=np.int64), [str(n) for n in names]


def word_counts(texts) -> np.ndarray:
    """[N] words (whitespace-separated runs) of each text; a pair counts both of its texts."""
    s = pd.Series([" ".join(map(str, t)) if isinstance(t, (list, tuple)) else str(t) for t in texts], dtype=object)
    return s.str.count(r"\S+").to_numpy(dtype=np.int64)


def length_bins(words: np.ndarray, n_bins: int = 4) -> tuple[np.ndarray, list[str]]:
    """Text length in about equal-sized bins (quantiles of the word counts): codes [N] and names such as
    '9-15 words'. Fewer bins when the counts have fewer distinct values."""
    words = np.asarray(words, dtype=np.int64)
    if words.size == 0:
        return words.copy(), []
    edges = np.unique(np.quantile(words, np.linspace(0, 1, n_bins + 1)[1:-1], method="higher").astype(np.int64))
    codes = np.searchsorted(edges, words, side="right")          # bin j holds edges[j-1] <= w < edges[j]
    used = np.bincount(codes, minlength=len(edges) + 1) > 0
    remap = np.cumsum(used) - 1
    codes = remap[codes]
    G = int(used.sum())
    lows, highs = np.full(G, words.max()), np.full(G, words.min())
    np.minimum.at(lows, codes, words)                           # each bin named by its own shortest and longest
    np.maximum.at(highs, codes, words)
    names = [f"{lo}-{hi} words" if lo != hi else f"{lo} words" for lo, hi in zip(lows, highs)]
    return codes.astype(np.int64), names


def exit_layers(exit_layer: np.ndarray, L: int) -> tuple[np.ndarray, list[str]]:
    """Each exit layer its own group: codes 0..L-1 named 'layer 1' .. 'layer L'."""
    return np.asarray(exit_layer, dtype=np.int64) - 1, [f"layer {m}" for m in range(1, L + 1)]


# ---- per-slice metrics -------------------------------------------------------------------------------
def _confusions(y, preds, K: int, weights=None) -> np.ndarray:
    """[len(preds), K, K] confusion matrices (rows: prediction, cols: label) over a fixed K classes (a
    slice may hold one class only, which core.engine.metrics' scorers, sizing K from the data, cannot score)."""
    return np.stack([np.bincount(p * K + y, weights, minlength=K * K).reshape(K, K) for p in preds])


def paired_bootstrap(metric: str, y, pred, full_pred, K: int, *, n_resamples: int = N_RESAMPLES,
                     seed: int = 0) -> np.ndarray:
    """[n_resamples, 2] scores of `pred` and `full_pred` on the same bootstrap resamples of the samples.
    As in core.engine.metrics.bootstrap_scores, each distinct (label, pred, full_pred) cell is drawn a
    multinomial number of times, which is resampling the samples with replacement."""
    code = (y * K + pred) * K + full_pred
    cells, counts = np.unique(code, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(y.size, counts / counts.sum(), size=n_resamples)  # [B, cells]
    cy, cp, cf = cells // (K * K), (cells // K) % K, cells % K
    out = np.empty((n_resamples, 2))
    for j, cpred in enumerate((cp, cf)):
        onehot = np.zeros((cells.size, K * K))
        onehot[np.arange(cells.size), cpred * K + cy] = 1.0
        out[:, j] = confusion_score(metric, (draws @ onehot).reshape(-1, K, K))
    return out


def slice_metrics(metric: str, labels, pred, full_pred, exit_layer, L: int, K: int, codes, names: list[str], *,
                  n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """One row per non-empty group of `codes` (-1: left out; K classes): its size, the rule's score on it with a 95%
    interval, the full model's score there and the difference (paired interval), the mean exit layer and
    the layer speed-up (L / mean exit layer) with their normal intervals, and how many of its samples the
    rule loses (right at the last exit, wrong at its own) and gains (the reverse)."""
    labels, pred, full_pred = (np.asarray(a, dtype=np.int64) for a in (labels, pred, full_pred))
    exit_layer = np.asarray(exit_layer, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    G = len(names)
    inside = codes >= 0
    c = codes[inside]
    n = np.bincount(c, minlength=G)
    el = exit_layer[inside]
    s1, s2 = np.bincount(c, el, minlength=G), np.bincount(c, el * el, minlength=G)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / n
        var = np.where(n > 1, (s2 - n * mean ** 2) / (n - 1), np.nan)
        half = Z95 * np.sqrt(np.clip(var, 0, None) / n)
    right, full_right = (pred == labels)[inside], (full_pred == labels)[inside]
    lost = np.bincount(c, right < full_right, minlength=G).astype(np.int64)
    gained = np.bincount(c, right > full_right, minlength=G).astype(np.int64)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(G))
    rows = []
    alpha = (1 - level) / 2
    for g in np.flatnonzero(n):       # one bootstrap per group (a handful), each vectorized over its samples
        idx = order[starts[g]: starts[g] + n[g]]
        y, p, f = labels[idx], pred[idx], full_pred[idx]
        score, full = confusion_score(metric, _confusions(y, (p, f), K))
        lo = hi = dlo = dhi = np.nan
        if n[g] >= MIN_INTERVAL_N:
            b = paired_bootstrap(metric, y, p, f, K, n_resamples=n_resamples, seed=seed)
            lo, hi = np.quantile(b[:, 0], [alpha, 1 - alpha])
            dlo, dhi = np.quantile(b[:, 0] - b[:, 1], [alpha, 1 - alpha])
        m_lo, m_hi = mean[g] - half[g], mean[g] + half[g]
        rows.append({"slice": names[g], "n": int(n[g]), "score": score, "score_low": lo, "score_high": hi,
                     "full_score": full, "delta": score - full, "delta_low": dlo, "delta_high": dhi,
                     "mean_exit_layer": mean[g], "exit_low": m_lo, "exit_high": m_hi,
                     "layer_speedup": L / mean[g],
                     "speedup_low": L / m_hi if np.isfinite(m_hi) else np.nan,
                     "speedup_high": L / max(m_lo, 1.0) if np.isfinite(m_lo) else np.nan,
                     "lost": int(lost[g]), "gained": int(gained[g])})
    return pd.DataFrame(rows, columns=SLICE_COLUMNS)


SLICE_COLUMNS = ["slice", "n", "score", "score_low", "score_high", "full_score", "delta", "delta_low", "delta_high",
                 "mean_exit_layer", "exit_low", "exit_high", "layer_speedup", "speedup_low", "speedup_high",
                 "lost", "gained"]


# ---- two decisions on the same samples ---------------------------------------------------------------
def differences(labels, exit_a, pred_a, exit_b, pred_b) -> pd.DataFrame:
    """The samples where A and B differ (prediction or exit layer), most different first: a flipped
    prediction first, then the larger exit-layer gap, then the sample's position. Columns: pos (index
    into the samples), exit_a, exit_b, gap (exit_b - exit_a), flip, right_a, right_b."""
    labels, pred_a, pred_b = (np.asarray(a, dtype=np.int64) for a in (labels, pred_a, pred_b))
    exit_a, exit_b = np.asarray(exit_a, dtype=np.int64), np.asarray(exit_b, dtype=np.int64)
    flip = pred_a != pred_b
    gap = exit_b - exit_a
    pos = np.flatnonzero(flip | (gap != 0))
    order = np.lexsort((pos, -np.abs(gap[pos]), ~flip[pos]))    # last key first: flip, |gap|, position
    pos = pos[order]
    return pd.DataFrame({"pos": pos, "exit_a": exit_a[pos], "exit_b": exit_b[pos], "gap": gap[pos],
                         "flip": flip[pos], "right_a": pred_a[pos] == labels[pos],
                         "right_b": pred_b[pos] == labels[pos]})


def wilson(k, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (low, high) of the proportion k / n, elementwise; nan where n == 0."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def find_slices(feats: dict[str, tuple[np.ndarray, list[str]]], differ, *, min_size: int = 20,
                depth: int = 2, top: int = 10) -> pd.DataFrame:
    """The slices where `differ` [N] bool is most often true: every group of one feature and (depth 2)
    every pair of groups of two features, at least `min_size` samples, ranked by difference rate, then
    size. A pair is listed only where it differs more often than each of its two groups alone (else it
    repeats what its parent says). Columns: slice ('gold label = negative & exit layer = layer 2'), n, differ, rate, low, high
    (Wilson 95%), lift (rate / the rate over all samples). The top rate is the largest of many slices,
    so it is optimistic; its interval is that of the one slice alone."""
    differ = np.asarray(differ, dtype=bool)
    overall = differ.mean() if differ.size else np.nan
    parts = []
    names_of = list(feats)
    single = {}                                                    # feature -> [G] rate of each of its groups
    for name, (c, groups) in feats.items():
        ok = c >= 0
        n1 = np.bincount(c[ok], minlength=len(groups))
        with np.errstate(divide="ignore", invalid="ignore"):
            single[name] = np.bincount(c[ok], differ[ok], minlength=len(groups)) / n1
    for r in range(1, depth + 1):
        for combo in combinations(names_of, r):
            code = np.zeros(differ.size, dtype=np.int64)
            valid = np.ones(differ.size, dtype=bool)
            sizes = []
            for name in combo:
                c, groups = feats[name]
                valid &= c >= 0
                code = code * len(groups) + np.clip(c, 0, None)
                sizes.append(len(groups))
            total = int(np.prod(sizes))
            n = np.bincount(code[valid], minlength=total)
            k = np.bincount(code[valid], differ[valid], minlength=total)
            keep = np.flatnonzero(n >= max(min_size, 1))
            if not keep.size:
                continue
            idx = np.array(np.unravel_index(keep, sizes)).T            # [kept, r] group of each feature
            if r > 1:  # a conjunction is news only where it differs more often than each of its parts alone
                rate = k[keep] / n[keep]
                parents = np.max([single[name][idx[:, j]] for j, name in enumerate(combo)], axis=0)
                new = rate > parents + 1e-12
                keep, idx = keep[new], idx[new]
                if not keep.size:
                    continue
            label = [" & ".join(f"{name} = {feats[name][1][j]}" for name, j in zip(combo, row)) for row in idx]
            parts.append(pd.DataFrame({"slice": label, "features": r, "n": n[keep], "differ": k[keep].astype(np.int64)}))
    if not parts:
        return pd.DataFrame(columns=["slice", "features", "n", "differ", "rate", "low", "high", "lift"])
    out = pd.concat(parts, ignore_index=True)
    out["rate"] = out["differ"] / out["n"]
    out["low"], out["high"] = wilson(out["differ"].to_numpy(), out["n"].to_numpy())
    out["lift"] = out["rate"] / overall if overall else np.nan
    out = out.sort_values(["rate", "n", "features"], ascending=[False, False, True], kind="stable")
    return out.head(top).reset_index(drop=True)
