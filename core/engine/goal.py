"""One answer to "lose at most x points", given both ways over a run's deployable rules. Torch-free.

    lose_at_most(cache, points, *, delta=0.1, strategies=None, risk="gap", method="ltt", seed=0,
                 calib_fraction=0.5, fixed=None, feats=None) -> LoseAtMost

- the dev optimum: `core.engine.metrics.pick(max_drop=points / 100)`, the fastest exact setting of any
  rule within x points of the full model on the dev set, with its paired bootstrap intervals. It is
  chosen and scored on the same rows, so its numbers are optimistic;
- the guarantee: Learn then Test on the gap risk (an input the exit gets wrong that the full model
  gets right) at epsilon = x / 100, as Ringel et al. (2024, "Early Time Classification with
  Accumulated Accuracy Gap Control", section 3, marginal accuracy gap control) do for early
  classification: the loss max(1{full right} - 1{early right}, 0), settings tested in a fixed
  sequence from the safest, the last one rejected before the first that is not. The accuracy the
  exit loses against the full model is at most its gap risk (it can also fix inputs the full model
  gets wrong), so a gap risk <= x / 100 bounds the loss to x points. Calibration uses a seeded part
  of the dev rows (`core.engine.calibrate.calibrate`); every number reported for it is measured on
  the held-out rest, which chose nothing.

Several rules: each rule's knob is one fixed sequence (its other knobs at the registry defaults),
tested at delta / R for R rules (Bonferroni), so the family-wise error over all rules' settings stays
<= delta and any certified setting may be picked; the guarantee takes the one fastest on the
calibration part. One rule (`strategies=[rule]`, `fixed` for its other knobs) is `calibrate` itself at
delta. CRC holds the risk in expectation for one rule only, so it takes exactly one rule.

Ringel et al. use the binomial tail as the p-value (valid for 0/1 losses); this module, like the
Guarantee panel and the report, uses the Hoeffding-Bentkus p-value of `calibrate` (valid for any
loss in [0, 1], with Bentkus' factor e), which is more conservative: tests/test_goal.py shows the two
settings side by side against MAPIE.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from core.engine import metrics
from core.engine.calibrate import RISK_TEXT, Calibrated, _describe, _fraction, _loss, calibrate, guarantee_record
from core.engine.features import ExitFeatures
from core.engine.registry import STRATEGIES
from core.engine.strategies import apply_features


@dataclass
class Answer:
    """One answer: a setting and its numbers on three row sets (fractions; `points_lost` in points)."""
    how: str                     # "dev optimum" | "guarantee"
    strategy: str
    params: dict
    whole: dict                  # every dev row (what the goal picker and Explore show)
    calibration: dict            # the calibration part of the split
    heldout: dict                # the held-out part: chose nothing
    uncertainty: dict            # intervals and what they are

    @property
    def setting(self) -> str:
        return f"{self.strategy} {_describe(self.params)}"


@dataclass
class LoseAtMost:
    points: float
    epsilon: float
    delta: float
    risk: str
    method: str
    seed: int
    metric: str
    rules: list[str]
    per_rule_delta: float
    dev: Answer
    guaranteed: Answer
    calibrated: Calibrated       # the chosen rule's calibration (the full model's when none passed)
    per_rule: pd.DataFrame       # each rule's calibrated setting on the calibration part
    guarantee: str               # the guarantee in one plain sentence
    why: str                     # why the guaranteed answer is slower, in one plain sentence
    metric_note: str = ""        # when the run's metric is not accuracy
    extra: dict = field(default_factory=dict)

    @property
    def fallback(self) -> bool:
        return self.calibrated.fallback

    def record(self) -> dict:
        """The guarantee an operating-point file carries (`core.serving.export`'s `guarantee=`): the
        chosen rule's calibration record, with the overall delta, the rules searched and the sentence."""
        return {**guarantee_record(self.calibrated), "delta": self.delta, "rules": list(self.rules),
                "per_rule_delta": self.per_rule_delta, "lose_at_most_points": self.points,
                "guarantee": self.guarantee}

    def summary(self) -> dict:
        """Everything but the arrays, for JSON."""
        return {"points": self.points, "epsilon": self.epsilon, "delta": self.delta, "risk": self.risk,
                "method": self.method, "seed": self.seed, "metric": self.metric, "rules": self.rules,
                "per_rule_delta": self.per_rule_delta, "dev": asdict(self.dev), "guaranteed": asdict(self.guaranteed),
                "guarantee": self.guarantee, "why": self.why, "metric_note": self.metric_note,
                "per_rule": json.loads(self.per_rule.to_json(orient="records"))}


def _numbers(cache, f: ExitFeatures, exit_layer, pred, idx, risk: str) -> dict:
    """Score, full-model score, points lost, risk and speed-ups of one setting on the rows `idx`."""
    y, p, full = cache.labels[idx], pred[idx], f.argmax[-1][idx]
    s, fs = metrics.score(cache.metric, y, p), metrics.score(cache.metric, y, full)
    eff = metrics.efficiency(exit_layer[idx], cache.L, cache.layer_ms, cache.embed_ms)
    return {"rows": len(idx), "score": s, "full_score": fs, "points_lost": 100 * (fs - s),
            "risk": float(_loss(p, full, y, risk).mean()), "layer_speedup": eff["layer_speedup"],
            "wallclock_speedup": eff["wallclock_speedup"]}


def _answer(how, cache, f, strategy, params, cal: Calibrated, risk, uncertainty) -> Answer:
    exit_layer, pred = apply_features(strategy, f, **params)
    return Answer(how=how, strategy=strategy, params=dict(params),
                  whole=_numbers(cache, f, exit_layer, pred, np.arange(cache.N), risk),
                  calibration=_numbers(cache, f, exit_layer, pred, cal.calib_idx, risk),
                  heldout=_numbers(cache, f, exit_layer, pred, cal.test_idx, risk), uncertainty=uncertainty)


def _heldout_uncertainty(cache, f, strategy, params, cal: Calibrated, risk, seed) -> dict:
    """Clopper-Pearson interval of the held-out risk and a paired bootstrap interval of the held-out
    score difference to the full model (None below MIN_INTERVAL_N held-out rows)."""
    t = cal.test_idx
    _, pred = apply_features(strategy, f, **params)
    lost = int(_loss(pred[t], f.argmax[-1][t], cache.labels[t], risk).sum())
    ci = binomtest(lost, len(t)).proportion_ci(confidence_level=metrics.LEVEL, method="exact")
    out = {"heldout_risk": lost / len(t), "heldout_risk_interval": [float(ci.low), float(ci.high)],
           "heldout_delta_interval": None,
           "note": (f"measured on the {len(t)} held-out rows, which chose nothing; risk interval: "
                    f"{100 * metrics.LEVEL:g}% Clopper-Pearson")}
    if len(t) >= metrics.MIN_INTERVAL_N:
        d = metrics.diff_interval(cache.metric, cache.labels[t], pred[t], f.argmax[-1][t], seed=seed)
        out["heldout_delta_interval"] = [d.low, d.high]
        out["note"] += (f"; score difference interval: {100 * metrics.LEVEL:g}% paired bootstrap over them "
                        f"({metrics.N_RESAMPLES} resamples, seed {seed})")
    return out


def _why(dev: Answer, g: Answer, delta: float, n_cal: int, fallback: bool) -> str:
    d, s = dev.whole["layer_speedup"], g.whole["layer_speedup"]
    margin = (f"a margin for the sampling noise of its {n_cal} calibration rows, and counts every input lost against "
              f"the full model with no credit for those the exit fixes")
    optimistic = "the dev optimum is chosen and scored on the same rows, hence optimistic"
    if fallback and s < d - 1e-12:
        return (f"The guarantee is the full model ({s:.2f}x against the dev optimum's {d:.2f}x layer speed-up) because "
                f"no setting could be shown to hold on unseen rows with probability at least {1 - delta:.0%}: the test "
                f"keeps {margin}; {optimistic}.")
    if s < d - 1e-12:
        return (f"The guaranteed setting is slower ({s:.2f}x against {d:.2f}x layer speed-up on the dev rows) because "
                f"it must hold on unseen rows with probability at least {1 - delta:.0%}, so it keeps {margin}; "
                f"{optimistic}.")
    return (f"Here the guaranteed setting is not slower ({s:.2f}x against {d:.2f}x layer speed-up on the dev rows), "
            f"but only its held-out numbers were measured on rows that chose nothing; {optimistic}.")


def lose_at_most(cache, points: float, *, delta: float = 0.1, strategies=None, risk: str = "gap",
                 method: str = "ltt", seed: int = 0, calib_fraction: float = 0.5, fixed: dict | None = None,
                 feats: ExitFeatures | None = None) -> LoseAtMost:
    """"Lose at most `points` points" answered as the dev optimum and as a guarantee (see the module
    docstring). `strategies`: the rules to search (None: every rule the run can deploy); `fixed`: the
    other knobs of the one rule named. ValueError, naming the argument, for bad input."""
    if isinstance(points, (bool, np.bool_)) or not isinstance(points, (int, float, np.integer, np.floating)):
        raise ValueError(f"lose at most x points needs a number of points in (0, 100), e.g. 1; got {points!r}")
    epsilon = _fraction("epsilon (points / 100)", float(points) / 100, "lose at most 1 point = 0.01")
    rules = metrics.goal_rules(cache, strategies)
    fixed = dict(fixed or {})
    if fixed and len(rules) != 1:
        raise ValueError(f"fixed knobs {sorted(fixed)} need exactly one rule to belong to; name it (got "
                         f"{len(rules)} rules: {', '.join(rules)})")
    if method == "crc" and len(rules) != 1:
        raise ValueError("method 'crc' holds the risk in expectation for one rule, not for the best of several; "
                         f"name one rule, or use method 'ltt' to search all {len(rules)}")
    f = feats or metrics.cache_features(cache)
    dev_op = metrics.pick(cache, max_drop=epsilon, strategies=rules, feats=f, seed=seed)

    per_delta = _fraction("delta", delta, "0.1 = 90% confidence") / len(rules)
    cals, rows = [], []
    for r in rules:
        cal = calibrate(cache, r, risk=risk, epsilon=epsilon, delta=per_delta, method=method,
                        calib_fraction=calib_fraction, seed=seed, feats=f, **fixed)
        exit_layer, _ = apply_features(cal.strategy, f, **cal.params)
        speed = cache.L / float(exit_layer[cal.calib_idx].mean())
        cals.append((cal, speed))
        rows.append({"rule": r, "passed": not cal.fallback, "setting": f"{cal.strategy} {_describe(cal.params)}",
                     "params": json.dumps(cal.params, sort_keys=True), "settings_tested": cal.searched,
                     "calibration_risk": cal.calib_risk, "calibration_layer_speedup": speed})
    passed = [i for i, (c, _) in enumerate(cals) if not c.fallback]
    # fastest on the calibration part; ties: lower calibration risk, then registry order
    best = (min(passed, key=lambda i: (-round(cals[i][1], 12), cals[i][0].calib_risk, i)) if passed else 0)
    cal = cals[best][0]
    n_cal = len(cal.calib_idx)

    dev_unc = {"score_interval": dev_op.score_interval, "delta_interval": dev_op.delta_interval,
               "note": dev_op.interval_note + "; chosen and scored on the same rows"}
    dev = _answer("dev optimum", cache, f, dev_op.strategy, dev_op.params, cal, risk, dev_unc)
    g = _answer("guarantee", cache, f, cal.strategy, cal.params, cal, risk,
                _heldout_uncertainty(cache, f, cal.strategy, cal.params, cal, risk, seed))
    sentence = _sentence(cal, rules, cache.L, n_cal, epsilon, delta, per_delta, method, risk, points)
    note = ("" if cache.metric == "accuracy" else
            f"The guarantee bounds points of accuracy (the share of inputs lost against the full model); the dev "
            f"optimum's points are points of {cache.metric}.")
    return LoseAtMost(points=float(points), epsilon=epsilon, delta=float(delta), risk=risk, method=method,
                      seed=int(seed), metric=cache.metric, rules=rules, per_rule_delta=per_delta, dev=dev,
                      guaranteed=g, calibrated=cal, per_rule=pd.DataFrame(rows), guarantee=sentence,
                      why=_why(dev, g, float(delta), n_cal, cal.fallback), metric_note=note)


def _sentence(cal: Calibrated, rules, L, n_cal, epsilon, delta, per_delta, method, risk, points) -> str:
    """The guarantee in one sentence: calibrate's own for one rule, else with the Bonferroni split."""
    if len(rules) == 1:
        return cal.guarantee
    split = f"{len(rules)} rules, each tested at delta / {len(rules)} = {per_delta:.3g}"
    if cal.fallback:
        return (f"No setting of any rule passed at epsilon = {epsilon:.1%} on {n_cal} calibration rows "
                f"(Learn-then-Test, {split}); use the full model (all {L} layers), which never {RISK_TEXT[risk]}.")
    title = STRATEGIES[cal.strategy].title or cal.strategy
    # both risks count every input the exit gets wrong where the full model is right, so both bound the loss
    bound = f", so it loses at most {points:g} point{'' if points == 1 else 's'} of accuracy against it"
    return (f"With probability at least {1 - delta:.0%} over the draw of the {n_cal} calibration rows, {title} at "
            f"{_describe(cal.params)} {RISK_TEXT[risk]} on at most {epsilon:.1%} of new inputs from the same "
            f"distribution{bound} (Learn-then-Test, Hoeffding-Bentkus p-values in fixed sequence per rule, {split}).")
