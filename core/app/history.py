"""A finished run's training history from its metrics.jsonl (per-exit losses over steps, dev scores per
evaluation), TensorBoard-style smoothing, the hyperparameters of its config.json as table columns, and
colours that stay apart for many runs. Torch-free, no streamlit.
"""
from __future__ import annotations

import colorsys

import numpy as np
import pandas as pd

# config.json fields a person compares runs by (the optimizer and hyperparameters)
HPARAMS = ["method", "optimizer", "weights", "lr", "head_lr", "omega_lr", "epochs", "batch_size", "max_train",
           "warmup_ratio", "weight_decay", "temperature", "lambda_div", "teachers", "seed"]


def train_history(records: list[dict]) -> pd.DataFrame:
    """One row per logged training step: step, epoch, loss, and `exit m` loss columns (1-based)."""
    rows = []
    for r in records:
        if r.get("kind") != "train" or r.get("step") is None:
            continue
        row = {"step": int(r["step"]), "epoch": r.get("epoch"), "stage": r.get("stage", ""),
               "loss": float(r["loss"]) if r.get("loss") is not None else np.nan}
        for m, v in enumerate(r.get("exit_losses") or []):
            row[f"exit {m + 1}"] = float(v)
        rows.append(row)
    return pd.DataFrame(rows).sort_values("step", kind="stable") if rows else pd.DataFrame(columns=["step", "loss"])


def dev_history(records: list[dict]) -> pd.DataFrame:
    """One row per dev evaluation: step, epoch, `exit m` scores, and `last exit` / `best exit` scores."""
    rows = []
    for r in records:
        if r.get("kind") != "eval" or r.get("split", "dev") != "dev" or not r.get("exit_scores"):
            continue
        scores = [float(v) for v in r["exit_scores"]]
        row = {"step": int(r.get("step") or 0), "epoch": r.get("epoch"), "last exit": scores[-1],
               "best exit": max(scores)}
        row.update({f"exit {m + 1}": v for m, v in enumerate(scores)})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("step", kind="stable") if rows else pd.DataFrame(columns=["step"])


def smooth(values, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard's smoothing): s_t = w s_{t-1} +
    (1 - w) x_t, divided by 1 - w^t so the first points are not pulled toward zero. weight 0: as is."""
    x = np.asarray(values, dtype=float)
    if weight <= 0 or x.size == 0:
        return x
    out = np.empty_like(x)
    acc, norm = 0.0, 0.0
    for t, v in enumerate(x):     # a few hundred logged steps per run: not a hot path
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[t] = acc / norm
    return out


def hparams(config: dict) -> dict:
    """The HPARAMS of a run's config.json (missing ones empty), values as short text."""
    out = {}
    for k in HPARAMS:
        v = config.get(k)
        out[k] = "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
    return out


def distinct_colors(n: int) -> list[str]:
    """n colours that stay apart: hues spread by the golden angle, lightness cycling through three
    levels, so 30 runs get 30 tellable colours (the first 8 are the app's usual run colours)."""
    base = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777", "#0891b2", "#ca8a04", "#64748b"]
    out = base[:n]
    for k in range(len(out), n):
        h = (k * 0.618033988749895) % 1.0
        light = (0.38, 0.52, 0.30)[k % 3]
        r, g, b = colorsys.hls_to_rgb(h, light, 0.75)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return out


def matches(text: str, fields: list) -> bool:
    """True when every word of the filter `text` occurs (case-insensitive) in one of `fields`."""
    hay = " ".join("" if f is None else str(f) for f in fields).lower()
    return all(w in hay for w in text.lower().split())
