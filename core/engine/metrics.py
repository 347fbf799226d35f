"""What a strategy costs and earns on a cache: task scores, speed-ups, sweeps, Pareto fronts and
operating points.

Speed-up is reported three ways, each under its own name (README.md, "Exit rules"):
    layer_speedup     L / mean exit layer
    saved_fraction    1 - mean exit layer / L   (what PCEE-BERT Eq. 4 calls "speed-up")
    wallclock_speedup full-model batch-1 latency / expected latency at the exits, from `layer_ms`
and, at a named batch size over the fp32 full model, `batch_wallclock_speedup` from a cache's latency
table (core.cache_variant measures it per precision for batch sizes 1 and 32).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from core.engine.curves import Curve, confusion_score, exit_latency_ms, pareto_mask, rule_curves, thin
from core.engine.features import ExitFeatures, features
from core.engine.registry import STRATEGIES
from core.engine.strategies import apply_features, fixed_choices


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
METRIC_WORDS = {"accuracy": "Accuracy", "f1": "F1", "acc_f1": "Mean of accuracy and F1",
                "mcc": "Matthews correlation", "macro_f1": "Macro-F1"}   # how the pages name them


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
        lat = exit_latency_ms(layer_ms, embed_ms)
        expected = float(lat[np.asarray(exit_layer)].mean())
        out["expected_ms"] = expected
        out["wallclock_speedup"] = float(lat[-1]) / expected
    return out


def full_latency_ms(cache) -> float | None:
    """The full model's batch-1 latency (embed_ms + sum(layer_ms)); None when not measured."""
    return None if cache.layer_ms is None else float(exit_latency_ms(cache.layer_ms, cache.embed_ms)[-1])


def _latency_table(latency) -> dict:
    table = getattr(latency, "latency", latency)  # an ExitCache or its latency table
    if not isinstance(table, dict):
        raise ValueError("this cache has no latency table by batch size; write one with "
                         "`python -m core.cache_variant --run R --precision P`")
    return table


def _batch_row(table: dict, batch_size: int) -> dict:
    row = table["batches"].get(str(int(batch_size)))
    if row is None:
        raise ValueError(f"no latency measured at batch size {batch_size} ({table.get('precision', '?')}); "
                         f"measured: {', '.join(sorted(table['batches'], key=int))}")
    return row


def batch_exit_latency_ms(latency, batch_size: int) -> np.ndarray:
    """[L + 1] ms per row of stopping after m layers (m = 0..L) at `batch_size`, every exit head on the
    way included: (embed + sum over j <= m of (layer_j + head_j)) / batch size. A row that leaves a
    batch stops costing (the predictor shrinks its batches), so cost is counted per row still running.
    `latency`: a cache's latency table (or the cache)."""
    row = _batch_row(_latency_table(latency), batch_size)
    steps = np.add(row["layer_ms"], row["head_ms"])
    return (float(row["embed_ms"]) + np.concatenate([[0.0], np.cumsum(steps)])) / int(row["rows"])


def batch_full_latency_ms(latency, batch_size: int) -> float:
    """ms per row of the plain full model at `batch_size`: embeddings, all layers, the last head only."""
    row = _batch_row(_latency_table(latency), batch_size)
    return (float(row["embed_ms"]) + float(np.sum(row["layer_ms"])) + float(row["head_ms"][-1])) / int(row["rows"])


def batch_wallclock_speedup(exit_layer, latency, batch_size: int, *, reference=None) -> float:
    """Wall-clock speed-up over the fp32 full model at `batch_size`, from measured tables: fp32 full's
    ms per row / the mean ms per row of exiting at `exit_layer` ([N] layers from 1) at this precision.
    `latency` is the setting's cache (or its table); `reference` the fp32 cache (or table) measured on
    the same machine (None: `latency` itself, which must be fp32). Pass exit_layer = L for every row to
    get that precision's full model. Torch-free."""
    table = _latency_table(latency)
    ref = table if reference is None else _latency_table(reference)
    if ref.get("precision", "fp32") != "fp32":
        raise ValueError(f"the reference latency table is {ref.get('precision')!r}, not fp32; pass the fp32 cache as reference")
    lat = batch_exit_latency_ms(table, batch_size)
    return batch_full_latency_ms(ref, batch_size) / float(lat[np.asarray(exit_layer)].mean())


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


def evaluate(cache, strategy: str, *, feats: ExitFeatures | None = None, full_score: float | None = None,
             **params) -> dict:
    """Score, efficiency and the difference to the full model for one strategy setting. `full_score`:
    the full model's score when the caller already has it (the app calls this on every slider move;
    accuracy is computed without sklearn's input validation, 4 ms a call)."""
    f = feats or cache_features(cache)
    exit_layer, pred = apply_features(strategy, f, **params)
    scorer = _fast_scorer(cache.metric, cache.labels)
    full = scorer(f.argmax[-1]) if full_score is None else float(full_score)
    s = scorer(pred)
    return {"strategy": strategy, "params": params, "score": s, "full_score": full,
            "delta_vs_full": s - full, "exit_layer": exit_layer, "pred": pred,
            **efficiency(exit_layer, cache.L, cache.layer_ms, cache.embed_ms)}


# ---- sweeps ------------------------------------------------------------------------------------
def default_grid(strategy: str, f: ExitFeatures) -> list[dict]:
    """Parameter settings that spread one strategy's points from 1x to Lx layer speed-up (the
    registry entry's `grid`)."""
    grid = STRATEGIES[strategy].grid
    if grid is None:
        raise ValueError(f"no default grid for {strategy!r}")
    return grid(f)


SWEEP_POINTS = 48  # per curve drawn: quantiles of the exit layer, plus every point of the rule's own frontier


def exact_sweep(cache, strategy: str, *, feats: ExitFeatures | None = None, max_points: int | None = SWEEP_POINTS,
                **fixed) -> pd.DataFrame:
    """Rows of `sweep` for the rule's exact candidate settings (every breakpoint of its signal), thinned
    to `max_points` per curve by quantiles where there are more, always keeping the rule's own frontier."""
    f = feats or cache_features(cache)
    frames = []
    for c in rule_curves(cache, strategy, f, **fixed):
        keep = np.arange(len(c)) if max_points is None else thin(c, max_points)
        if not len(keep):
            continue
        wall = c.wallclock_speedup
        if c.listed is None:   # one swept knob: build the columns at once
            frame = pd.DataFrame({**{k: [v] * len(keep) for k, v in c.fixed.items()}, c.knob: c.knobs[keep]})
            params = frame.to_dict("records")
        else:
            params = [c.params(i) for i in keep]
            frame = pd.DataFrame(params)
        frame.insert(0, "params", [json.dumps(p, sort_keys=True) for p in params])
        frame.insert(0, "strategy", strategy)
        frame["score"] = c.score[keep]
        frame["mean_exit_layer"] = c.mean_exit_layer[keep]
        frame["layer_speedup"] = c.layer_speedup[keep]
        frame["saved_fraction"] = 1 - c.mean_exit_layer[keep] / c.L
        frame["wallclock_speedup"] = np.nan if wall is None else wall[keep]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sweep(cache, strategy: str, grid: list[dict] | None = None, *,
          feats: ExitFeatures | None = None, **fixed) -> pd.DataFrame:
    """One row per setting: params, score, mean exit layer and the speed-ups. Without a `grid`, the
    rule's exact candidate settings (`exact_sweep`)."""
    f = feats or cache_features(cache)
    if grid is None:
        return exact_sweep(cache, strategy, feats=f, **fixed)
    scorer = _fast_scorer(cache.metric, cache.labels)
    lat = None if cache.layer_ms is None else exit_latency_ms(cache.layer_ms, cache.embed_ms)
    rows = []
    for setting in grid:
        params = {**fixed, **setting}
        exit_layer, pred = apply_features(strategy, f, **params)
        mean_layer = float(exit_layer.mean())
        row = {"strategy": strategy, "params": json.dumps(params, sort_keys=True), **params,
               "score": scorer(pred), "mean_exit_layer": mean_layer,
               "layer_speedup": f.L / mean_layer, "saved_fraction": 1 - mean_layer / f.L,
               "wallclock_speedup": np.nan}
        if lat is not None:
            row["wallclock_speedup"] = lat[-1] / lat[exit_layer].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_all(cache, strategies=None, *, feats: ExitFeatures | None = None) -> pd.DataFrame:
    """Exact sweeps (thinned for drawing) of every strategy the cache supports, in one frame."""
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
    return points[pareto_mask(points[x].to_numpy(), points[y].to_numpy())].sort_values(x)


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
    full_ms = full_latency_ms(cache)
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
    # added by the goal picker and the bootstrap (issue 9); absent in older files
    goal: dict | None = None                    # e.g. {"max_drop": 0.01}
    expected_ms: float | None = None            # estimated batch-1 latency at these exits
    score_interval: list | None = None          # [low, high], paired bootstrap over dev samples
    delta_interval: list | None = None          # [low, high] of score - full model's score
    interval_note: str = ""                     # how the intervals were made
    # added by the precision frontier (issue 22, core.engine.frontier); absent in older files
    precision: str = "fp32"                     # the cache (and model) precision the setting runs at
    batch_size: int | None = None               # the batch size its wall-clock speed-up is measured at
    batch_wallclock_speedup: float | None = None  # over fp32 full at batch_size, from the latency tables

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


# ---- uncertainty: seeded paired bootstrap over dev samples ----------------------------------------
# Resampling N samples with replacement draws each distinct (prediction(s), label) cell a multinomial
# number of times, so the resampled confusion matrices are drawn directly: the same distribution as
# resampling indices, at a cost that does not grow with N.
N_RESAMPLES = 1000
LEVEL = 0.95
# Fewer dev samples than this get no interval from the goal picker (null, with the reason): a resample
# of n samples takes at most n + 1 accuracy values, so at n = 3 an all-right set gives [1.0, 1.0], an
# interval of zero width that claims a certainty three samples cannot give. Percentile bootstrap
# intervals of a proportion cover far less than their level until n is a few dozen; 20 is the floor.
MIN_INTERVAL_N = 20


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval around `estimate` (the value on the full dev set)."""
    estimate: float
    low: float
    high: float
    level: float = LEVEL
    n_resamples: int = N_RESAMPLES

    @property
    def covers_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def fmt(self, spec: str = ".4f") -> str:
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion `p` (an accuracy) measured on `n` samples: sqrt(p (1 - p) / n)."""
    return float(np.sqrt(max(p * (1 - p), 0.0) / n))


def bootstrap_scores(metric: str, labels, *preds, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """[n_resamples, len(preds)] task scores of every prediction vector on the same bootstrap resamples
    of the dev samples (paired: one resample serves all predictions)."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = [np.asarray(p, dtype=np.int64) for p in preds]
    if not preds or any(p.shape != labels.shape for p in preds):
        raise ValueError(f"bootstrap needs predictions shaped like the labels [{labels.size}]")
    K = int(max(labels.max(), *(p.max() for p in preds))) + 1
    code = labels.copy()
    for p in preds:
        code = code * K + p
    cells, counts = np.unique(code, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(labels.size, counts / counts.sum(), size=n_resamples)     # [B, cells]
    out = np.empty((n_resamples, len(preds)))
    rest = cells.copy()
    for j in range(len(preds) - 1, -1, -1):          # peel predictions off the code, last first
        pj, rest = rest % K, rest // K
        C = np.zeros((n_resamples, K * K))
        lab = cells // K ** len(preds)
        np.add.at(C.T, pj * K + lab, draws.T)
        out[:, j] = confusion_score(metric, C.reshape(-1, K, K))
    return out


def _score_exact(metric: str, labels, pred) -> float:
    """The task score from the confusion matrix (equals `score`, without sklearn's per-call checks)."""
    labels, pred = np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    K = int(max(labels.max(), pred.max())) + 1
    return float(confusion_score(metric, np.bincount(pred * K + labels, minlength=K * K).reshape(K, K)))


def _interval(estimate: float, samples: np.ndarray, level: float, n: int) -> Interval:
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(lo), float(hi), level, n)


def score_interval(metric: str, labels, pred, *, n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                   seed: int = 0) -> Interval:
    """Interval of one prediction vector's task score."""
    b = bootstrap_scores(metric, labels, pred, n_resamples=n_resamples, seed=seed)[:, 0]
    return _interval(_score_exact(metric, labels, pred), b, level, n_resamples)


def diff_interval(metric: str, labels, pred_a, pred_b, *, n_resamples: int = N_RESAMPLES,
                  level: float = LEVEL, seed: int = 0) -> Interval:
    """Interval of score(pred_a) - score(pred_b) on the same samples (paired): a rule vs the full
    model, two rules, or two runs on the same dev set."""
    b = bootstrap_scores(metric, labels, pred_a, pred_b, n_resamples=n_resamples, seed=seed)
    return _interval(_score_exact(metric, labels, pred_a) - _score_exact(metric, labels, pred_b), b[:, 0] - b[:, 1],
                     level, n_resamples)


def same_dev_set(cache_a, cache_b) -> bool:
    """Do two caches hold the same dev samples in the same order (labels and, if stored, row ids)?"""
    if cache_a.N != cache_b.N or not np.array_equal(cache_a.labels, cache_b.labels):
        return False
    ids_a, ids_b = ((c.source or {}).get("row_ids") for c in (cache_a, cache_b))
    return ids_a is None or ids_b is None or list(ids_a) == list(ids_b)


def runs_diff_interval(cache_a, pred_a, cache_b, pred_b, **kw) -> Interval:
    """Interval of run A's score - run B's score, paired over their shared dev set."""
    if not same_dev_set(cache_a, cache_b):
        raise ValueError("the two runs were not evaluated on the same dev samples; a paired interval "
                         "needs the same dev set (same task, split and rows)")
    return diff_interval(cache_a.metric, cache_a.labels, pred_a, pred_b, **kw)


def point_intervals(cache, pred, *, full_pred=None, seed: int = 0, n_resamples: int = N_RESAMPLES,
                    level: float = LEVEL) -> tuple[Interval, Interval]:
    """(score interval, interval of the difference to the full model) of one operating point."""
    full_pred = cache.probs[:, -1].argmax(-1) if full_pred is None else full_pred
    b = bootstrap_scores(cache.metric, cache.labels, pred, full_pred, n_resamples=n_resamples, seed=seed)
    s, full = _score_exact(cache.metric, cache.labels, pred), _score_exact(cache.metric, cache.labels, full_pred)
    return (_interval(s, b[:, 0], level, n_resamples), _interval(s - full, b[:, 0] - b[:, 1], level, n_resamples))


# ---- the goal picker -----------------------------------------------------------------------------
GOAL_TEXT = {"max_drop": "lose at most {:g} points", "min_layer_speedup": "at least {:g}x faster (layers)",
             "max_latency_ms": "under {:g} ms at batch 1"}


def check_goal(max_drop=None, min_layer_speedup=None, max_latency_ms=None) -> tuple[str, float]:
    """The one goal given, validated: (name, value). ValueError otherwise."""
    given = {k: v for k, v in (("max_drop", max_drop), ("min_layer_speedup", min_layer_speedup),
                               ("max_latency_ms", max_latency_ms)) if v is not None}
    if len(given) != 1:
        raise ValueError("give exactly one goal: max_drop=0.01 (lose at most 1 point), min_layer_speedup=2.0 "
                         f"or max_latency_ms=5.0; got {', '.join(given) or 'none'}")
    (name, value), = given.items()
    value = float(value)
    low = {"max_drop": 0.0, "min_layer_speedup": 1.0, "max_latency_ms": 0.0}[name]
    if not np.isfinite(value) or value < low or (name == "max_latency_ms" and value == 0):
        raise ValueError(f"{name} must be a finite number {'>' if name == 'max_latency_ms' else '>='} {low:g}; got {value!r}")
    return name, value


def goal_rules(cache, strategies=None) -> list[str]:
    """The rules a goal search covers: every rule the cache supports when `strategies` is None, else the
    named ones. The Oracle is left out (it reads the labels: a ceiling, not a setting to deploy).
    ValueError, naming the known rules, for an empty list, an unknown name or a rule the run cannot run."""
    supported = [s for s in available_strategies(cache) if s != "oracle"]
    if strategies is None:
        return supported
    if isinstance(strategies, str):
        raise ValueError(f"strategies must be a list of rule names such as [{strategies!r}], not a string; "
                         f"known rules: {', '.join(STRATEGIES)}")
    names = list(strategies)
    if not names:
        raise ValueError("strategies=[] names no rule; leave it out for every rule, or name some of: "
                         + ", ".join(supported))
    unknown = [s for s in names if not isinstance(s, str) or s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown rule(s) {', '.join(map(repr, unknown))}; known rules: {', '.join(STRATEGIES)}")
    lacking = [s for s in names if s != "oracle" and s not in supported]
    if lacking:
        raise ValueError(f"rule(s) {', '.join(lacking)} need learned exit confidences (an LTE run), which this "
                         f"run does not have; rules this run supports: {', '.join(supported)}")
    picked = list(dict.fromkeys(s for s in names if s != "oracle"))
    if not picked:
        raise ValueError("the Oracle reads the labels, so it is a ceiling to compare with, not a setting to pick; "
                         f"name at least one rule a model can deploy: {', '.join(supported)}")
    return picked


def _best_index(ok: np.ndarray, key: tuple) -> int:
    """Index of the best entry among `ok` by key[0], ties broken by key[1] (both higher is better)."""
    first = np.where(ok, key[0], -np.inf)
    tie = first >= first.max() - 1e-12
    return int(np.argmax(np.where(tie, key[1], -np.inf)))


def _goal_curves(cache, strategy: str, f: ExitFeatures, goal: str, value: float, full: float) -> list[Curve]:
    """The rule's curves a goal needs. For "lose at most", a curve whose earliest possible exit cannot
    beat the speed already found (PCEE at patience p exits at layer p at the earliest, DGE at p + 1) is
    skipped unevaluated: it holds no better answer. Every other goal searches every curve."""
    if goal != "max_drop" or strategy not in ("pcee", "dge"):
        return rule_curves(cache, strategy, f)
    curves, fastest = [], 0.0
    for fx in fixed_choices(strategy, f):
        earliest = fx["patience"] + (strategy == "dge")
        if curves and f.L / earliest < fastest - 1e-12:
            continue
        for c in rule_curves(cache, strategy, f, **fx):
            curves.append(c)
            ok = c.score >= full - value - 1e-12
            if ok.any():
                fastest = max(fastest, float(c.layer_speedup[ok].max()))
    return curves


def goal_table(cache, *, max_drop=None, min_layer_speedup=None, max_latency_ms=None, strategies=None,
               feats: ExitFeatures | None = None) -> pd.DataFrame:
    """One row per rule: its best exact setting for the goal, whether it meets the goal and, when it
    cannot, why (and its closest setting). Rows that meet the goal come first, best first."""
    name, value = check_goal(max_drop, min_layer_speedup, max_latency_ms)
    if name == "max_latency_ms" and cache.layer_ms is None:
        raise ValueError("this run has no measured layer latencies (layer_ms); use max_drop or min_layer_speedup")
    f = feats or cache_features(cache)
    full = score(cache.metric, cache.labels, f.argmax[-1])
    names = goal_rules(cache, strategies)
    rows = []
    no_ms = cache.layer_ms is None
    for s in names:
        curves = [c for c in _goal_curves(cache, s, f, name, value, full) if len(c)]
        if not curves:   # e.g. DGE compares with an earlier layer: nothing to set on a 2-layer model
            rows.append({"strategy": s, "params": "{}", "score": np.nan, "delta": np.nan, "layer_speedup": np.nan,
                         "saved_fraction": np.nan, "expected_ms": np.nan, "wallclock_speedup": np.nan,
                         "meets": False, "why": f"has no setting that changes any exit on a {cache.L}-layer model",
                         "candidates": 0})
            continue
        per_curve = []   # each curve's best (or, when none meets, closest) setting: (meets, keys, curve, index)
        for j, c in enumerate(curves):
            sc, sp = c.score, c.layer_speedup
            ms = np.full(sc.shape, np.nan) if no_ms else c.expected_ms
            if name == "max_drop":
                ok, key, closest = sc >= full - value - 1e-12, (sp, sc), (sc, sp)
            elif name == "min_layer_speedup":
                ok, key, closest = sp >= value - 1e-9, (sc, sp), (sp, sc)
            else:
                ok, key, closest = ms <= value + 1e-9, (sc, -ms), (-ms, sc)
            meets = bool(ok.any())
            use = key if meets else closest
            i = _best_index(ok if meets else np.ones(len(sc), dtype=bool), use)
            per_curve.append((meets, use[0][i], use[1][i], j, i))
        meets = any(p[0] for p in per_curve)
        pool = [p for p in per_curve if p[0] == meets]
        k0, k1 = np.array([p[1] for p in pool]), np.array([p[2] for p in pool])
        _, _, _, j, i = pool[_best_index(np.ones(len(pool), dtype=bool), (k0, k1))]
        c = curves[j]
        if name == "max_drop":
            why = "its best setting loses {:.2f} points".format(100 * (full - max(float(x.score.max()) for x in curves)))
        elif name == "min_layer_speedup":
            why = f"reaches at most {max(float(x.layer_speedup.max()) for x in curves):.2f}x layer speed-up"
            if s in ("patience", "dge") and value > cache.L / 2:
                why += f" (it compares with an earlier layer, so it exits at layer 2 at the earliest: {cache.L / 2:.2f}x on {cache.L} layers)"
        else:
            why = f"needs at least {min(float(x.expected_ms.min()) for x in curves):.2f} ms"
        ms_i = np.nan if no_ms else float(c.expected_ms[i])
        rows.append({"strategy": s, "params": json.dumps(c.params(i), sort_keys=True), "score": float(c.score[i]),
                     "delta": float(c.score[i] - full), "layer_speedup": float(c.layer_speedup[i]),
                     "saved_fraction": 1 - 1 / float(c.layer_speedup[i]), "expected_ms": ms_i,
                     "wallclock_speedup": np.nan if no_ms else float(c.full_ms / ms_i),
                     "meets": meets, "why": "" if meets else why,
                     "candidates": int(sum(len(x) for x in curves))})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    rank = {"max_drop": ["layer_speedup", "score"], "min_layer_speedup": ["score", "layer_speedup"],
            "max_latency_ms": ["score", "layer_speedup"]}[name]
    return df.sort_values(["meets", *rank], ascending=False, kind="stable").reset_index(drop=True)


def pick(cache, *, max_drop=None, min_layer_speedup=None, max_latency_ms=None, strategies=None,
         feats: ExitFeatures | None = None, run: str = "", seed: int = 0) -> OperatingPoint:
    """The operating point over the chosen rules' exact settings that best meets ONE goal (scores are
    fractions: max_drop=0.01 is one point): the fastest setting within `max_drop` of the full model;
    the best score at >= `min_layer_speedup`; or the best score whose estimated batch-1 latency is at
    most `max_latency_ms`. ValueError, saying how close each rule gets, when no rule meets it.
    `strategies`: the rules to search (None: every rule the run supports; see `goal_rules`). The
    intervals are a paired bootstrap over the dev samples; below MIN_INTERVAL_N samples they are None
    and `interval_note` says why."""
    goal = dict(max_drop=max_drop, min_layer_speedup=min_layer_speedup, max_latency_ms=max_latency_ms)
    f = feats or cache_features(cache)
    table = goal_table(cache, strategies=strategies, feats=f, **goal)
    name, value = check_goal(**goal)
    if table.empty or not table["meets"].iloc[0]:
        detail = "; ".join(f"{r.strategy} {r.why}" for r in table.itertuples()) or "no rule was searched"
        raise ValueError(f"no setting meets the goal ({GOAL_TEXT[name].format(100 * value if name == 'max_drop' else value)}): {detail}")
    best = table.iloc[0]
    exit_layer, pred = apply_features(best["strategy"], f, **json.loads(best["params"]))
    scorer = _fast_scorer(cache.metric, cache.labels)
    s, full = scorer(pred), scorer(f.argmax[-1])
    ev = {"strategy": best["strategy"], "params": json.loads(best["params"]), "score": s, "full_score": full,
          "delta_vs_full": s - full, "exit_layer": exit_layer, "pred": pred,
          **efficiency(exit_layer, cache.L, cache.layer_ms, cache.embed_ms)}
    op = OperatingPoint.from_evaluation(run, cache, ev)
    op.goal = {name: value}
    op.expected_ms = ev["expected_ms"]
    if cache.N < MIN_INTERVAL_N:
        few = f"{cache.N} dev sample is" if cache.N == 1 else f"{cache.N} dev samples are"
        op.interval_note = (f"no {100 * LEVEL:g}% interval: {few} too few for a bootstrap interval "
                            f"(it needs at least {MIN_INTERVAL_N}); "
                            "the score is measured on those samples alone")
        return op
    s_int, d_int = point_intervals(cache, ev["pred"], full_pred=f.argmax[-1], seed=seed)
    op.score_interval, op.delta_interval = [s_int.low, s_int.high], [d_int.low, d_int.high]
    op.interval_note = f"{100 * LEVEL:g}% paired bootstrap over the {cache.N} dev samples ({N_RESAMPLES} resamples, seed {seed})"
    return op
