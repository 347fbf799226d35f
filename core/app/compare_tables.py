"""Tables of Compare across runs: every run x every rule at one speed-up target, and every run's
optimizer and hyperparameters. Torch-free, no streamlit."""
from __future__ import annotations

import pandas as pd

from core.app.history import hparams
from core.engine import metrics


def rules_at_target(runs: list, target: float, titles: dict) -> pd.DataFrame:
    """One row per run (its method first), one column per rule: the rule's best dev score among its swept
    settings with layer speed-up >= `target` (empty where none gets there). Point scores; the row's
    "± 95%" is the binomial half-width at the full model's accuracy on the run's N dev samples (how far one
    dev set moves a score like these; None for metrics that are not a proportion). Explore's goal table
    gives each setting's own paired bootstrap interval."""
    rows = []
    for r in runs:
        best = metrics.best_at(r.sweeps(), target)
        full = float(r.per_exit[-1])
        row = {"run": r.name, "method": r.meta.get("method"), "full model": full,
               "± 95%": binomial_half_width(full, r.cache.N) if r.metric == "accuracy" else None}
        for s, score in zip(best["strategy"], best["score"]):
            row[titles.get(s, s)] = float(score)
        rows.append(row)
    df = pd.DataFrame(rows)
    rule_cols = [titles.get(s, s) for s in dict.fromkeys(s for r in runs for s in r.strategies)]
    return df.reindex(columns=["run", "method", "full model", "± 95%", *[c for c in rule_cols if c in df]])


def binomial_half_width(p: float, n: int, z: float = 1.96) -> float:
    """Half-width of the normal-approximation interval of an accuracy `p` measured on `n` samples."""
    return z * metrics.binomial_se(p, n)


def hparams_table(runs: list, configs: dict) -> pd.DataFrame:
    """One row per run: task, method, optimizer and the other hyperparameters from config.json."""
    return pd.DataFrame([{"run": r.name, "task": r.meta.get("task"), **hparams(configs.get(r.name) or {})}
                         for r in runs])
