"""Why one sample exits where it does, under one rule: a sentence with the numbers the rule read (the
rule's registry entry writes it), and the rule's threshold (or patience window) drawn on the signal
chart of Traces. Torch-free.
"""
from __future__ import annotations

from core.engine.features import features
from core.engine.registry import Why
from core.engine.strategies import why as reason_for


def explain(cache, pos: int, strategy: str, params: dict) -> Why:
    """The reason `strategy` at `params` lets sample `pos` out at its exit layer (the rule's registry
    entry writes the sentence, from the sample's own features)."""
    sl = slice(pos, pos + 1)
    conf = None if cache.confidence is None else cache.confidence[sl]
    f = features(cache.probs[sl], labels=cache.labels[sl], confidence=conf)
    return reason_for(strategy, f, params, cache.label_names, int(cache.labels[pos]))


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
