"""What a strategy costs and earns on a cache: task scores, speed-ups, sweeps, Pareto fronts and
operating points.

Speed-up is reported three ways, each under its own name (README.md, "Exit rules"):
    layer_speedup     L / mean exit layer
    saved_fraction    1 - mean exit layer / L   (what PCEE-BERT Eq. 4 calls "speed-up")
    wallclock_speedup full-model batch-1 latency / expected latency at the exits, from `layer_ms`
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from core.strategies import STRATEGIES, ExitFeatures, apply_features, features

# ---- task metrics -------------------------------------------------------------------------------
def _acc_f1(y, p):
    return 0.5 * (accuracy_score(y, p) + f1_score(y, p, zero_division=0))


METRICS = {
    "accuracy": accuracy_score,
    "f1": lambda y, p: f1_score(y, p, zero_division=0),
    "acc_f1": _acc_f1,  # MRPC: mean of accuracy and F1
    "mcc": matthews_corrcoef,  # CoLA
    "macro_f1": lambda y, p: f1_score(y, p, average="macro", zero_division=0),
}


def score(metric: str, labels, pred) -> float:
    """Task score of `pred` against `labels` under `metric` (a name in METRICS)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    return float(METRICS[metric](np.asarray(labels), np.asarray(pred)))


def _fast_scorer(metric: str, labels: np.ndarray):
    """A scorer for many predictions on the same labels; accuracy skips sklearn's validation."""
    if metric == "accuracy":
        return lambda pred: float((pred == labels).mean())
    return lambda pred: score(metric, labels, pred)


# ---- efficiency ---------------------------------------------------------------------------------
def efficiency(exit_layer, num_layers: int, layer_ms=None, embed_ms=None) -> dict:
    """Mean exit layer and the three speed-ups, each named for what it is."""
    mean_layer = float(np.mean(exit_layer))
    out = {
        "mean_exit_layer": mean_layer,
        "layer_speedup": num_layers / mean_layer,
        "saved_fraction": 1.0 - mean_layer / num_layers,
        "wallclock_speedup": None,
        "expected_ms": None,
    }
    if layer_ms is not None:
        cum = np.concatenate([[0.0], np.cumsum(layer_ms)])   # cum[m] = time of layers 1..m
        base = float(embed_ms or 0.0)
        expected = base + float(cum[np.asarray(exit_layer)].mean())
        out["expected_ms"] = expected
        out["wallclock_speedup"] = (base + float(cum[-1])) / expected
    return out


def per_exit_scores(cache) -> np.ndarray:
    """[L] task score of every exit on its own (the overthinking picture)."""
    preds = cache.probs.argmax(-1)
    return np.array([score(cache.metric, cache.labels, preds[:, m]) for m in range(cache.L)])


def s_avg_best(scores) -> dict:
    """BADGE Table 1: S-avg (mean over exits) and S-best (best exit)."""
    scores = np.asarray(scores)
    return {"s_avg": float(scores.mean()), "s_best": float(scores.max()),
            "best_exit": int(scores.argmax()) + 1}


# ---- one operating point ------------------------------------------------------------------------
def cache_features(cache) -> ExitFeatures:
    return features(cache.probs, labels=cache.labels, confidence=cache.confidence)


def available_strategies(cache) -> list[str]:
    """Strategies this cache can run (lte and learned PCEE need learned confidences)."""
    return [n for n, s in STRATEGIES.items() if "confidence" not in s.needs or cache.confidence is not None]


def evaluate(cache, strategy: str, *, feats: ExitFeatures | None = None, **params) -> dict:
    """Score, efficiency and the difference to the full model for one strategy setting."""
    f = feats or cache_features(cache)
    exit_layer, pred = apply_features(strategy, f, **params)
    full = score(cache.metric, cache.labels, f.argmax[-1])
    s = score(cache.metric, cache.labels, pred)
    return {"strategy": strategy, "params": params, "score": s, "full_score": full,
            "delta_vs_full": s - full, "exit_layer": exit_layer, "pred": pred,
            **efficiency(exit_layer, cache.L, cache.layer_ms, cache.embed_ms)}


# ---- sweeps ------------------------------------------------------------------------------------
def _quantile_grid(values: np.ndarray, n: int, *, include=()) -> list[float]:
    qs = np.quantile(values, np.linspace(0, 1, n))
    return sorted({round(float(v), 6) for v in np.concatenate([qs, include])})


def default_grid(strategy: str, f: ExitFeatures) -> list[dict]:
    """Parameter settings that spread one strategy's points from 1x to Lx layer speed-up.

    Thresholds are taken at quantiles of the signal itself, so the points spread along the speed-up
    axis whatever the model's calibration.
    """
    L = f.L
    patiences = list(range(1, L + 1))
    if strategy == "budget":
        return [{"layer": m} for m in range(1, L + 1)]
    if strategy == "entropy":  # fires when H < t: thresholds just above observed entropies
        return [{"threshold": min(1.0, t + 1e-6)} for t in _quantile_grid(f.entropy, 40, include=[0.0, 1.0])]
    if strategy == "maxprob":
        return [{"threshold": t} for t in _quantile_grid(f.maxprob, 40, include=[1.0 / f.K, 1.0])]
    if strategy == "lte":
        return [{"threshold": t} for t in _quantile_grid(f.confidence, 40, include=[0.0, 1.0])]
    if strategy == "patience":
        return [{"patience": t} for t in patiences]
    if strategy == "pcee":
        ts = [min(1.0, t + 1e-6) for t in _quantile_grid(f.entropy, 12)]
        return [{"patience": p, "threshold": t} for p, t in itertools.product(patiences[: min(L, 4)], ts)]
    if strategy == "dge":
        div = f.divergence("kd")
        ts = [t + 1e-6 for t in _quantile_grid(div[np.isfinite(div)], 12)]
        return [{"patience": p, "threshold": t} for p, t in itertools.product(patiences[: max(1, min(L - 1, 4))], ts)]
    if strategy == "voting":
        grid = []
        for k in (0.0, 0.25, 0.5, 0.75):
            # every value V_l can take: c / l^k for 1 <= c <= l <= L
            vals = sorted({c / l ** k for l in range(1, L + 1) for c in range(1, l + 1)})
            step = max(1, len(vals) // 12)
            grid += [{"k": k, "delta": round(v, 6)} for v in vals[::step]]
        return grid
    if strategy == "oracle":
        return [{}]
    raise ValueError(f"no default grid for {strategy!r}")


def sweep(cache, strategy: str, grid: list[dict] | None = None, *,
          feats: ExitFeatures | None = None, **fixed) -> pd.DataFrame:
    """One row per setting: params, score, mean exit layer and the speed-ups."""
    f = feats or cache_features(cache)
    grid = grid if grid is not None else default_grid(strategy, f)
    scorer = _fast_scorer(cache.metric, cache.labels)
    cum = None if cache.layer_ms is None else np.concatenate([[0.0], np.cumsum(cache.layer_ms)])
    base = float(cache.embed_ms or 0.0)
    rows = []
    for setting in grid:
        params = {**fixed, **setting}
        exit_layer, pred = apply_features(strategy, f, **params)
        mean_layer = float(exit_layer.mean())
        row = {"strategy": strategy, "params": json.dumps(params, sort_keys=True), **params,
               "score": scorer(pred), "mean_exit_layer": mean_layer,
               "layer_speedup": f.L / mean_layer, "saved_fraction": 1 - mean_layer / f.L,
               "wallclock_speedup": np.nan}
        if cum is not None:
            row["wallclock_speedup"] = (base + cum[-1]) / (base + cum[exit_layer].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_all(cache, strategies=None, *, feats: ExitFeatures | None = None) -> pd.DataFrame:
    """Default-grid sweeps of every strategy the cache supports, in one frame."""
    f = feats or cache_features(cache)
    names = strategies or available_strategies(cache)
    return pd.concat([sweep(cache, s, feats=f) for s in names], ignore_index=True)


def pareto(points: pd.DataFrame, *, x: str = "layer_speedup", y: str = "score",
           exclude=("oracle",)) -> pd.DataFrame:
    """Points no other point beats on both x and y (higher is better on both), sorted by x.

    The Oracle needs the labels, so it is a ceiling to draw, not a point to deploy: left out by default.
    """
    points = points[~points["strategy"].isin(exclude)]
    if points.empty:
        return points
    order = points.sort_values([x, y], ascending=[False, False])
    best_y = np.maximum.accumulate(order[y].to_numpy())
    prev_best = np.concatenate([[-np.inf], best_y[:-1]])
    keep = order[y].to_numpy() > prev_best
    return order[keep].sort_values(x)


def best_at(points: pd.DataFrame, target: float, *, by: str = "layer_speedup",
            exclude=("oracle",)) -> pd.DataFrame:
    """Per strategy, the setting with the best score whose `by` is at least `target`."""
    ok = points[(points[by] >= target - 1e-9) & ~points["strategy"].isin(exclude)]
    if ok.empty:
        return ok
    idx = ok.sort_values(["score", by], ascending=[False, False]).groupby("strategy", sort=False).head(1).index
    return ok.loc[idx].sort_values("score", ascending=False)


def best_under_latency(points: pd.DataFrame, budget_ms: float, cache) -> pd.DataFrame:
    """Per strategy, the best setting whose expected batch-1 latency fits `budget_ms`."""
    if cache.layer_ms is None:
        raise ValueError("this run has no measured layer latencies (layer_ms); use a speed-up target")
    full_ms = float(cache.embed_ms or 0.0) + float(np.sum(cache.layer_ms))
    return best_at(points, full_ms / budget_ms, by="wallclock_speedup")


# ---- operating points ---------------------------------------------------------------------------
@dataclass
class OperatingPoint:
    """A chosen setting with what it is expected to cost and earn on the run's dev set."""
    run: str
    strategy: str
    params: dict
    metric: str
    score: float
    full_score: float
    mean_exit_layer: float
    layer_speedup: float
    saved_fraction: float
    wallclock_speedup: float | None = None
    num_layers: int | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_evaluation(cls, run: str, cache, ev: dict) -> "OperatingPoint":
        return cls(run=run, strategy=ev["strategy"], params=dict(ev["params"]), metric=cache.metric,
                   score=ev["score"], full_score=ev["full_score"], mean_exit_layer=ev["mean_exit_layer"],
                   layer_speedup=ev["layer_speedup"], saved_fraction=ev["saved_fraction"],
                   wallclock_speedup=ev["wallclock_speedup"], num_layers=cache.L)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=float)

    @classmethod
    def from_json(cls, text: str) -> "OperatingPoint":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"operating point is not valid JSON: {e.msg}") from e
        required = {"run", "strategy", "params", "metric", "score", "full_score", "mean_exit_layer",
                    "layer_speedup", "saved_fraction"}
        if required - set(data):
            raise ValueError(f"operating point lacks {sorted(required - set(data))}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"operating point has unknown fields {sorted(unknown)}")
        return cls(**data)
