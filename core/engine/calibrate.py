"""Risk-controlled calibration of an exit rule's knob on held-out samples.

    calibrate(cache, strategy, *, risk="consistency", epsilon, delta=0.1, method="ltt",
              calib_fraction=0.5, seed=0, **fixed) -> Calibrated

The cache's samples are split (seeded) into a calibration part, which chooses the setting, and a test
part, which reports it. Risk is a per-sample 0/1 loss against the full model (all layers):
    consistency   the exit's prediction differs from the full model's (needs no labels)
    gap           the exit's prediction is wrong where the full model is right
The settings searched are the rule's exact candidate settings on the calibration part
(core.engine.strategies.candidate_settings), ordered from the safest (exits latest) to the most aggressive.

    method="ltt"  Learn then Test (Angelopoulos et al., 2021) as used for early exits by Jazbec et al.
                  (2024): a Hoeffding-Bentkus p-value per setting for the null "risk > epsilon", tested
                  in fixed sequence from the safest setting; the last rejected one is returned.
                  P(true risk of the returned setting <= epsilon) >= 1 - delta.
    method="crc"  Conformal risk control (Angelopoulos et al., 2022) on the per-sample loss made
                  monotone along the sequence (a sample counts as lost from the first setting on which
                  it is lost, an upper bound of its loss): the most aggressive setting with
                  (n * risk_n + 1) / (n + 1) <= epsilon. E[true risk] <= epsilon.
When no setting passes, the full model (budget exit at layer L) is returned, and the sentence says so.

`python -m core.calibrate --run R --lose-at-most 1 --delta 0.1 [--rule entropy] [--out point.json]`
answers "lose at most x points" both ways (the dev optimum and this guarantee; core.engine.goal) and
writes the guaranteed setting as an operating-point file with its guarantee (`main`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binom

from core.engine.curves import signal_events, spread
from core.engine.features import ExitFeatures, features
from core.engine.registry import STRATEGIES, resolve_params
from core.engine.strategies import apply_features, candidate_settings, exit_signal

RISKS = ("consistency", "gap")
METHODS = ("ltt", "crc")
RISK_TEXT = {"consistency": "changes the full model's prediction",
             "gap": "gets wrong an input the full model gets right"}


@dataclass
class Calibrated:
    strategy: str
    params: dict                 # apply(strategy, probs, **params)
    risk: str
    epsilon: float
    delta: float
    method: str
    calib_idx: np.ndarray
    test_idx: np.ndarray
    calib_risk: float
    test_risk: float
    test_score: float
    test_full_score: float
    test_layer_speedup: float
    guarantee: str
    fallback: bool = False       # no setting passed: the full model
    searched: int = 0            # settings in the sequence

    def summary(self) -> dict:
        """The scalar fields, for tables and JSON."""
        return {k: v for k, v in self.__dict__.items() if not isinstance(v, np.ndarray)}


def guarantee_record(cal: Calibrated) -> dict:
    """The calibration facts an operating-point file carries beside its dev-set promise (plain values:
    risk, epsilon, delta, method, held-out risk / score / speed-up, the sentence)."""
    return {k: v for k, v in cal.summary().items() if k not in ("strategy", "params")}


# ---- p-values and the two selection rules --------------------------------------------------------
def hb_pvalue(risk_hat: np.ndarray, n: int, epsilon: float) -> np.ndarray:
    """Hoeffding-Bentkus p-value of H0: risk > epsilon given the mean of n losses in [0, 1]
    (Bates et al., 2021, Prop. 3 / Angelopoulos et al., 2021, Eq. 9)."""
    r = np.asarray(risk_hat, dtype=np.float64)
    a = np.minimum(r, epsilon)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = (np.where(a > 0, a * np.log(a / epsilon), 0.0)
              + np.where(a < 1, (1 - a) * np.log((1 - a) / (1 - epsilon)), 0.0))
    hoeffding = np.exp(-n * h1)
    bentkus = math.e * binom.cdf(np.ceil(n * r - 1e-9), n, epsilon)
    return np.minimum(np.minimum(hoeffding, bentkus), 1.0)


def ltt_select(risk_hat: np.ndarray, n: int, epsilon: float, delta: float) -> int:
    """Fixed-sequence testing: index of the last setting (safest first) whose null is rejected before
    the first that is not; -1 when the first is not rejected."""
    p = hb_pvalue(risk_hat, n, epsilon)
    fail = np.nonzero(p > delta)[0]
    return (int(fail[0]) if fail.size else len(p)) - 1


def crc_select(monotone_risk: np.ndarray, n: int, epsilon: float) -> int:
    """Conformal risk control with losses in [0, 1]: the last setting with (n R + 1) / (n + 1) <= epsilon
    (the risk must not decrease along the sequence); -1 when none."""
    ok = (n * np.asarray(monotone_risk) + 1.0) / (n + 1.0) <= epsilon + 1e-12
    bad = np.nonzero(~ok)[0]
    return (int(bad[0]) if bad.size else len(ok)) - 1


# ---- per-sample losses along the sequence --------------------------------------------------------
def _loss(pred, full_pred, labels, risk):
    if risk == "consistency":
        return pred != full_pred
    return (pred != labels) & (full_pred == labels)


def _signal_risks(sig, f, idx, full_pred, labels, risk):
    """(settings, risk [J], monotone risk [J]) over the breakpoints of the samples `idx`."""
    ev = signal_events(sig, f, idx)
    full, lab = full_pred[idx], labels[idx]
    n, E = len(idx), len(ev.mm)
    new_loss = _loss(ev.new_pred, full[ev.nn], lab[ev.nn], risk)
    old_loss = _loss(ev.old_pred, full[ev.nn], lab[ev.nn], risk)
    base = _loss(ev.final, full, lab, risk)
    risk_hat = (base.sum() + np.concatenate([[0], np.cumsum(new_loss.astype(np.int64) - old_loss)])[ev.count]) / n
    # monotone: a sample is lost from the first event that makes it lost (or from the start)
    first_bad = np.full(n, E + 1, dtype=np.int64)
    bad_events = np.nonzero(new_loss)[0]
    np.minimum.at(first_bad, ev.nn[bad_events], bad_events + 1)
    first_bad[base] = 0
    lost_by = np.bincount(first_bad, minlength=E + 2).cumsum()
    settings = [{**sig.fixed, sig.knob: float(t)} for t in ev.knobs]
    return settings, risk_hat, lost_by[ev.count] / n


def _listed_risks(strategy, settings, f, idx, full_pred, labels, risk):
    losses = np.array([_loss(apply_features(strategy, f, **p)[1][idx], full_pred[idx], labels[idx], risk)
                       for p in settings])
    return settings, losses.mean(1), np.maximum.accumulate(losses, axis=0).mean(1)


def _sequence(strategy, f, fixed, idx, risk):
    """Settings safest first, their empirical risk and monotone risk on the samples `idx`."""
    full_pred, labels = f.argmax[-1], f.labels
    spec = STRATEGIES[strategy]
    fx = {k: fixed.get(k, p.default) for k, p in spec.params.items()
          if k != spec.knob and fixed.get(k, p.default) is not None}
    sig = exit_signal(strategy, f, **fx)
    if sig is not None:
        return _signal_risks(sig, f, idx, full_pred, labels, risk)
    sub = features(f.probs[idx], labels=labels[idx],
                   confidence=None if f.confidence is None else f.confidence[idx])
    if spec.signal is None:                                           # listed from the earliest exit
        settings = candidate_settings(strategy, sub)[::-1]          # exits latest first
    else:                                                             # PCEE ensemble: plain rule's breakpoints
        settings = candidate_settings(strategy, sub, **fx)
        if len(settings) > 256:
            settings = [settings[i] for i in spread(len(settings), 256)]
    return _listed_risks(strategy, settings, f, idx, full_pred, labels, risk)


# ---- checking the arguments ----------------------------------------------------------------------
def calibrated_knob(strategy: str) -> str:
    """The knob calibrate searches for `strategy` (its registry entry's swept knob)."""
    return STRATEGIES[strategy].knob


def _fraction(name: str, value, hint: str) -> float:
    """`value` as a number strictly between 0 and 1; ValueError saying what it was otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in (0, 1) ({hint}); got {value!r} of type {type(value).__name__}")
    if not 0 < value < 1:  # False for NaN too
        raise ValueError(f"{name} must lie in (0, 1) ({hint}); got {value!r}")
    return float(value)


def _check_fixed(strategy: str, fixed: dict, num_layers: int) -> None:
    """The knobs a caller fixes: known to the registry, not the searched one, of the declared type and
    range, and a patience that the model's layers can meet."""
    spec = STRATEGIES[strategy].params
    bad = set(fixed) - set(spec)
    knob = calibrated_knob(strategy)
    others = [k for k in spec if k != knob]
    may_fix = ", ".join(others) or "none"
    if bad:
        raise ValueError(f"unknown fixed knob(s) {sorted(bad)} for {strategy!r}; knobs you may fix: {may_fix}")
    if knob in fixed:
        raise ValueError(f"calibrate chooses {strategy}'s {knob} itself (it is the knob it searches); leave "
                         f"{knob}={fixed[knob]!r} out; knobs you may fix for {strategy}: {may_fix}")
    placeholder = spec[knob].default if spec[knob].default is not None else spec[knob].low
    resolve_params(strategy, {**fixed, knob: placeholder}, num_layers)   # types, choices, declared ranges
    # a knob that counts layers (PCEE: confident layers in a row; DGE: agreeing earlier layers) is
    # bounded by the model's depth (the registry's `most`)
    for name, value in fixed.items():
        if spec[name].most is not None and int(value) > spec[name].most(num_layers):
            most = spec[name].most(num_layers)
            raise ValueError(f"{strategy}.{name} = {value!r} can never be met on a {num_layers}-layer model "
                             f"({spec[name].help}); use 1..{max(most, 1)}")


# ---- the entry point -----------------------------------------------------------------------------
def calibrate(cache, strategy: str, *, risk: str = "consistency", epsilon: float, delta: float = 0.1,
              method: str = "ltt", calib_fraction: float = 0.5, seed: int = 0,
              feats: ExitFeatures | None = None, **fixed) -> Calibrated:
    """Choose `strategy`'s knob on a seeded calibration part of the cache so that its risk against the
    full model stays <= epsilon (LTT: with probability >= 1 - delta; CRC: in expectation), and report
    it on the held-out test part. `fixed` holds the other knobs (e.g. patience=2 for PCEE)."""
    if strategy not in STRATEGIES or strategy == "oracle":
        valid = ", ".join(s for s in STRATEGIES if s != "oracle")
        raise ValueError(f"cannot calibrate strategy {strategy!r}; valid: {valid}")
    if STRATEGIES[strategy].knob is None:
        raise ValueError(f"rule {strategy!r} names no knob to calibrate (its registry entry has no `knob`)")
    if risk not in RISKS:
        raise ValueError(f"unknown risk {risk!r}; valid: {', '.join(RISKS)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    epsilon = _fraction("epsilon", epsilon, "0.01 = 1% of inputs")
    delta = _fraction("delta", delta, "0.1 = 90% confidence")
    calib_fraction = _fraction("calib_fraction", calib_fraction, "0.5 = half the samples choose, half report")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    n_cal = int(round(calib_fraction * cache.N))
    if not 0 < n_cal < cache.N:
        raise ValueError(f"calib_fraction={calib_fraction!r} leaves no calibration or no test samples "
                         f"out of {cache.N}; use a value in (0, 1)")
    _check_fixed(strategy, fixed, cache.L)
    f = feats or features(cache.probs, labels=cache.labels, confidence=cache.confidence)
    perm = np.random.default_rng(seed).permutation(cache.N)
    calib_idx, test_idx = np.sort(perm[:n_cal]), np.sort(perm[n_cal:])
    settings, risk_hat, monotone = _sequence(strategy, f, fixed, calib_idx, risk)
    if not len(settings):
        j = -1
    else:
        j = (ltt_select(risk_hat, n_cal, epsilon, delta) if method == "ltt"
             else crc_select(monotone, n_cal, epsilon))
    fallback = j < 0
    name, params = ("budget", {"layer": cache.L}) if fallback else (strategy, settings[j])
    exit_layer, pred = apply_features(name, f, **params)
    full_pred = f.argmax[-1]
    from core.engine.metrics import score  # lazy: core.engine.metrics imports the engine, not the other way round

    t_pred, t_full, t_lab = pred[test_idx], full_pred[test_idx], cache.labels[test_idx]
    test_risk = float(_loss(t_pred, t_full, t_lab, risk).mean())
    title = STRATEGIES[strategy].title or strategy
    how = ("Learn-then-Test, Hoeffding-Bentkus p-values, fixed-sequence testing" if method == "ltt"
           else "conformal risk control")
    if not len(settings):  # e.g. PCEE at patience = L: it can only exit at the last layer
        given = f" at {_describe(fixed)}" if fixed else ""
        sentence = (f"{title}{given} has no setting that lets any of the {n_cal} calibration samples out before "
                    f"the last layer, so there was nothing to test; use the full model (all {cache.L} layers), "
                    f"which never {RISK_TEXT[risk]}.")
    elif fallback:
        sentence = (f"No setting of {title} passed at epsilon = {epsilon:.1%} on {n_cal} calibration samples "
                    f"({how}); use the full model (all {cache.L} layers), which never {RISK_TEXT[risk]}.")
    elif method == "ltt":
        sentence = (f"With probability at least {1 - delta:.0%} over the draw of the {n_cal} calibration samples, "
                    f"{title} at {_describe(params)} {RISK_TEXT[risk]} on at most {epsilon:.1%} of new inputs "
                    f"from the same distribution ({how}).")
    else:
        sentence = (f"On average over calibration sets of {n_cal} samples, {title} at {_describe(params)} "
                    f"{RISK_TEXT[risk]} on at most {epsilon:.1%} of new inputs from the same distribution ({how}).")
    return Calibrated(
        strategy=name, params=params, risk=risk, epsilon=float(epsilon), delta=float(delta), method=method,
        calib_idx=calib_idx, test_idx=test_idx,
        calib_risk=float(_loss(pred[calib_idx], full_pred[calib_idx], cache.labels[calib_idx], risk).mean()),
        test_risk=test_risk, test_score=score(cache.metric, t_lab, t_pred),
        test_full_score=score(cache.metric, t_lab, t_full),
        test_layer_speedup=float(cache.L / exit_layer[test_idx].mean()),
        guarantee=sentence, fallback=fallback, searched=len(settings))


def _describe(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


# ---- command line: python -m core.calibrate -------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2, from main
        raise ValueError(message)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m core.calibrate",
                 description='Answer "lose at most x points" for a run both ways: the dev-set optimum (the goal '
                             "picker) and a guarantee (Learn then Test on held-out rows), and optionally write the "
                             "guaranteed setting as an operating-point file.")
    ap.add_argument("--run", required=True, help="run folder (with cache.npz)")
    ap.add_argument("--rule", action="append", metavar="RULE",
                    help="exit rule to search (repeat, or comma-separated); default: every rule the run can deploy")
    ap.add_argument("--fixed", default="{}", metavar="JSON",
                    help='the other knobs of the one --rule, e.g. \'{"patience": 2}\'; default: the registry defaults')
    goal = ap.add_mutually_exclusive_group(required=True)
    goal.add_argument("--lose-at-most", type=float, metavar="POINTS", help="points of the score, e.g. 1")
    goal.add_argument("--epsilon", type=float, help="the same as a fraction, e.g. 0.01 (= 1 point)")
    ap.add_argument("--risk", choices=RISKS, default="gap",
                    help="gap: wrong where the full model is right (the default); consistency: differs from it")
    ap.add_argument("--delta", type=float, default=0.1, help="the guarantee fails with probability at most delta (default 0.1)")
    ap.add_argument("--method", choices=METHODS, default="ltt",
                    help="ltt: with probability 1 - delta (the default); crc: in expectation, one rule only")
    ap.add_argument("--seed", type=int, default=0, help="seed of the calibration / held-out split and the bootstrap")
    ap.add_argument("--out", help="write the guaranteed setting here as an operating-point file (.json)")
    ap.add_argument("--debug", action="store_true", help="print the traceback of an input error too")
    return ap


def _rules(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [r.strip() for v in values for r in v.split(",") if r.strip()] or None


def _fmt_answer(a, metric: str, risk: str) -> list[str]:
    w, h = a.whole, a.heldout
    wall = "" if w["wallclock_speedup"] is None else f", est. wall-clock {w['wallclock_speedup']:.2f}x"
    lines = [f"{a.how}: {a.setting}",
             (f"  dev rows ({w['rows']}): {metric} {w['score']:.4f} vs full {w['full_score']:.4f} "
              f"({-w['points_lost']:+.2f} points), layer speed-up {w['layer_speedup']:.2f}x{wall}"),
             (f"  held-out rows ({h['rows']}): {metric} {h['score']:.4f} vs full {h['full_score']:.4f} "
              f"({-h['points_lost']:+.2f} points), {risk} risk {h['risk']:.4f}, layer speed-up {h['layer_speedup']:.2f}x")]
    u = a.uncertainty
    if a.how == "dev optimum":
        if u["delta_interval"] is not None:
            lo, hi = u["delta_interval"]
            lines.append(f"  95% interval of the difference to the full model: [{100 * lo:+.2f}, {100 * hi:+.2f}] points "
                         f"({u['note']})")
        else:
            lines.append(f"  {u['note']}")
    else:
        lo, hi = u["heldout_risk_interval"]
        d = u["heldout_delta_interval"]
        diff = "" if d is None else f"; difference to the full model [{100 * d[0]:+.2f}, {100 * d[1]:+.2f}] points"
        lines.append(f"  held-out {risk} risk 95% interval [{lo:.4f}, {hi:.4f}]{diff} ({u['note']})")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except ValueError as e:
        print(f"core.calibrate: error: {e}", file=sys.stderr)
        return 2
    try:
        from core.engine.cache import ExitCache
        from core.engine.goal import lose_at_most
        from core.runs.folders import CACHE_FILE

        run = Path(args.run)
        if not (run / CACHE_FILE).is_file():
            raise ValueError(f"--run {run}: no {CACHE_FILE} there; name a run folder (e.g. checkpoints/rotten_tomatoes-joint)")
        if args.out and not Path(args.out).resolve().parent.is_dir():
            raise ValueError(f"--out: folder {Path(args.out).resolve().parent} does not exist")
        try:
            fixed = json.loads(args.fixed)
        except json.JSONDecodeError as e:
            raise ValueError(f"--fixed is not valid JSON ({e.msg}); write e.g. '{{\"patience\": 2}}'") from None
        if not isinstance(fixed, dict):
            raise ValueError("--fixed must be a JSON object, e.g. '{\"patience\": 2}'")
        points = args.lose_at_most if args.lose_at_most is not None else 100 * args.epsilon
        cache = ExitCache.load(run)
        f = features(cache.probs, labels=cache.labels, confidence=cache.confidence)
        res = lose_at_most(cache, points, delta=args.delta, strategies=_rules(args.rule), risk=args.risk,
                           method=args.method, seed=args.seed, fixed=fixed, feats=f)
        written = None
        if args.out:
            from core.engine.metrics import point_intervals
            from core.serving.export import write_point  # torch-free; the one writer of point files

            g = res.guaranteed
            pred = apply_features(g.strategy, f, **g.params)[1]
            s_int, _ = point_intervals(cache, pred, seed=args.seed)
            written = write_point(run, g.strategy, g.params, args.out, intervals={"score": (s_int.low, s_int.high)},
                                  guarantee=res.record())
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        if debug:
            traceback.print_exc()
        print(f"core.calibrate: error: {e}", file=sys.stderr)
        return 2
    cal = res.calibrated
    unit = "point" if res.points == 1 else "points"
    print(f"core.calibrate: {run.name}: lose at most {res.points:g} {unit} ({res.risk} risk <= {res.epsilon:g}, "
          f"delta {res.delta:g}, {res.method}); {cache.N} dev rows split (seed {res.seed}) into "
          f"{len(cal.calib_idx)} calibration and {len(cal.test_idx)} held-out rows; rules: {', '.join(res.rules)}")
    for line in _fmt_answer(res.dev, res.metric, res.risk) + _fmt_answer(res.guaranteed, res.metric, res.risk):
        print(line)
    print(f"guarantee: {res.guarantee}")
    print(f"why: {res.why}")
    if res.metric_note:
        print(f"note: {res.metric_note}")
    if written is not None:
        from core.serving.export import predict_command

        print(f"core.calibrate: wrote {args.out} ({written['strategy']} {json.dumps(written['params'], sort_keys=True)}); "
              f"run it with: {predict_command(args.out)}", file=sys.stderr)
    return 0
