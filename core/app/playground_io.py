"""What the Playground takes from elsewhere and how it reports timing: the knobs Explore last had, an
uploaded operating-point file, and latency medians with their spread over repeats. Torch-free."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from core.runs.folders import WEIGHTS_FILE
from core.serving import export

EXPLORE_LAST = "explore.last_point"   # session key: {"run", "strategy", "params"} Explore showed last
ADOPTED = "pg.adopted_from_explore"   # session key: the EXPLORE_LAST value the Playground took over


def explore_record(run_name: str, strategy: str, params: dict) -> dict:
    return {"run": run_name, "strategy": strategy, "params": dict(params)}


def knobs_to_adopt(state, run_name: str, strategy_key: str = "pg.strategy") -> dict | None:
    """Explore's last setting for this run when the Playground should open at it: it has not taken it
    over yet, or its own widgets are gone (a fresh visit). None otherwise."""
    last = state.get(EXPLORE_LAST)
    if not last or last.get("run") != run_name:
        return None
    if state.get(ADOPTED) == last and strategy_key in state:
        return None
    return last


def parse_point(raw: bytes, name: str, *, run_dir: str | os.PathLike, strategies: list[str]) -> dict:
    """An uploaded operating-point file, validated (core.export) and checked against the current run:
    same weights (sha256) when both are known, else the same run name; a rule this run can use.
    ValueError names the file and the fault."""
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{name}: not a JSON operating-point file ({type(e).__name__})") from None
    export.validate(data, where=name)
    run_dir = Path(run_dir)
    weights = run_dir / WEIGHTS_FILE
    want = data["weights"]["sha256"]
    if want is not None and weights.is_file():
        if export._cached_sha256(weights) != want:
            raise ValueError(f"{name}: made for other weights (run {data['run_name']!r}, sha256 {want[:12]}...) "
                             f"than run {run_dir.name!r}; pick that run in the sidebar or export the point again")
    elif data["run_name"] != run_dir.name:
        raise ValueError(f"{name}: made for run {data['run_name']!r}, not {run_dir.name!r}; pick that run in "
                         "the sidebar")
    if data["strategy"] not in strategies:
        raise ValueError(f"{name}: rule {data['strategy']!r} is not available on this run")
    return data


def timing_summary(runs_ms, full_runs_ms, *, L: int, exit_layer: int) -> dict:
    """Medians and spread (25th-75th percentile) of the early-exit and all-layers latencies over the
    repeats, the per-repeat speed-up's median and spread, the ideal L/m, and a plain sentence when the
    measured speed-up is above L/m (which only noise can do: early exit skips L - m of L layers)."""
    early, full = np.asarray(runs_ms, dtype=float), np.asarray(full_runs_ms, dtype=float)
    n = min(len(early), len(full))
    ratio = full[:n] / early[:n]
    out = {"repeats": n, "early_median": float(np.median(early)), "early_iqr": _iqr(early),
           "full_median": float(np.median(full)), "full_iqr": _iqr(full),
           "speedup_median": float(np.median(full) / np.median(early)), "speedup_iqr": _iqr(ratio),
           "ideal": L / exit_layer, "noise_note": None}
    if out["speedup_median"] > out["ideal"]:
        out["noise_note"] = (f"The measured speed-up {out['speedup_median']:.2f}x is above L/m = {L}/{exit_layer} = "
                             f"{out['ideal']:.2f}x, the most that skipping {L - exit_layer} of {L} layers can give: "
                             "the gap is timing noise, not a real gain.")
    return out


def timing_caption(t: dict) -> str:
    e, f, s = t["early_iqr"], t["full_iqr"], t["speedup_iqr"]
    return (f"Medians over {t['repeats']} repeats, with the spread (25th-75th percentile): early exit "
            f"{e[0]:.2f}-{e[1]:.2f} ms, all layers {f[0]:.2f}-{f[1]:.2f} ms, speed-up per repeat "
            f"{s[0]:.2f}-{s[1]:.2f}x. Ideal speed-up from the layers alone: L/m = {t['ideal']:.2f}x.")


def _iqr(x: np.ndarray) -> list[float]:
    return [float(np.percentile(x, 25)), float(np.percentile(x, 75))]
