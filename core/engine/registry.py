"""The registry of exit rules: one `Strategy` entry holds everything about a rule (its function, its
knobs with their ranges and slider ends, the knob a sweep moves and the signal it crosses, what it
needs, the why-sentence of one sample's exit, its words and colour), and every other part reads it:
the engine, the exact curves, calibration, the goal picker, the batched predictor and the pages.
Adding a rule is one `register(Strategy(...))` call (core/engine/rules.py holds the papers' rules).
Torch-free.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from core.engine.features import ExitFeatures

# what a rule returns: fire [L, N], pred_at [L, N] | None (layer m's own argmax), final [N] | None
RuleResult = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]
# what a rule's `signal` returns at fixed other knobs: signal [L, N], fires_below, pred_at, final
SignalResult = tuple[np.ndarray, bool, np.ndarray | None, np.ndarray | None]


@dataclass(frozen=True)
class Param:
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None          # validation bound; None: unbounded
    choices: tuple | None = None
    help: str = ""
    up_to_layers: bool = False         # the value is a layer: at most the model's L (validated)
    most: Callable[[int], int] | None = None  # the largest value an L-layer model can meet (a count of layers)
    slider: Callable[[ExitFeatures], tuple[float, float, str | None]] | None = None
    #   (upper end, step, format) of the knob's slider where `high` does not give it


@dataclass(frozen=True)
class Why:
    """Why one sample exits where it does under one rule."""
    exit_layer: int            # 1-based
    sentence: str              # plain text, numbers included
    signal: str | None = None  # column of the sample's signal table the threshold applies to
    threshold: float | None = None
    window: tuple[int, int] | None = None  # 1-based layers [first, last] of the run that fired
    per_layer: tuple[float, ...] | None = None  # a per-layer threshold (voting's delta * l^(k-1))


# why(f, params, exit_layer, label_names, label) for ONE sample's features
WhyFunction = Callable[[ExitFeatures, dict, int, list, int], Why]


@dataclass(frozen=True)
class Strategy:
    """Everything about one exit rule, in one place."""
    name: str
    rule: Callable[..., RuleResult]
    params: dict[str, Param] = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # "labels", "confidence"
    option_needs: dict[tuple[str, Any], str] = field(default_factory=dict)  # (param, value) -> need
    title: str = ""
    source: str = ""
    tab: str = ""                # short label (Explore's tab, pickers)
    color: str = "#334155"       # the same on every page
    explain: str = ""            # one plain line under the rule's controls
    labels: dict[str, str] = field(default_factory=dict)    # param name -> widget label
    knob: str | None = None      # the knob sweeps and calibration move
    signal: Callable[[ExitFeatures, dict], SignalResult | None] | None = None
    #   the rule at fixed other knobs as `signal < knob` (fires_below) or `signal >= knob`; None when
    #   the rule has no continuous knob (its `settings` list every distinct setting instead)
    signal_name: str = ""        # the signal in words ("normalized entropy"), for the why-sentence
    signal_column: str | None = None  # its column in the sample's signal table (Traces)
    search: Callable[[ExitFeatures], dict[str, list]] | None = None  # values of the other knobs a search covers
    why: WhyFunction | None = None    # None: the threshold sentence read off `signal`
    grid: Callable[[ExitFeatures], list[dict]] | None = None      # quantile grid (metrics.default_grid)
    settings: Callable[[ExitFeatures], list[dict]] | None = None  # every candidate setting, where the
    #   rule has no `signal`, from the earliest exit to the latest

    @property
    def label(self) -> str:
        return self.tab or self.title or self.name

    def needs_for(self, params: dict) -> set[str]:
        """What the rule needs at these knobs (learned confidence, labels)."""
        return set(self.needs) | {need for (name, value), need in self.option_needs.items()
                                  if params.get(name, self.params[name].default) == value}


STRATEGIES: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    """Add (or replace) a rule; registry order is the app's and the report's order."""
    if strategy.signal is not None and strategy.knob not in strategy.params:
        raise ValueError(f"rule {strategy.name!r}: a signal needs its swept knob among the params")
    STRATEGIES[strategy.name] = strategy
    return strategy


class RegistryField(Mapping):
    """A live read-only {rule name: one field of its entry} over STRATEGIES, so a rule registered
    later (a test, a plug-in) shows up wherever the app looks one up."""

    def __init__(self, attr: str):
        self.attr = attr

    def __getitem__(self, name: str):
        return getattr(STRATEGIES[name], self.attr)

    def __iter__(self):
        return iter(STRATEGIES)

    def __len__(self) -> int:
        return len(STRATEGIES)


def deployable() -> list[str]:
    """The rules a model can deploy (every registered one but the label-reading Oracle), in registry order."""
    return [n for n, s in STRATEGIES.items() if "labels" not in s.needs]


def resolve_params(strategy: str, params: dict, num_layers: int | None = None) -> dict:
    """Check names, types and ranges of `params` for `strategy`; fill defaults. ValueError otherwise."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    spec = STRATEGIES[strategy].params
    unknown = set(params) - set(spec)
    if unknown:
        valid = ", ".join(spec) or "none"
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for strategy {strategy!r}; valid: {valid}")
    out = {}
    for name, p in spec.items():
        value = params.get(name, p.default)
        if value is None:
            raise ValueError(f"strategy {strategy!r} needs parameter {name!r}")
        if p.kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{strategy}.{name} must be True or False, got {value!r}")
            value = bool(value)
        elif p.kind is int:
            if isinstance(value, (bool, np.bool_)) or not float(value).is_integer():
                raise ValueError(f"{strategy}.{name} must be an integer, got {value!r}")
            value = int(value)
        elif p.kind is float:
            value = float(value)
            if not np.isfinite(value):
                raise ValueError(f"{strategy}.{name} must be a finite number, got {value!r}")
        elif p.choices is not None and value not in p.choices:
            raise ValueError(f"{strategy}.{name} must be one of {', '.join(p.choices)}; got {value!r}")
        high = num_layers if (p.up_to_layers and num_layers is not None) else p.high
        if p.low is not None and value < p.low or high is not None and value > high:
            rng = f"[{p.low}, {high if high is not None else 'inf'}]"
            raise ValueError(f"{strategy}.{name} = {value!r} is out of range {rng}")
        out[name] = value
    return out
