"""What the Slices page shows, and the second rule it hands to Traces: the dev samples of a run under one
exit rule, filtered and grouped by gold label, predicted class, text length, exit layer and a text
search, with per-slice metrics (core.engine.slices); and where a second rule (another rule, the same rule
at other knobs, or a rule of another run on the same dev set) decides otherwise, most different first, with
the slice that differs most. No streamlit here (core.app.appstate is the one module that imports it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from plotly.subplots import make_subplots

from core.app import rundata
from core.app.plain import plot_text
from core.engine import slices
from core.engine.metrics import diff_interval
from core.engine.registry import STRATEGIES

# the slice features, in the order the page offers them
GOLD, PRED, LENGTH, EXIT = "gold label", "predicted class", "text length", "exit layer"
FEATURES = [GOLD, PRED, LENGTH, EXIT]
WHOLE, SELECTED = "whole dev set", "all selected"
DIFFER_KINDS = {"either": "prediction or exit layer", "prediction": "prediction", "exit": "exit layer"}
VS = "t.vs"                                  # Traces' query parameters of the second rule: t.vs.rule, t.vs.run, t.vs.<rule>.<knob>


@dataclass
class Slicer:
    """One run's dev samples under one decision (exit layers and predictions): a table of the samples,
    and each slice feature as (codes [N], group names)."""
    frame: pd.DataFrame
    feats: dict
    has_texts: bool


def words(run: rundata.RunData) -> np.ndarray:
    """[N] words per sample (both texts of a pair), memoized on the run."""
    def make():
        run.texts()
        return slices.word_counts(run._texts[2])
    return run.memo(("slice-words",), make)


def slicer(run: rundata.RunData, exit_layer: np.ndarray, pred: np.ndarray) -> Slicer:
    c = run.cache
    texts, note = run.texts()
    w = words(run)
    names = np.asarray(c.label_names, dtype=object)
    feats = {GOLD: slices.categories(c.labels, c.label_names), PRED: slices.categories(pred, c.label_names),
             EXIT: slices.exit_layers(exit_layer, run.L)}
    if note is None:  # without texts there is no length to bin
        feats[LENGTH] = slices.length_bins(w)
    frame = pd.DataFrame({"row": run.row_ids(), "text": texts, "label": names[c.labels], "prediction": names[pred],
                          "words": w, "exit layer": exit_layer, "right": pred == c.labels,
                          "full model right": run.argmax[:, -1] == c.labels})
    return Slicer(frame, {k: feats[k] for k in FEATURES if k in feats}, note is None)


def select(s: Slicer, *, gold=(), predicted=(), words_range=None, layers=None, query: str = "") -> np.ndarray:
    """[N] bool: the samples every filter keeps. Empty label lists keep all; `query` is a case-insensitive
    plain substring of the text (no patterns)."""
    f = s.frame
    keep = np.ones(len(f), dtype=bool)
    if gold:
        keep &= f["label"].isin(list(gold)).to_numpy()
    if predicted:
        keep &= f["prediction"].isin(list(predicted)).to_numpy()
    if words_range is not None:
        w = f["words"].to_numpy()
        keep &= (w >= words_range[0]) & (w <= words_range[1])
    if layers is not None:
        el = f["exit layer"].to_numpy()
        keep &= (el >= layers[0]) & (el <= layers[1])
    q = (query or "").strip()
    if q:
        keep &= f["text"].str.contains(q, case=False, regex=False, na=False).to_numpy(dtype=bool)
    return keep


def slice_table(run: rundata.RunData, s: Slicer, pred: np.ndarray, keep: np.ndarray, by: str | None) -> pd.DataFrame:
    """Per-slice metrics (core.engine.slices.slice_metrics) of the rule's decision: the whole dev set, the
    selection (when it is not the whole set), and each group of `by` inside the selection."""
    c = run.cache
    exit_layer = s.frame["exit layer"].to_numpy()
    full = run.argmax[:, -1]
    N = c.N

    def table(codes, names):
        return slices.slice_metrics(c.metric, c.labels, pred, full, exit_layer, run.L, c.K, codes, names)

    parts = [table(np.zeros(N, dtype=np.int64), [WHOLE])]
    if not keep.all():
        parts.append(table(np.where(keep, 0, -1), [SELECTED]))
    if by in s.feats:
        codes, names = s.feats[by]
        groups = table(np.where(keep, codes, -1), [f"{by} = {n}" for n in names])
        if len(parts) == 2 and len(groups) == 1:  # the filter is the one group: say it once
            parts.pop()
        parts.append(groups)
    return pd.concat(parts, ignore_index=True)


def shown_slices(t: pd.DataFrame, metric_words: str) -> pd.DataFrame:
    """The slice table as the page shows it: each number with its 95% interval, as text ('no interval'
    where there is none)."""
    def iv(v, lo, hi, fmt, unit=""):
        return [f"{x:{fmt}}{unit} [{a:{fmt}}, {b:{fmt}}]" if np.isfinite(a) and np.isfinite(b) else f"{x:{fmt}}{unit} (no interval)"
                for x, a, b in zip(v, lo, hi)]
    return pd.DataFrame({
        "slice": t["slice"],
        metric_words: iv(t["score"], t["score_low"], t["score_high"], ".3f"),
        "mean exit layer": iv(t["mean_exit_layer"], t["exit_low"], t["exit_high"], ".2f"),
        "layer speed-up": iv(t["layer_speedup"], t["speedup_low"], t["speedup_high"], ".2f", "x"),
        "vs full model": iv(t["delta"], t["delta_low"], t["delta_high"], "+.3f"),
        "samples": t["n"], "lost": t["lost"], "gained": t["gained"]})


def who_pays(t: pd.DataFrame, metric_words: str) -> str | None:
    """Which group of a grouped slice table gives up the most score against the full model, and which exits
    earliest; None without two groups."""
    g = t[~t["slice"].isin([WHOLE, SELECTED])]
    if len(g) < 2:
        return None
    worst, fast = g.loc[g["delta"].idxmin()], g.loc[g["mean_exit_layer"].idxmin()]
    lost = int(g["lost"].sum())
    iv = (f" (95% interval [{worst['delta_low']:+.3f}, {worst['delta_high']:+.3f}])"
          if np.isfinite(worst["delta_low"]) else " (no interval: too few samples)")
    pays = (f"Gives up the most: {worst['slice']}, {worst['delta']:+.3f} {metric_words} against the full model{iv}, "
            f"{int(worst['lost'])} of the {lost} samples lost in these groups." if worst["delta"] < 0 else
            "No group scores below the full model at these knobs.")
    return (f"{pays} Exits earliest: {fast['slice']}, mean exit layer {fast['mean_exit_layer']:.2f} "
            f"({fast['layer_speedup']:.2f}x layer speed-up).")


# ---- where two decisions differ ------------------------------------------------------------------
@dataclass
class Arm:
    """One side of a comparison: a run, a rule, its knobs, and the decision they make."""
    run: rundata.RunData
    rule: str
    params: dict
    exit_layer: np.ndarray
    pred: np.ndarray

    @property
    def name(self) -> str:
        return f"{rundata.strategy_title(self.rule)} ({rundata.describe_params(self.params)})"


def arm(run: rundata.RunData, rule: str, params: dict) -> Arm:
    ev = run.evaluate(rule, params)
    return Arm(run, rule, params, ev["exit_layer"], ev["pred"])


def same_samples(a: rundata.RunData, b: rundata.RunData) -> str | None:
    """None when the two runs hold the same dev samples in the same order, else the sentence saying why not."""
    ca, cb = a.cache, b.cache
    if ca.N != cb.N:
        return f"Run {b.name} has {cb.N} dev samples and {a.name} {ca.N}: they were not evaluated on the same dev set."
    if not np.array_equal(ca.labels, cb.labels) or a.row_ids() != b.row_ids() or ca.label_names != cb.label_names:
        return f"Runs {a.name} and {b.name} hold other dev samples (or labels): they cannot be compared sample by sample."
    return None


def differ_mask(a: Arm, b: Arm, what: str = "either") -> np.ndarray:
    flip, moved = a.pred != b.pred, a.exit_layer != b.exit_layer
    return {"prediction": flip, "exit": moved}.get(what, flip | moved)


def difference_table(s: Slicer, a: Arm, b: Arm, what: str = "either") -> pd.DataFrame:
    """The samples where A and B differ (`what`: either, prediction, exit), most different first."""
    d = slices.differences(a.run.cache.labels, a.exit_layer, a.pred, b.exit_layer, b.pred)
    d = d[differ_mask(a, b, what)[d["pos"].to_numpy()]]
    names = np.asarray(a.run.cache.label_names, dtype=object)
    pos = d["pos"].to_numpy()
    who = np.select([d["right_a"] & d["right_b"], d["right_a"], d["right_b"]], ["both", "A", "B"], "neither")
    f = s.frame
    return pd.DataFrame({"pos": pos, "row": f["row"].to_numpy()[pos], "text": f["text"].to_numpy()[pos],
                         "label": f["label"].to_numpy()[pos], "A predicts": names[a.pred[pos]],
                         "B predicts": names[b.pred[pos]], "A exit": d["exit_a"].to_numpy(),
                         "B exit": d["exit_b"].to_numpy(), "gap": d["gap"].to_numpy(),
                         "flip": d["flip"].to_numpy(), "right": who})


def finder_features(s: Slicer) -> dict:
    """The slice finder's features: the slice features of the open rule (A)."""
    return {(f"{k} (A)" if k in (PRED, EXIT) else k): v for k, v in s.feats.items()}


def top_slices(s: Slicer, a: Arm, b: Arm, *, what: str = "either", min_size: int = 20) -> pd.DataFrame:
    return slices.find_slices(finder_features(s), differ_mask(a, b, what), min_size=min_size)


def summary(a: Arm, b: Arm) -> str:
    """One paragraph: how many samples differ and how, and A's score minus B's with its paired interval."""
    c = a.run.cache
    flip = a.pred != b.pred
    moved = a.exit_layer != b.exit_layer
    ra, rb = a.pred == c.labels, b.pred == c.labels
    iv = diff_interval(c.metric, c.labels, a.pred, b.pred)
    mean_gap = float(np.mean(b.exit_layer - a.exit_layer))
    return (f"{int((flip | moved).sum())} of {c.N} samples differ: {int(flip.sum())} change their prediction "
            f"({int((ra & ~rb).sum())} right only under A, {int((rb & ~ra).sum())} right only under B) and "
            f"{int(moved.sum())} leave at another layer (B exits {abs(mean_gap):.2f} layers "
            f"{'later' if mean_gap >= 0 else 'earlier'} on average). {rundata.metric_name(c.metric)} of A minus B: "
            f"{iv.estimate:+.4f}, 95% interval [{iv.low:+.4f}, {iv.high:+.4f}] (paired bootstrap over the "
            f"{c.N} dev samples, {iv.n_resamples:,} resamples). Layer speed-up: A {a.run.L / a.exit_layer.mean():.2f}x, "
            f"B {b.run.L / b.exit_layer.mean():.2f}x.")


def finder_sentence(top: pd.DataFrame, overall: float, min_size: int, what: str) -> str:
    if top.empty:
        return f"No slice of at least {min_size} samples: lower the minimum size."
    r = top.iloc[0]
    return (f"The slice that differs most (at least {min_size} samples): {r['slice']}: {int(r['differ'])} of "
            f"{int(r['n'])} samples ({r['rate']:.0%}, 95% Wilson interval [{r['low']:.0%}, {r['high']:.0%}]) differ "
            f"in {DIFFER_KINDS[what]}, against {overall:.0%} of all samples. It is the largest of many slices, "
            "so its rate is optimistic.")


# ---- the hand-off to Traces: the second rule in Traces' address bar ---------------------------------
def _url_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v) if v != int(v) else str(int(v))
    return str(v)


def second_rule_params(run_name: str, b: Arm) -> dict[str, str]:
    """Traces' query parameters naming B (its run only when it is another run), knobs at full precision."""
    out = {f"{VS}.rule": b.rule}
    if b.run.name != run_name:
        out[f"{VS}.run"] = b.run.name
    out.update({f"{VS}.{b.rule}.{k}": _url_value(v) for k, v in b.params.items()})
    return out


@dataclass
class SecondRule:
    run: str | None        # None: the run Traces shows
    rule: str
    values: dict           # knob -> value read from the URL (coerce with RunData.coerce_params)


def read_second_rule(query: dict) -> SecondRule | str | None:
    """B from Traces' query parameters (`query`: name -> text), None when there is none, or a sentence
    when the rule is unknown. Values are parsed, not trusted: RunData.coerce_params makes them valid."""
    rule = query.get(f"{VS}.rule")
    if rule is None:
        return None
    if rule not in STRATEGIES:
        return f"The second rule {rule!r} in the link is not a known exit rule; showing one rule."
    head = f"{VS}.{rule}."
    values = {}
    for key, text in query.items():
        if key.startswith(head):
            t = str(text).strip().lower()
            values[key[len(head):]] = True if t == "true" else False if t == "false" else str(text)
    return SecondRule(query.get(f"{VS}.run"), rule, values)


# ---- the slice chart -----------------------------------------------------------------------------------
def slice_figure(t: pd.DataFrame, metric_words: str, L: int):
    """Two panels over the slices of `slice_table`: the mean exit layer and the score, each with its 95%
    interval (where it has one). Slice names are user text: drawn as text, not Plotly markup."""
    t = t.iloc[::-1]                                              # first row on top
    y = [plot_text(s) for s in t["slice"]]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.08,
                        subplot_titles=("Mean exit layer", metric_words))
    for col, (v, lo, hi, color) in enumerate([("mean_exit_layer", "exit_low", "exit_high", "#2563eb"),
                                              ("score", "score_low", "score_high", "#16a34a")], start=1):
        val = t[v].to_numpy(dtype=float)
        fig.add_bar(x=val, y=y, orientation="h", marker_color=color, row=1, col=col, showlegend=False,
                    error_x={"type": "data", "symmetric": False, "color": "#111827",
                             "array": np.nan_to_num(t[hi].to_numpy(dtype=float) - val),
                             "arrayminus": np.nan_to_num(val - t[lo].to_numpy(dtype=float))},
                    hovertemplate="%{y}: %{x:.3f}<extra></extra>")
    fig.update_xaxes(range=[0, L], row=1, col=1)
    fig.update_xaxes(range=[0, 1] if t["score"].min() >= 0 else [-1, 1], row=1, col=2)
    fig.update_annotations(font={"size": 13})
    fig.update_layout(height=90 + 26 * len(t), margin={"l": 10, "r": 10, "t": 30, "b": 30}, bargap=0.25)
    fig.update_yaxes(automargin=True)
    return fig


# ---- Traces' side of the hand-off ----------------------------------------------------------------------
def second_arm(query: dict, run: rundata.RunData, load) -> Arm | str | None:
    """B as Traces' address bar names it (see `second_rule_params`), decided on its run; None when the link
    names none, a sentence when it cannot be shown. `load(name)` gives another run's RunData or a sentence."""
    got = read_second_rule(query)
    if got is None or isinstance(got, str):
        return got
    run_b = run
    if got.run not in (None, run.name):
        run_b = load(got.run)
        if isinstance(run_b, str):
            return f"The second rule's run {got.run} cannot be shown: {run_b}"
        why_not = same_samples(run, run_b)
        if why_not:
            return why_not
    if got.rule not in run_b.strategies:
        return f"Run {run_b.name} cannot run the second rule {rundata.strategy_title(got.rule)}."
    return arm(run_b, got.rule, run_b.coerce_params(got.rule, got.values))


def side_sentence(tag: str, a: Arm, pos: int, why_sentence: str) -> str:
    """'A: Entropy (threshold=0.33) on run R exits at layer 3 and predicts positive (right). <why>' (plain text)."""
    c = a.run.cache
    right = "right" if a.pred[pos] == c.labels[pos] else "wrong"
    return (f"{tag}: {a.name} on {a.run.name} exits at layer {int(a.exit_layer[pos])} and predicts "
            f"{c.label_names[int(a.pred[pos])]} ({right}). {why_sentence}")


def close_second_rule(query) -> None:
    """Remove B from Traces' address bar (`query`: st.query_params)."""
    for key in [k for k in query if str(k).startswith(VS + ".")]:
        del query[key]
