"""Does a run show anything? Plain sentences for a model that learned nothing usable.

    assess(cache) -> list[str]     # [] for a model that learned something

Two signs, computed from the dev-set ExitCache (vectorized, no torch):
- every exit predicts one class for nearly every sample (>= `one_class_share` of them), or
- no exit's accuracy beats always answering the most common dev label by more than `z` binomial
  standard errors of that chance rate (sqrt(p (1 - p) / N)): the difference is within chance.
Either way the exit rules' scores and speed-ups compare guesses; each sentence says what to try.
Home, Explore, Compare and core.report show the sentences (label names in them are user text).
"""
from __future__ import annotations

import numpy as np

ONE_CLASS_SHARE = 0.99
Z = 2.0
ADVICE = "Train it longer (more epochs) or on more training rows, then look again."


def majority_score(metric: str, labels) -> float:
    """The score of always answering the most common label: the chance line a run is held against
    (here and in core.train's weak-budget warnings)."""
    from core.engine.metrics import score

    labels = np.asarray(labels, dtype=int)
    return float(score(metric, labels, np.full_like(labels, int(np.bincount(labels).argmax()))))


def assess(cache, *, one_class_share: float = ONE_CLASS_SHARE, z: float = Z) -> list[str]:
    """Plain sentences naming what is wrong with a run whose exits learned nothing usable."""
    from core.engine.metrics import binomial_se

    probs = np.asarray(cache.probs)
    labels = np.asarray(cache.labels)
    names = list(cache.label_names)
    N, L, K = probs.shape
    if N == 0:
        return []
    pred = probs.argmax(-1)                                         # [N, L]
    counts = (pred[..., None] == np.arange(K)).sum(0)               # [L, K]
    top_share = counts.max(1) / N                                   # [L]
    acc = (pred == labels[:, None]).mean(0)                         # [L]
    label_counts = np.bincount(labels, minlength=K)
    chance = majority_score("accuracy", labels)                     # always the most common label
    common = names[int(label_counts.argmax())]
    margin = z * binomial_se(chance, N)
    if (top_share >= one_class_share).all():
        said = sorted({names[int(k)] for k in counts.argmax(1)})
        which = f"'{said[0]}'" if len(said) == 1 else "one class (" + ", ".join(f"'{s}'" for s in said) + ")"
        return [f"Every exit answers {which} for nearly every sample (at least {top_share.min():.0%} of the "
                f"{N} dev samples): the model has not learned to tell the classes apart, so the exit rules' "
                f"scores and speed-ups here show nothing yet. {ADVICE}"]
    if (acc <= chance + margin).all():
        return [f"No exit does better than always answering the most common label '{common}' "
                f"({chance:.1%} of the {N} dev samples): the best exit's accuracy, {acc.max():.1%}, is "
                f"within chance of it (± {margin:.1%}), so the exit rules compare guesses. {ADVICE}"]
    return []
