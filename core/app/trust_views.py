"""What Explore and Compare show about trust (issue 9): the goal table with intervals, the interval of
the current knobs, the calibrated (risk-controlled) setting, and seed groups. No streamlit here.

Bootstrap and calibration results are memoized on the RunData (`RunData.memo`, keys starting with
"trust"), keyed by rule and params, so a rerun after a control move only pays for what changed.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from core.app.rundata import describe_params
from core.engine import goal, metrics
from core.engine.calibrate import Calibrated, calibrate, guarantee_record  # noqa: F401  (the pages' export reads it here)
from core.engine.goal import LoseAtMost
from core.engine.registry import STRATEGIES
from core.engine.strategies import apply_features

GOAL_KINDS = {"loss": "lose at most", "speed-up": "layer speed-up", "latency": "latency budget"}
MEMO_LIMIT = 256


def _memo(run, key, make):
    return run.memo(key, make, limit=MEMO_LIMIT)


def point_intervals(run, strategy: str, params: dict, pred: np.ndarray | None = None) -> tuple[metrics.Interval, metrics.Interval]:
    """(score interval, interval of the difference to the full model) of one setting on the dev set."""
    return run.intervals(strategy, params, pred)


def goal_kwargs(kind: str, value: float) -> dict:
    """The picker's keyword for one Explore goal ('loss' takes points, the picker fractions)."""
    if kind == "loss":
        return {"max_drop": value / 100}
    if kind == "latency":
        return {"max_latency_ms": value}
    return {"min_layer_speedup": value}


def goal_rows(run, kind: str, value: float) -> pd.DataFrame:
    """Per rule, its best exact setting for the goal: whether it meets it and why not, with the 95%
    interval of its difference to the full model. Rows that meet the goal first, best first."""
    def make():
        t = metrics.goal_table(run.cache, strategies=run.strategies, feats=run.feats, **goal_kwargs(kind, value))
        ivs = [point_intervals(run, s, json.loads(p)) for s, p in zip(t["strategy"], t["params"])]
        t["setting"] = [describe_params(json.loads(p)) for p in t["params"]]
        t["score_low"], t["score_high"] = [i[0].low for i in ivs], [i[0].high for i in ivs]
        lows, highs = [i[1].low for i in ivs], [i[1].high for i in ivs]
        t["delta_low"], t["delta_high"] = lows, highs
        t["noise"] = ["within noise" if lo <= 0 <= hi else ("better" if lo > 0 else "worse")
                      for lo, hi in zip(lows, highs)]
        return t
    return _memo(run, ("trust-goal", kind, float(value)), make)


def calibration_fixed(strategy: str, params: dict) -> dict:
    """The knobs calibration holds fixed: everything but the swept one."""
    return {k: v for k, v in params.items() if k != STRATEGIES[strategy].knob}


def calibrated(run, strategy: str, params: dict, *, risk: str, epsilon: float, delta: float,
               method: str, seed: int = 0) -> Calibrated:
    fixed = calibration_fixed(strategy, params)
    key = ("trust-cal", strategy, json.dumps(fixed, sort_keys=True), risk, float(epsilon), float(delta), method, seed)
    return _memo(run, key, lambda: calibrate(run.cache, strategy, risk=risk, epsilon=epsilon, delta=delta,
                                             method=method, seed=seed, feats=run.feats, **fixed))


def calibration_table(run, cal: Calibrated) -> pd.DataFrame:
    """The calibrated setting's numbers on the calibration part, on the held-out part, and on the whole
    dev set (what the other tables show), side by side. Memoized on the run: moving the swept knob
    leaves the calibration, hence this table, as it was."""
    key = ("trust-cal-table", cal.strategy, json.dumps(cal.params, sort_keys=True, default=str), cal.risk,
           cal.calib_idx.tobytes(), cal.test_idx.tobytes())
    return _memo(run, key, lambda: _calibration_table(run, cal))


def _calibration_table(run, cal: Calibrated) -> pd.DataFrame:
    exit_layer, pred = apply_features(cal.strategy, run.feats, **cal.params)
    full = run.argmax[:, -1]
    labels = run.cache.labels
    rows = []
    for name, idx in (("calibration part", cal.calib_idx), ("held-out part", cal.test_idx),
                      ("whole dev set", np.arange(run.cache.N))):
        if cal.risk == "consistency":
            lost = pred[idx] != full[idx]
        else:
            lost = (pred[idx] != labels[idx]) & (full[idx] == labels[idx])
        rows.append({"part": name, "samples": len(idx), "risk": float(lost.mean()),
                     "score": metrics.score(run.metric, labels[idx], pred[idx]),
                     "full model": metrics.score(run.metric, labels[idx], full[idx]),
                     "layer_speedup": run.L / float(exit_layer[idx].mean())})
    return pd.DataFrame(rows)


def lose_at_most(run, points: float, *, delta: float, risk: str = "gap", method: str = "ltt",
                 seed: int = 0) -> LoseAtMost:
    """The goal control's two answers to "lose at most `points` points" over the run's rules (the dev
    optimum and the guarantee, with the sentence on why the guarantee is slower), memoized on the run."""
    key = ("trust-lose", float(points), float(delta), risk, method, seed)
    return _memo(run, key, lambda: goal.lose_at_most(run.cache, points, delta=delta, risk=risk, method=method,
                                                     seed=seed, strategies=run.strategies, feats=run.feats))


ANSWERS = {"dev": "dev-set best", "guarantee": "guaranteed"}


def two_answers(lam: LoseAtMost) -> pd.DataFrame:
    """Explore's two answers to "lose at most x points" side by side: the dev-set best (chosen and scored
    on the same rows) and the guaranteed setting (Learn then Test on the calibration rows), each with its
    numbers on every dev row and on the held-out rows that chose nothing."""
    rows = []
    for key, a in (("dev", lam.dev), ("guarantee", lam.guaranteed)):
        lost = f"{100 * a.heldout['risk']:.2f}%"
        interval = a.uncertainty.get("heldout_risk_interval") if key == "guarantee" else None
        lost += (f" [{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]" if interval
                 else " (no interval: these rows helped choose it)")
        rows.append({"answer": ANSWERS[key],
                     "setting": f"{STRATEGIES[a.strategy].title or a.strategy}, {describe_params(a.params)}",
                     "layer_speedup": a.whole["layer_speedup"], "points_lost": a.whole["points_lost"],
                     "heldout_lost": lost})
    return pd.DataFrame(rows)


# ---- Compare: runs that differ only in seed --------------------------------------------------------
_SEED_SUFFIX = re.compile(r"-seed\d+$")


def seed_group_key(run) -> tuple:
    """Runs with the same key differ only in their seed: task, method, backbone and the run name
    without a trailing -seedN."""
    meta = run.meta
    return (meta.get("task"), meta.get("method"), meta.get("backbone"), _SEED_SUFFIX.sub("", run.name), run.L)


def seed_groups(runs: list) -> dict[str, list]:
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault(seed_group_key(r), []).append(r)
    return {key[3]: members for key, members in groups.items()}


def seed_summary(runs: list) -> pd.DataFrame:
    """One row per seed group: last-exit and S-best mean +- s.d. over seeds, and each seed's value."""
    rows = []
    for name, members in seed_groups(runs).items():
        last = np.array([float(r.per_exit[-1]) for r in members])
        best = np.array([float(r.per_exit.max()) for r in members])
        sd = (lambda a: float(a.std(ddof=1)) if len(a) > 1 else float("nan"))  # noqa: E731
        rows.append({"group": name, "method": members[0].meta.get("method"), "seeds": len(members),
                     "last exit mean": float(last.mean()), "last exit s.d.": sd(last),
                     "S-best mean": float(best.mean()), "S-best s.d.": sd(best),
                     "per seed (last exit)": ", ".join(f"{r.meta.get('seed', '?')}: {v:.4f}" for r, v in zip(members, last))})
    return pd.DataFrame(rows)


def seed_table_text(seeds: pd.DataFrame) -> pd.DataFrame:
    """seed_summary for the page: the s.d. columns as text, 'one seed' for a group of one run (an empty
    cell read as missing data)."""
    out = seeds.copy()
    for col in ("last exit s.d.", "S-best s.d."):
        if col in out:
            out[col] = ["one seed" if n == 1 else f"{v:.4f}" for n, v in zip(out["seeds"], out[col])]
    return out


def method_differences(runs: list, *, seed: int = 0) -> pd.DataFrame:
    """Pairs of runs on the same dev set: last-exit difference with its paired 95% interval, marked
    "within noise" when the interval covers zero. Pairs from different dev sets are left out."""
    rows = []
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            if a.metric != b.metric or not metrics.same_dev_set(a.cache, b.cache):
                continue
            d = metrics.runs_diff_interval(a.cache, a.argmax[:, -1], b.cache, b.argmax[:, -1], seed=seed)
            rows.append({"run A": a.name, "run B": b.name, "A - B (last exit)": d.estimate,
                         "95% low": d.low, "95% high": d.high,
                         "verdict": "within noise" if d.covers_zero else ("A better" if d.low > 0 else "B better")})
    return pd.DataFrame(rows)
