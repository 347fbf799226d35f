"""The per-cache arrays every exit rule reads: one probs tensor [N, L, K] (with learned confidences and
labels where given) and what is derived from it, each computed on first use and shared by every rule
and every grid point. Torch-free.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np

EPS = 1e-12  # probabilities are clipped here before any log


def normalized_entropy(probs: np.ndarray, axis: int = -1, *, logp: np.ndarray | None = None) -> np.ndarray:
    """H(p) / log K over the class axis, in [0, 1]; `logp` (log probabilities clipped at EPS) when the
    caller has them already. The one implementation the rules, the app and the Playground use."""
    if logp is None:
        logp = np.log(np.clip(probs, EPS, None))
    return -(probs * logp).sum(axis) / np.log(probs.shape[axis])


# ---- per-cache features, computed once and shared by every rule and every grid point ------------
# Internally every array is layer-major ([L, N] or [K, L, N]): numpy is slow at reducing or scanning a
# short last axis (K is 2 or 3, L is 6 to 24), and fast at elementwise work on long contiguous rows,
# so the rules loop over the few layers or classes and stay vectorized over the samples.
class ExitFeatures:
    """Derived arrays of one probs tensor [N, L, K]; each computed on first use, all layer-major."""

    def __init__(self, probs: np.ndarray, confidence: np.ndarray | None = None,
                 labels: np.ndarray | None = None):
        self.probs = probs
        self.confidence = confidence
        self.labels = labels
        self.N, self.L, self.K = probs.shape

    @cached_property
    def planes(self) -> np.ndarray:  # [K, L, N] probabilities
        return np.ascontiguousarray(self.probs.transpose(2, 1, 0))

    @cached_property
    def log_planes(self) -> np.ndarray:  # [K, L, N] log probabilities, clipped at EPS
        return np.log(np.clip(self.planes, EPS, None))

    @cached_property
    def entropy(self) -> np.ndarray:  # [L, N] normalized entropy H(p) / log K, in [0, 1]
        return normalized_entropy(self.planes, axis=0, logp=self.log_planes)

    @cached_property
    def maxprob(self) -> np.ndarray:  # [L, N]
        return self.planes.max(0)

    @cached_property
    def argmax(self) -> np.ndarray:  # [L, N]; ties go to the lower class, as np.argmax does
        best = self.planes[0].copy()
        idx = np.zeros(best.shape, dtype=np.int64)
        for k in range(1, self.K):               # np.argmax(axis=0) would copy and transpose
            better = self.planes[k] > best
            idx[better] = k
            np.maximum(best, self.planes[k], out=best)
        return idx

    @cached_property
    def conf(self) -> np.ndarray:  # [L, N] learned confidence
        return np.ascontiguousarray(self.require_confidence("this rule").T)

    def argmax_at(self, layer0: np.ndarray) -> np.ndarray:
        """[N] argmax of each sample's probabilities at its 0-based layer `layer0[n]`."""
        if "argmax" in self.__dict__:
            return self.argmax[layer0, np.arange(self.N)]
        return self.probs[np.arange(self.N), layer0].argmax(-1)

    @cached_property
    def votes(self) -> tuple[np.ndarray, np.ndarray]:
        """Sun et al. §3.4: ([L, N] top vote count among layers 1..l, [L, N] the majority class).

        Ties go to the class that the latest of the tied layers predicted.
        """
        counts = np.zeros((self.K, self.N), dtype=np.int64)
        last_seen = np.zeros((self.K, self.N), dtype=np.int64)
        top = np.empty((self.L, self.N), dtype=np.int64)
        majority = np.empty((self.L, self.N), dtype=np.int64)
        classes = np.arange(self.K)[:, None]
        for m in range(self.L):
            hit = self.argmax[m][None, :] == classes                      # [K, N]
            counts += hit
            last_seen[hit] = m + 1
            top[m] = counts.max(0)
            majority[m] = (counts * (self.L + 1) + last_seen).argmax(0)  # count first, recency second
        return top, majority

    def divergence(self, measure: str) -> np.ndarray:
        """[L, L, N] S(p_m, p_i) at [m, i] for i < m (BADGE Eq. 3-4); +inf elsewhere."""
        key = f"_div_{measure}"
        if key not in self.__dict__:
            p, logp = self.planes[:, :, None, :], self.log_planes                # p_m: [K, m, 1, N]
            cross = -(p * logp[:, None, :, :]).sum(0)                              # -sum_k p_m log p_i
            if measure == "kd":  # Eq. 4
                s = cross
            elif measure == "kl":  # KL(p_m || p_i) = -H(p_m) + cross-entropy
                s = cross - self.entropy[:, None, :] * np.log(self.K)
            elif measure == "js":  # 1/2 KL(p_m || M) + 1/2 KL(p_i || M), M = (p_m + p_i) / 2
                q = self.planes[:, None, :, :]                                      # p_i: [K, 1, i, N]
                log_mix = np.log(np.clip(0.5 * (p + q), EPS, None))
                s = 0.5 * ((p * (logp[:, :, None, :] - log_mix)).sum(0)
                           + (q * (logp[:, None, :, :] - log_mix)).sum(0))
            else:
                raise ValueError(f"unknown divergence measure {measure!r}; valid: kd, kl, js")
            earlier = np.tri(self.L, k=-1, dtype=bool)[:, :, None]                 # [m, i, 1]: i < m
            self.__dict__[key] = np.where(earlier, s, np.inf)
        return self.__dict__[key]

    def confident(self, signal: str, threshold: float) -> np.ndarray:
        """[L, N] bool: is layer m confident under `signal` (PCEE-BERT §3.2)?"""
        if signal == "entropy":
            return self.entropy < threshold
        if signal == "maxprob":
            return self.maxprob >= threshold
        if signal == "learned":
            self.require_confidence("pcee with signal='learned'")
            return self.conf >= threshold
        raise ValueError(f"unknown confidence signal {signal!r}; valid: entropy, maxprob, learned")

    def require_confidence(self, who: str) -> np.ndarray:
        if self.confidence is None:
            raise ValueError(f"{who} needs `confidence` [N, L] (learned exit heads); this run has none")
        return self.confidence

    def require_labels(self, who: str) -> np.ndarray:
        if self.labels is None:
            raise ValueError(f"{who} needs `labels` [N]")
        return self.labels


def run_length(flags: np.ndarray) -> np.ndarray:
    """[L, N] bool -> [L, N] int: cnt_m = cnt_{m-1} + 1 if flags_m else 0 (PABEE; PCEE-BERT Eq. 2)."""
    out = np.zeros(flags.shape, dtype=np.int64)
    out[0] = flags[0]
    for m in range(1, len(flags)):
        np.multiply(out[m - 1] + 1, flags[m], out=out[m])
    return out


def _check_probs(probs) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must be [N, L, K] (samples, layers, classes); got shape {probs.shape}")
    if probs.shape[0] == 0 or probs.shape[1] == 0 or probs.shape[2] < 2:
        raise ValueError(f"probs needs N >= 1, L >= 1 and K >= 2; got shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probs must be floating point, got {probs.dtype}")
    if np.isnan(probs).any():
        raise ValueError("probs contains NaN")
    return probs


def features(probs, *, labels=None, confidence=None) -> ExitFeatures:
    """Validate inputs once and wrap them for repeated evaluation (sweeps)."""
    probs = _check_probs(probs)
    n, num_layers, _ = probs.shape
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape [{n}], got {labels.shape}")
    if confidence is not None:
        confidence = np.asarray(confidence)
        if confidence.shape != (n, num_layers):
            raise ValueError(f"confidence must have shape [{n}, {num_layers}], got {confidence.shape}")
        if np.isnan(confidence).any():
            raise ValueError("confidence contains NaN")
    return ExitFeatures(probs, confidence=confidence, labels=labels)
