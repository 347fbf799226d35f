"""Plain words first, the exact term behind them (issue 23 items 6, 7, 10): what a guarantee's epsilon
means in points of the score, a guarantee sentence without its method's jargon (the jargon, with the
paper's formula, goes into an expander), and the file names of the pages' table downloads.
Torch-free, no streamlit."""
from __future__ import annotations

import re

from core.engine.registry import STRATEGIES

RISK_WORDS = {"consistency": "differ from the full model's prediction",
              "gap": "are wrong where the full model is right"}

# the parenthesis a guarantee sentence of core.engine.calibrate / goal ends with, naming its method
_METHOD = re.compile(r"\s*\(((?:Learn-then-Test|Learn then Test|conformal risk control)[^()]*)\)(?=[.;]?\s*$|;)")

METHOD_DETAILS = {
    "ltt": ("Learn then Test (Angelopoulos, Bates, Candès, Jordan, Lei 2021). For each setting, in order from the "
            "safest, the Hoeffding-Bentkus p-value (the paper's Eq. 9) of 'risk > epsilon' is computed from its "
            "mean loss R on the n calibration samples: p = min(exp(-n h(min(R, epsilon), epsilon)), "
            "e * P[Binomial(n, epsilon) <= ceil(n R)]), with h(a, b) = a log(a / b) + (1 - a) log((1 - a) / "
            "(1 - b)). Fixed-sequence testing keeps every setting up to the first whose p-value exceeds delta; "
            "the fastest kept one is chosen. "
            "With probability at least 1 - delta over the calibration draw, its risk on new inputs is at most "
            "epsilon."),
    "crc": ("Conformal risk control (Angelopoulos, Bates, Fisch, Lei, Schuster 2022). For a loss that falls as "
            "the knob grows more careful, it picks the fastest setting whose calibration risk R satisfies "
            "n / (n + 1) * R + 1 / (n + 1) <= epsilon. The expected risk on a new input, over the calibration "
            "draw too, is then at most epsilon: a bound on average, not with a stated confidence."),
}


def epsilon_in_points(epsilon: float, risk: str, *, metric: str, goal_points: float | None = None) -> str:
    """One sentence: epsilon as points out of 100 inputs, what it caps, and the goal beside it."""
    pts = 100 * epsilon
    words = (f"Epsilon {epsilon:.3f}: at most {pts:.1f} of every 100 new inputs {RISK_WORDS[risk]}, so at most "
             f"{pts:.1f} points of accuracy lost against the full model")
    if metric != "accuracy":
        words += f" ({metric.replace('_', ' ')} can move by more)"
    if goal_points is not None:
        words += f"; your goal above: lose at most {goal_points:.1f} points (epsilon {goal_points / 100:.3f})"
    return words + "."


def plain_and_method(sentence: str) -> tuple[str, str | None]:
    """(the sentence without its method's parenthesis, that parenthesis) of a guarantee sentence."""
    found = _METHOD.search(sentence)
    if not found:
        return sentence, None
    return (sentence[:found.start()] + sentence[found.end():]).strip(), found.group(1)


def table_file_name(run_name: str, view: str) -> str:
    """'<run>-<view>.csv' for a table's download (instead of a dated 'export.csv'); characters a file
    name should not hold become '-'."""
    def part(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "table"
    return f"{part(run_name)}-{part(view)}.csv"


def setting_width(settings, *, px_per_char: float = 7.2, low: int = 160, high: int = 720) -> int:
    """A table column width (px) that shows the longest setting string whole ("ensemble=False,
    ensemble_span=all_passed, patience=1, ..." was cut at 220 px), within [low, high]."""
    longest = max((len(str(t)) for t in settings), default=0)
    return int(min(high, max(low, px_per_char * longest + 16)))


def plain_setting(strategy: str, params: dict) -> str:
    """A setting in the words of the knobs' labels ("vote threshold delta 3, layer exponent k 0" for
    "delta=3, k=0"), numbers to 4 significant digits, switches as on / off."""
    labels = STRATEGIES[strategy].labels if strategy in STRATEGIES else {}

    def value(v):
        if isinstance(v, bool):
            return "on" if v else "off"
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace("_", " ")
    words = [f"{labels.get(name, name).lower()} {value(v)}" for name, v in params.items()]
    return ", ".join(words) or "no knobs"
