"""What Explore and Compare show about a run's precision caches (issue 22): one frontier over precision
x rule x setting, in layer speed-up or in wall clock over fp32 full at a batch size the user names.
Torch-free, no streamlit: the pages draw what these return. The search is core.engine.frontier's."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from core.app.figures import COLORS, _fig, layout
from core.engine import frontier, metrics
from core.engine.cache import ExitCache, precision_caches
from core.engine.strategies import apply

AXES = {"wallclock": "wall-clock speed-up over fp32 full", "layer": "layer speed-up"}
SYMBOLS = {"fp32": "circle", "int8": "diamond", "fp16": "square", "bf16": "triangle-up"}
DASH = {"fp32": "solid", "int8": "dot", "fp16": "dash", "bf16": "dashdot"}
LINE = {"fp32": "#4a4a4a", "int8": "#c2185b", "fp16": "#00897b", "bf16": "#6d4c41"}   # each precision's frontier


def _stamp(run) -> tuple:
    """The run's precision cache files with their modification times (a memo key that sees rewrites)."""
    return tuple((p, path.stat().st_mtime_ns) for p, path in precision_caches(run.path).items())


def _load(run) -> tuple[dict, dict]:
    def make():
        out, bad = {"fp32": run.cache}, {}
        for p, path in precision_caches(run.path).items():
            if p == "fp32":
                continue
            try:
                c = ExitCache.load(path)
                frontier.check_same_rows({"fp32": run.cache, p: c})
                out[p] = c
            except ValueError as e:
                bad[p] = str(e)
        return out, bad
    return run.memo(("precision-caches", _stamp(run)), make, limit=4)


def caches(run) -> dict:
    """{precision: ExitCache} of a run (fp32 is the run's own loaded cache), memoized on the run. A variant
    that cannot be read, or holds other rows, is left out (`problems(run)` says why)."""
    return _load(run)[0]


def problems(run) -> dict:
    """{precision: why its cache is left out}."""
    return _load(run)[1]


def available(run) -> list[str]:
    """Precisions this run has caches for (fp32 first): what Explore offers."""
    return list(caches(run))


def batch_sizes(run, precisions=None) -> list[int]:
    """Batch sizes with a latency table in every chosen precision's cache (1 and 32 as core.cache_variant measures)."""
    cs = caches(run)
    return frontier.batch_sizes({p: cs[p] for p in (precisions or cs) if p in cs})


def _chosen(run, precisions) -> dict:
    cs = caches(run)
    chosen = {p: cs[p] for p in dict.fromkeys(["fp32", *(precisions or [])]) if p in cs}
    return chosen


def _shared(run, kind: str, chosen: dict, batch_size, make, *extra):
    """`make()` memoized on the run (shared by every session) under the caches' files, the chosen
    precisions and the batch size: the frontier does not move with the knobs, so a rerun reuses it."""
    return run.memo((kind, _stamp(run), tuple(chosen), batch_size, *extra), make, limit=16)


def setting_table(run, strategy: str, params: dict, precisions, batch_size: int | None, seed: int = 0) -> pd.DataFrame:
    """The open rule at its current knobs at each precision: score, vs fp32 full with its 95% paired
    bootstrap interval, mean exit layer, layer speed-up and (with a batch size) wall-clock speed-up over
    fp32 full at that batch size. Memoized on the run (a setting another session already opened is reused)."""
    chosen = _chosen(run, precisions)
    key = ("precision-setting", _stamp(run), tuple(chosen), batch_size, strategy,
           json.dumps(params, sort_keys=True, default=str), seed)
    return run.memo(key, lambda: _setting_table(chosen, strategy, params, batch_size, seed), limit=256)


def _setting_table(chosen: dict, strategy: str, params: dict, batch_size: int | None, seed: int) -> pd.DataFrame:
    ref = chosen["fp32"]
    full_pred = ref.probs[:, -1].argmax(-1)
    rows = []
    for p, c in chosen.items():
        layers, pred = apply(strategy, c.probs, labels=c.labels, confidence=c.confidence, **params)
        s_int, d_int = metrics.point_intervals(c, pred, full_pred=full_pred, seed=seed)
        wall = None
        if batch_size is not None and frontier.has_batch(c, batch_size) and frontier.has_batch(ref, batch_size):
            wall = metrics.batch_wallclock_speedup(layers, c, batch_size, reference=ref)
        rows.append({"precision": p, "score": s_int.estimate, "vs fp32 full": d_int.estimate,
                     "95% interval": f"[{d_int.low:+.4f}, {d_int.high:+.4f}]",
                     "mean exit layer": float(layers.mean()), "layer speed-up": c.L / float(layers.mean()),
                     "wall-clock speed-up": wall})
    return pd.DataFrame(rows)


def goal_table(run, points: float, precisions, batch_size: int | None) -> pd.DataFrame:
    """"Lose at most `points` points against fp32 full" over precision x rule x setting: one row per
    precision and rule, fastest first (core.engine.frontier.frontier_table), with a readable setting."""
    chosen = _chosen(run, precisions)
    bs = batch_size if len(chosen) > 1 or batch_size is not None else None
    table = _shared(run, "precision-goal", chosen, bs,
                    lambda: frontier.frontier_table(chosen, max_drop=points / 100, batch_size=bs), float(points))
    if table.empty:
        return table
    table = table.assign(setting=[", ".join(f"{k} {_num(v)}" for k, v in json.loads(p).items()) for p in table["params"]])
    return table


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _static_traces(run, chosen: dict, bs: int | None, axis: str) -> list[dict]:
    """The part of the precision chart the knobs do not move (every setting, each precision's frontier,
    fp32 full), built once per run, precisions, batch size and axis and shared by every session."""
    def make():
        pts = frontier.frontier_points(chosen, batch_size=bs)
        x = "wallclock_speedup" if axis == "wallclock" else "layer_speedup"
        data = []
        for p in chosen:
            mine = pts[pts["precision"] == p]
            if mine.empty:
                continue
            custom = np.stack([mine["strategy"], mine["params"]], -1)
            data.append({"type": "scattergl", "mode": "markers", "x": mine[x], "y": mine["score"], "name": f"{p}: settings",
                         "legendgroup": p, "showlegend": False, "customdata": custom,
                         "marker": {"size": 4, "opacity": 0.25, "symbol": SYMBOLS.get(p, "circle"),
                                    "color": [COLORS.get(s, "#888") for s in mine["strategy"]]},
                         "hovertemplate": f"{p} %{{customdata[0]}} %{{customdata[1]}}<br>score %{{y:.4f}}<br>"
                                          f"{AXES[axis]} %{{x:.2f}}x<extra></extra>"})
            front = metrics.pareto(mine, x=x)
            data.append({"type": "scatter", "mode": "lines+markers", "x": front[x], "y": front["score"],
                         "name": f"{p} frontier", "legendgroup": p,
                         "line": {"dash": DASH.get(p, "solid"), "width": 2.5, "color": LINE.get(p, "#888")},
                         "marker": {"size": 5, "symbol": SYMBOLS.get(p, "circle"), "color": LINE.get(p, "#888")},
                         "customdata": np.stack([front["strategy"], front["params"]], -1),
                         "hovertemplate": f"{p} %{{customdata[0]}} %{{customdata[1]}}<br>score %{{y:.4f}}<br>"
                                          f"{AXES[axis]} %{{x:.2f}}x<extra></extra>"})
        ref = chosen["fp32"]
        full = metrics.score(ref.metric, ref.labels, ref.probs[:, -1].argmax(-1))
        data.append({"type": "scatter", "mode": "markers", "x": [1.0], "y": [full], "name": "fp32 full model",
                     "marker": {"size": 12, "symbol": "x", "color": "#444"},
                     "hovertemplate": "fp32 full model<br>score %{y:.4f}<extra></extra>"})
        return data
    return _shared(run, "precision-traces", chosen, bs, make, axis)


def frontier_figure(run, precisions, *, batch_size: int | None, axis: str = "wallclock", current: dict | None = None,
                    focus: str | None = None):
    """Every exact setting of every rule at each chosen precision (faint), each precision's Pareto
    frontier (a line), fp32 full at (1, its score) and the open rule's current knobs at each precision
    (big markers). x: wall-clock speed-up over fp32 full at `batch_size`, or layer speed-up."""
    chosen = _chosen(run, precisions)
    wall = axis == "wallclock"
    if wall and batch_size is None:
        raise ValueError("the wall-clock axis needs a batch size with a latency table in every chosen cache")
    data = [*_static_traces(run, chosen, batch_size if wall else None, axis)]
    ref = chosen["fp32"]
    for p, (xv, yv) in (current or {}).items():
        if xv is None:
            continue
        data.append({"type": "scatter", "mode": "markers", "x": [xv], "y": [yv], "name": f"{p}: current knobs",
                     "legendgroup": p, "marker": {"size": 14, "symbol": SYMBOLS.get(p, "circle"),
                                                  "color": COLORS.get(focus, "#888"), "line": {"width": 2, "color": "#000"}},
                     "hovertemplate": f"{p} current knobs<br>score %{{y:.4f}}<br>{AXES[axis]} %{{x:.2f}}x<extra></extra>"})
    title = AXES[axis] + (f" at batch size {batch_size}" if wall else "")
    return _fig(data, layout(xaxis={"title": {"text": title}},
                             yaxis={"title": {"text": metrics.METRIC_WORDS.get(ref.metric, ref.metric)}},
                             height=420))


def current_points(table: pd.DataFrame, axis: str) -> dict:
    """{precision: (x, score)} of `setting_table`'s rows for the chart's axis."""
    col = "wall-clock speed-up" if axis == "wallclock" else "layer speed-up"
    return {r["precision"]: (None if r[col] is None or pd.isna(r[col]) else float(r[col]), float(r["score"]))
            for _, r in table.iterrows()}


def across_runs(runs, precisions, batch_size: int | None, points: float = 1.0) -> pd.DataFrame:
    """Compare's precisions side by side: one row per run and precision it has: last exit and S-avg, the
    precision's full model in wall clock over that run's fp32 full at `batch_size`, and the fastest
    setting within `points` of fp32 full at that precision alone (rule, setting, score, speed-ups)."""
    rows = []
    for r in runs:
        cs = caches(r)
        for p in precisions:
            if p not in cs:
                continue
            c = cs[p]
            per_exit = metrics.per_exit_scores(c)
            row = {"run": r.name, "precision": p, "last exit": float(per_exit[-1]), "S-avg": float(per_exit.mean()),
                   "full model wall-clock": None, "lose at most": f"{points:g} pt", "rule": None, "setting": None,
                   "score": None, "layer speed-up": None, "wall-clock speed-up": None}
            ok_bs = batch_size is not None and frontier.has_batch(c, batch_size) and frontier.has_batch(cs["fp32"], batch_size)
            if ok_bs:
                row["full model wall-clock"] = (metrics.batch_full_latency_ms(cs["fp32"], batch_size)
                                                / metrics.batch_full_latency_ms(c, batch_size))
            t = pd.DataFrame()   # another precision is ranked in wall clock only: it needs the batch size's tables
            if ok_bs or p == "fp32":
                pair = {"fp32": cs["fp32"], p: c}
                t = frontier.frontier_table(pair, max_drop=points / 100, batch_size=batch_size if ok_bs else None)
                t = t[t["precision"] == p]
            if not t.empty and t["meets"].iloc[0]:
                b = t.iloc[0]
                row.update({"rule": b["strategy"], "setting": ", ".join(f"{k} {_num(v)}" for k, v in json.loads(b["params"]).items()),
                            "score": float(b["score"]), "layer speed-up": float(b["layer_speedup"]),
                            "wall-clock speed-up": None if pd.isna(b["wallclock_speedup"]) else float(b["wallclock_speedup"])})
            rows.append(row)
    return pd.DataFrame(rows)
