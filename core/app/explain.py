"""Why one sample exits where it does, under one rule: a sentence with the numbers the rule read, and
the rule's threshold (or patience window) for the signal chart of Traces. Torch-free; reads the same
ExitFeatures the engine decides with, so the sentence and the decision cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.engine.strategies import apply_features, features, run_length

# the column of views.sample_signals each threshold is drawn on
SIGNAL_COLUMN = {"entropy": "entropy", "maxprob": "max-prob", "learned": "learned confidence"}


@dataclass(frozen=True)
class Why:
    exit_layer: int            # 1-based
    sentence: str              # plain text, numbers included
    signal: str | None = None  # column of sample_signals the threshold applies to
    threshold: float | None = None
    window: tuple[int, int] | None = None  # 1-based layers [first, last] of the run that fired
    per_layer: tuple[float, ...] | None = None  # a per-layer threshold (voting's delta * l^(k-1))


def _f(x: float) -> str:
    return f"{x:.3f}"


def _sample_features(cache, pos: int):
    sl = slice(pos, pos + 1)
    conf = None if cache.confidence is None else cache.confidence[sl]
    return features(cache.probs[sl], labels=cache.labels[sl], confidence=conf)


def explain(cache, pos: int, strategy: str, params: dict) -> Why:
    """The reason `strategy` at `params` lets sample `pos` out at its exit layer."""
    f = _sample_features(cache, pos)
    L = f.L
    exit_layer = int(apply_features(strategy, f, **params)[0][0])
    m0 = exit_layer - 1
    ran_out = exit_layer == L
    names = cache.label_names
    if strategy == "budget":
        return Why(exit_layer, f"The budgeted exit stops every sample at layer {params['layer']}.")
    if strategy == "oracle":
        right = f.argmax[:, 0] == cache.labels[pos]
        if right.any():
            return Why(exit_layer, f"The Oracle peeks at the label: layer {exit_layer} is the first exit that "
                                   f"predicts it ({names[int(cache.labels[pos])]}).")
        return Why(exit_layer, f"No exit predicts the label, so the Oracle runs to the last layer {L}.")
    if strategy in ("entropy", "maxprob", "lte") or (strategy == "pcee"):
        signal = {"entropy": "entropy", "maxprob": "maxprob", "lte": "learned"}.get(strategy,
                                                                                   params.get("signal", "entropy"))
        t = float(params["threshold"])
        values = getattr(f, {"entropy": "entropy", "maxprob": "maxprob", "learned": "conf"}[signal])[:, 0]
        word = {"entropy": "normalized entropy", "maxprob": "max-prob", "learned": "learned confidence"}[signal]
        op, not_op = ("<", ">=") if signal == "entropy" else (">=", "<")
        sure = f.confident(signal, t)[:, 0]
        if strategy != "pcee":
            if sure[m0]:
                before = (f" (layer {m0}: {_f(values[m0 - 1])} {not_op} {_f(t)})" if m0 > 0 else "")
                s = f"{word} {_f(values[m0])} {op} {_f(t)} at layer {exit_layer}, so it exits here{before}."
            else:
                best = int(np.argmin(values) if signal == "entropy" else np.argmax(values))
                s = (f"{word} never gets {op} {_f(t)} (closest {_f(values[best])} at layer {best + 1}), "
                     f"so it runs to the last layer {L}.")
            return Why(exit_layer, s[0].upper() + s[1:], SIGNAL_COLUMN[signal], t)
        p = int(params["patience"])
        run = run_length(sure[:, None])[:, 0]
        if run[m0] >= p:
            first = exit_layer - p + 1
            s = (f"{word} {op} {_f(t)} at {p} layer{'s' if p > 1 else ''} in a row (layers {first}-{exit_layer}: "
                 + ", ".join(_f(v) for v in values[first - 1:exit_layer]) + f"), so it exits at layer {exit_layer}.")
            return Why(exit_layer, s[0].upper() + s[1:], SIGNAL_COLUMN[signal], t, (first, exit_layer))
        s = (f"{word} is never {op} {_f(t)} for {p} layers in a row (longest run {int(run.max())}), "
             f"so it runs to the last layer {L}.")
        return Why(exit_layer, s[0].upper() + s[1:], SIGNAL_COLUMN[signal], t)
    if strategy == "patience":
        p = int(params["patience"])
        am = f.argmax[:, 0]
        same = np.zeros(L, dtype=bool)
        same[1:] = am[1:] == am[:-1]
        run = run_length(same[:, None])[:, 0]
        if run[m0] >= p:
            first = exit_layer - p
            return Why(exit_layer, f"The prediction ({names[int(am[m0])]}) stayed the same for {p} "
                                   f"layer{'s' if p > 1 else ''} after layer {first + 1} (layers {first + 1}-"
                                   f"{exit_layer}), so it exits at layer {exit_layer}.",
                       window=(first + 1, exit_layer))
        return Why(exit_layer, f"The prediction never stays the same for {p} more layers (longest run "
                               f"{int(run.max())}), so it runs to the last layer {L}.")
    if strategy == "dge":
        p, t, measure = int(params["patience"]), float(params["threshold"]), params.get("measure", "kd")
        div = f.divergence(measure)[:, :, 0]                     # [m, i]
        agree = (div < t).sum(1)
        close = ", ".join(f"{i + 1}: {_f(div[m0, i])}" for i in range(m0))
        if agree[m0] >= p:
            s = (f"At layer {exit_layer}, {int(agree[m0])} earlier layers are within {measure} divergence "
                 f"{_f(t)} (needs {p}; layer: divergence {close}), so it exits here.")
        else:
            s = f"No layer has {p} earlier layers within {measure} divergence {_f(t)}, so it runs to layer {L}."
        return Why(exit_layer, s)
    if strategy == "voting":
        k, delta = float(params["k"]), float(params["delta"])
        top, majority = f.votes
        layers = np.arange(1, L + 1, dtype=np.float64)
        v = top[:, 0] / layers ** k
        share_needed = tuple(float(delta * layer ** (k - 1)) for layer in layers)  # on vote share = top / l
        if v[m0] >= delta:
            s = (f"At layer {exit_layer}, {int(top[m0, 0])} of {exit_layer} layers vote "
                 f"{names[int(majority[m0, 0])]}: V = {int(top[m0, 0])} / {exit_layer}^{k:g} = {_f(v[m0])} "
                 f">= {delta:g}, so it exits here.")
        else:
            s = f"V = votes / l^{k:g} never reaches {delta:g} (at most {_f(v.max())}), so it runs to layer {L}."
        return Why(exit_layer, s, "vote share", None, per_layer=share_needed)
    return Why(exit_layer, f"Exits at layer {exit_layer}.")


def add_markers(fig, why: Why, color: str = "#111827"):
    """Draw `why`'s threshold (a dashed line on the signals strip, row 2) or patience window (a band)
    onto views.sample_figure's figure; returns it."""
    if why.threshold is not None:
        fig.add_hline(y=why.threshold, line=dict(color=color, dash="dash", width=1.5), row=2, col=1,
                      annotation_text=f"threshold {why.threshold:.3f} ({why.signal})",
                      annotation_position="top left", annotation_font_size=11)
    if why.per_layer is not None:
        fig.add_scatter(x=list(range(1, len(why.per_layer) + 1)), y=list(why.per_layer), mode="lines",
                        name="vote share needed", line=dict(color=color, dash="dash", width=1.5),
                        row=2, col=1)
    if why.window is not None:
        fig.add_vrect(x0=why.window[0] - 0.4, x1=why.window[1] + 0.4, fillcolor="#86efac", opacity=0.25,
                      line_width=0, row=2, col=1)
    fig.add_vline(x=why.exit_layer, line=dict(color="#16a34a", width=1), row=2, col=1)
    return fig
