"""Slider positions that move a similar share of samples per step: a rule's threshold knob as the
quantiles of the values where some sample's exit changes (its breakpoints), shown in the rule's own
units. A linear 0..1 entropy track puts nearly all the effect in its last tenth; this does not.
Torch-free.
"""
from __future__ import annotations

import numpy as np

from core.engine.features import features
from core.engine.registry import STRATEGIES
from core.engine.strategies import exit_signal

HELP = ("The track is spaced by quantiles: each step moves about the same number of samples' exits; "
        "the label is the value in the rule's own units.")
N_STOPS = 101          # slider positions: one per percent of the breakpoints


def scaled(strategy: str, name: str) -> bool:
    """Whether knob `name` of `strategy` gets quantile stops: it is the swept knob of a rule with a signal."""
    spec = STRATEGIES.get(strategy)
    return spec is not None and spec.signal is not None and spec.knob == name


def breakpoints(feats, strategy: str, fixed: dict) -> np.ndarray:
    """Every knob value at which one sample's exit moves by a layer (with multiplicity), ascending."""
    sig = exit_signal(strategy, feats, **fixed)
    if sig is None:
        return np.empty(0)
    return np.sort(sig.signal[sig.records()])


def quantile_stops(values: np.ndarray, low: float, high: float, *, n: int = N_STOPS,
                   digits: int = 4) -> list[float]:
    """`n` quantiles of `values` (rounded to `digits` decimals), plus the ends `low` and `high`:
    consecutive stops are about the same number of exit moves apart."""
    values = values[np.isfinite(values)]
    stops = np.quantile(values, np.linspace(0, 1, n)) if values.size else np.linspace(low, high, n)
    stops = np.round(np.clip(stops, low, high), digits)
    return sorted({float(low), float(high), *map(float, stops)})


def stops_for(cache, strategy: str, name: str, params: dict, low: float, high: float, feats=None) -> list[float] | None:
    """The slider stops of knob `name` of `strategy` (other knobs as in `params`), or None when the
    knob keeps its linear slider."""
    if not scaled(strategy, name):
        return None
    f = feats if feats is not None else features(cache.probs, labels=cache.labels, confidence=cache.confidence)
    fixed = {k: v for k, v in params.items() if k != name}
    try:
        values = breakpoints(f, strategy, fixed)
    except ValueError:
        return None
    return quantile_stops(values, low, high)


def with_value(stops: list[float], value: float) -> list[float]:
    """`stops` with `value` in it (an exact setting loaded from a table must stay exact)."""
    return stops if value in stops else sorted([*stops, float(value)])


def label_format(stops: list[float]):
    """The shortest %g format (4 significant digits or more) that gives every stop its own label: the
    slider and the address bar identify a stop by its label, so two stops shown as "1" would merge."""
    for digits in range(4, 13):
        if len({f"{x:.{digits}g}" for x in stops}) == len(stops):
            break
    return lambda x: f"{x:.{digits}g}"


def url_value(text, control) -> float:
    """A knob value from the address bar made valid for `control` (its default when unreadable), so
    a shared link's exact value is one of the stops."""
    return float(control.coerce(text))


def run_stops(run, control, state: dict, prefix: str = "") -> list[float] | None:
    """stops_for on a loaded run (views.RunData) for one Control, the other knobs read from `state`
    (the widget values) or their defaults; memoized on the run."""
    if not scaled(control.strategy, control.name):
        return None
    others = {c.name: state.get(prefix + c.key, c.default) for c in run.controls(control.strategy)
              if c.name != control.name}
    key = ("knob-stops", control.strategy, control.name, tuple(sorted((k, str(v)) for k, v in others.items())))
    return run.memo(key, lambda: stops_for(run.cache, control.strategy, control.name, others, control.low,
                                           control.high, feats=run.feats), limit=64)
