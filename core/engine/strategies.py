"""Where every sample leaves a multi-exit model under one exit rule, given every exit's probabilities.

    apply(strategy, probs, *, labels=None, confidence=None, **params) -> (exit_layer, pred)

`probs` is [N, L, K]; `exit_layer` counts from 1 to L. Every rule (core/engine/rules.py, one registry
entry each) is written as two arrays over all samples and layers, computed with numpy at once:

    fire[n, m]     the rule lets sample n out at layer m (it only looks at layers <= m: causal)
    pred_at[n, m]  what it predicts if it exits there

A sample exits at its first firing layer; one that never fires exits at layer L with the rule's final
prediction. Because every rule is causal, `decide` on one sample's first m layers gives the same answer
as `apply` on the whole cache, which is what the real layer-by-layer predictor relies on. A rule with
a swept knob is also one signal crossing that knob (`exit_signal`), whose breakpoints are every
setting with a distinct exit configuration (`candidate_settings`). Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.engine.features import ExitFeatures, features
from core.engine.registry import STRATEGIES, Why, resolve_params


def apply_features(strategy: str, f: ExitFeatures, **params) -> tuple[np.ndarray, np.ndarray]:
    """`apply` on precomputed features (what sweeps call in their inner loop)."""
    params = resolve_params(strategy, params, f.L)
    fire, pred_at, final = STRATEGIES[strategy].rule(f, **params)   # [L, N]
    fired = fire.any(axis=0)
    first = np.where(fired, fire.argmax(axis=0), f.L - 1)              # 0-based exit layer
    if pred_at is None:
        pred = f.argmax_at(first)
    else:
        pred = np.where(fired, pred_at[first, np.arange(f.N)], final)
    return (first + 1).astype(np.int64), pred.astype(np.int64)


def apply(strategy: str, probs, *, labels=None, confidence=None, **params) -> tuple[np.ndarray, np.ndarray]:
    """Exit layer (1..L) and prediction of every sample under `strategy` with `params`."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    return apply_features(strategy, features(probs, labels=labels, confidence=confidence), **params)


def decide(strategy: str, probs_prefix, *, confidence=None, label=None, **params) -> tuple[bool, int]:
    """For ONE sample's layers 1..m ([m, K]): does the rule fire at layer m, and what does it predict?

    The rules are causal, so a predictor that stops at the first m where this fires makes the same
    decision as `apply` on the full cache.
    """
    probs_prefix = np.asarray(probs_prefix)
    if probs_prefix.ndim != 2:
        raise ValueError(f"probs_prefix must be [m, K] for one sample, got shape {probs_prefix.shape}")
    conf = None if confidence is None else np.asarray(confidence, dtype=np.float32)[None, : probs_prefix.shape[0]]
    labels = None if label is None else np.asarray([label])
    f = features(probs_prefix[None], labels=labels, confidence=conf)
    fire, pred_at, _ = STRATEGIES[strategy].rule(f, **resolve_params(strategy, params))
    pred = f.argmax[-1, 0] if pred_at is None else pred_at[-1, 0]
    return bool(fire[-1, 0]), int(pred)


# ---- exact candidate settings: the knob values where some sample's exit changes -----------------
# Every rule with a continuous knob fires at layer m exactly when one per-(layer, sample) signal
# crosses the knob, so its breakpoints are finitely many and can be listed. (Issue 9.)
@dataclass
class ExitSignal:
    """A rule at fixed other knobs, written as `fire[m, n] = signal[m, n] < knob` (fires_below) or
    `signal[m, n] >= knob` (not fires_below). Same fire, pred_at and final as the rule itself."""
    strategy: str
    knob: str                         # the swept parameter ("threshold" or "delta")
    fixed: dict                       # the other knobs, resolved
    signal: np.ndarray                # [L, N] float64; +-inf where the rule can never fire
    fires_below: bool
    pred_at: np.ndarray | None        # [L, N] or None (the exit's own argmax)
    final: np.ndarray | None          # [N] or None (layer L's argmax)
    low: float | None
    high: float | None

    def records(self) -> np.ndarray:
        """[L, N] bool: layers where the signal reaches a new extreme toward firing (a breakpoint). The
        last layer is never one: firing there or running to the end gives the same exit and prediction."""
        s = self.signal if self.fires_below else -self.signal
        rec = np.zeros(s.shape, dtype=bool)
        rec[0] = np.isfinite(s[0])
        best = s[0].copy()
        for m in range(1, len(s)):
            rec[m] = s[m] < best
            np.minimum(best, s[m], out=best)
        rec[-1] = False
        return rec & np.isfinite(s)

    def knob_values(self, breakpoints: np.ndarray | None = None, *, in_range_only: bool = True) -> np.ndarray:
        """One knob value per distinct exit configuration, from the safest (fewest samples fire) to the
        most aggressive. Fires-below rules get midpoints between breakpoints (robust to rounding);
        fires-at-or-above rules get the breakpoints themselves (exactly attainable values, e.g. V_l)."""
        u = np.unique(self.signal[self.records()]) if breakpoints is None else breakpoints  # ascending
        if self.fires_below:
            if u.size == 0:
                return u
            upper = u[-1] + 1e-6 if self.high is None else min(u[-1] + 1e-6, self.high)
            mid = (u[:-1] + u[1:]) / 2
            mid = np.where(mid > u[:-1], mid, u[1:])   # adjacent floats: u[j+1] itself still separates them
            vals = np.concatenate([[u[0]], mid, [upper] if upper > u[-1] else []])
        else:
            u = u[::-1]
            top = u[0] + 1e-6 if u.size else None
            head = [] if top is None or (self.high is not None and top > self.high) else [top]
            vals = np.concatenate([head, u])
        return vals[self.in_range(vals)] if in_range_only else vals

    def in_range(self, vals: np.ndarray) -> np.ndarray:
        lo = -np.inf if self.low is None else self.low
        hi = np.inf if self.high is None else self.high
        return (vals >= lo) & (vals <= hi)


def exit_signal(strategy: str, f: ExitFeatures, **fixed) -> ExitSignal | None:
    """The rule `strategy` at the knobs `fixed` as one signal and its swept knob (the entry's `signal`
    and `knob`); None for rules without a continuous knob (budget, patience, oracle) or whose
    predictions depend on the knob (PCEE with the cross-layer ensemble)."""
    spec = STRATEGIES[strategy]
    if spec.signal is None:
        return None
    knob = spec.params[spec.knob]
    p = resolve_params(strategy, {spec.knob: knob.low if knob.low is not None else 0.0, **fixed}, f.L)
    p.pop(spec.knob)
    out = spec.signal(f, p)
    if out is None:
        return None
    sig, below, pred_at, final = out
    return ExitSignal(strategy, spec.knob, p, np.asarray(sig, dtype=np.float64), below, pred_at, final,
                      knob.low, knob.high)


def fixed_choices(strategy: str, f: ExitFeatures, **fixed) -> list[dict]:
    """The settings of the non-swept knobs a search covers (the entry's `search`: every patience for
    PCEE and DGE, the paper's k values for voting); knobs given in `fixed` are kept as given."""
    search = STRATEGIES[strategy].search
    out = [dict(fixed)]
    for name, values in (search(f) if search else {}).items():
        if name not in fixed:
            out = [{**o, name: v} for o in out for v in values]
    return out


def candidate_settings(strategy: str, f: ExitFeatures, **fixed) -> list[dict]:
    """Every setting of `strategy` with a distinct exit configuration on these features (the
    breakpoints of the rule's signal), safest first within each choice of the other knobs."""
    spec = STRATEGIES[strategy]
    if spec.settings is not None:
        return spec.settings(f)
    out = []
    for fx in fixed_choices(strategy, f, **fixed):
        sig = exit_signal(strategy, f, **fx)
        if sig is None:  # PCEE ensemble: the breakpoints of the plain rule at the same knobs
            sig = exit_signal(strategy, f, **{**fx, "ensemble": False})
        out += [{**fx, sig.knob: float(v)} for v in sig.knob_values()]
    return out


# ---- why one sample exits where it does -----------------------------------------------------------------
def why(strategy: str, f: ExitFeatures, params: dict, label_names: list, label: int) -> Why:
    """The reason `strategy` at `params` lets the ONE sample of `f` out where it does: the entry's own
    sentence, or for a threshold rule the sentence read off its signal."""
    exit_layer = int(apply_features(strategy, f, **params)[0][0])
    spec = STRATEGIES[strategy]
    if spec.why is not None:
        return spec.why(f, params, exit_layer, label_names, label)
    sig = exit_signal(strategy, f, **{k: v for k, v in params.items() if k != spec.knob})
    if sig is None:
        return Why(exit_layer, f"Exits at layer {exit_layer}.")
    t, values, m0 = float(params[spec.knob]), sig.signal[:, 0], exit_layer - 1
    word = spec.signal_name or f"the {spec.label} signal"
    op, not_op = ("<", ">=") if sig.fires_below else (">=", "<")
    fired = values[m0] < t if sig.fires_below else values[m0] >= t
    if fired:
        before = f" (layer {m0}: {values[m0 - 1]:.3f} {not_op} {t:.3f})" if m0 > 0 else ""
        s = f"{word} {values[m0]:.3f} {op} {t:.3f} at layer {exit_layer}, so it exits here{before}."
    else:
        best = int(np.argmin(values) if sig.fires_below else np.argmax(values))
        s = (f"{word} never gets {op} {t:.3f} (closest {values[best]:.3f} at layer {best + 1}), "
             f"so it runs to the last layer {f.L}.")
    return Why(exit_layer, s[0].upper() + s[1:], spec.signal_column, t)
