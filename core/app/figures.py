"""Every Plotly figure of the app, with one shared layout (`LAYOUT`, `layout()`).

Figures are plotly `go.Figure`s with SVG traces (no WebGL), so they render in any browser and their
points can be clicked. The data they draw comes from core.app.rundata (`RunData` and its memo).
"""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.app.history import distinct_colors
from core.app.plain import plot_text
from core.app.rundata import RunData, describe_params, home_threshold, metric_name, sample_signals, strategy_title
from core.app.trust_views import seed_groups
from core.engine import metrics
from core.engine.curves import spread
from core.engine.omega_drift import drift_for_run
from core.engine.registry import RegistryField

if TYPE_CHECKING:
    from core.serving.playground import PlaygroundResult

COLORS = RegistryField("color")    # one colour per strategy (its registry entry), the same on every page


AXES = {
    "layer_speedup": "Layer speed-up (L / mean exit layer)",
    "saved_fraction": "Saved fraction (1 - mean exit layer / L)",
    "wallclock_speedup": "Wall-clock speed-up (estimated, batch 1)",
}

AXIS_SHORT = {"layer_speedup": "layer speed-up", "saved_fraction": "saved fraction",
              "wallclock_speedup": "wall-clock speed-up"}


# ---- figures: Explore ----------------------------------------------------------------------------
# The hot path (a slider move on Explore) builds figures as plain dicts and wraps them without plotly's
# per-property validation, which costs ~10x more than the rest of the rerun; the colours and fonts come
# from Streamlit's chart theme.
FONT = dict(family="Inter, system-ui, sans-serif", size=13)


def layout(*, top: int = 40, right: int = 10, legend: bool = True, white: bool = False, **extra) -> dict:
    """The layout every figure of the app starts from: narrow margins (`top`, `right` in px), the app's
    font, the legend in a row above the plot. `white`: plotly's white template (the Build pages'
    figures); without it the colours and fonts come from Streamlit's chart theme (Explore, Compare)."""
    out = dict(margin=dict(l=10, r=right, t=top, b=10), font=FONT)
    if legend:
        out["legend"] = dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0)
    if white:
        out["template"] = "plotly_white"
    return {**out, **extra}


def subtitle(text: str) -> str:
    """A figure title's second line: 12 px, regular weight, slate (Plotly's <sup> was too small to read)."""
    return f"<span style='font-size:12px;font-weight:normal;color:#475569'>{text}</span>"


def _fig(data: list[dict], layout: dict) -> go.Figure:
    """A go.Figure from trusted dicts, skipping plotly's (slow) validation where plotly allows it."""
    try:
        return go.Figure({"data": data, "layout": layout}, _validate=False)
    except TypeError:  # a plotly without the private switch
        return go.Figure({"data": data, "layout": layout})


def _own_front(df: pd.DataFrame, x: str) -> pd.DataFrame:
    """A strategy's own upper envelope (its Pareto points), for drawing one line per strategy."""
    return metrics.pareto(df, x=x, exclude=())


TWIN_SHARE = 0.9   # two rules whose envelopes share this share of their points draw the same curve


def twin_curves(envelopes: dict[str, pd.DataFrame], x: str) -> dict[str, str]:
    """{rule: the earlier rule whose curve it repeats}: envelopes (in drawing order) that share at least
    TWIN_SHARE of their (speed-up, score) points, e.g. Max-prob and Entropy on two classes, or PCEE at
    patience 1 and Entropy. The key names them ("PCEE = Entropy") and the later one is drawn dashed."""
    points = {s: set(zip(e[x].round(9), e["score"].round(9))) for s, e in envelopes.items() if not e.empty}
    twins, names = {}, list(points)
    for i, s in enumerate(names):
        for first in names[:i]:
            if first in twins:
                continue
            common = len(points[s] & points[first])
            if common >= TWIN_SHARE * max(len(points[s]), len(points[first])):
                twins[s] = first
                break
    return twins


def _custom(df: pd.DataFrame) -> np.ndarray:
    """customdata of swept points: [strategy, params-json, title, readable setting] (a numpy string
    array: Streamlit deep-copies figures, and copying one array is cheaper than thousands of lists)."""
    return np.array([[s, p, strategy_title(s), describe_params(json.loads(p))]
                     for s, p in zip(df["strategy"], df["params"])], dtype=str).reshape(-1, 4)


def _hover(x: str) -> str:
    return ("<b>%{customdata[2]}</b><br>%{customdata[3]}<br>score %{y:.4f}<br>"
            + AXIS_SHORT[x] + " %{x:.3f}<extra></extra>")


def _static_traces(run: RunData, strategies: tuple[str, ...], x: str, focus: str | None = None) -> list[dict]:
    """The parts of the trade-off chart that only depend on the run, the axis, the rules drawn and the open
    one (frontier, references, each rule's envelope, the open rule's every swept point): built once per
    combination."""
    # many rule combinations seen: the older half is dropped rather than grow
    return run.memo(("tradeoff", x, strategies, focus), lambda: _build_static_traces(run, strategies, x, focus),
                    limit=48)


def _build_static_traces(run: RunData, strategies: tuple[str, ...], x: str, focus: str | None) -> list[dict]:
    """Only the open rule (`focus`; every rule when None) gets its cloud of faint points, one per setting;
    the others draw their envelope with small clickable points. Each point is styled one by one in the
    browser, so a cloud per rule (hundreds of PCEE settings) made every redraw several times slower."""
    pts = run.sweeps()
    hover = _hover(x)
    data = []
    deployable = pts[pts["strategy"].isin(run.strategies)]
    front = metrics.pareto(deployable, x=x)
    if not front.empty:
        data.append(dict(type="scatter", x=front[x].to_numpy(dtype=float), y=front["score"].to_numpy(dtype=float), mode="lines",
                         name="Pareto frontier (all rules)", hoverinfo="skip",
                         line=dict(color="rgba(250,204,21,0.55)", width=12, shape="hv")))
    b = pts[pts["strategy"] == "budget"].sort_values(x)
    if not b.empty:
        data.append(dict(type="scatter", x=b[x].to_numpy(dtype=float), y=b["score"].to_numpy(dtype=float), mode="lines+markers",
                         name="Budgeted exit (static)", customdata=_custom(b), hovertemplate=hover,
                         line=dict(color=COLORS["budget"], dash="dash", width=1.5),
                         marker=dict(size=7, symbol="square", color=COLORS["budget"])))
    o = pts[pts["strategy"] == "oracle"]
    if not o.empty:
        data.append(dict(type="scatter", x=o[x].to_numpy(dtype=float), y=o["score"].to_numpy(dtype=float), mode="markers+text",
                         name="Oracle (reads labels)", text=["Oracle"], textposition="top center",
                         customdata=_custom(o), hovertemplate=hover,
                         marker=dict(size=14, symbol="star", color=COLORS["oracle"])))
    order = [s for s in run.strategies if s in strategies and s != "budget"]  # registry order: Entropy first
    envs = {s: _own_front(pts[pts["strategy"] == s], x) for s in order if (pts["strategy"] == s).any()}
    twins = twin_curves(envs, x)
    for s, env in envs.items():
        df = pts[pts["strategy"] == s]
        color = COLORS.get(s, "#334155")
        name = strategy_title(s) + (f" = {strategy_title(twins[s])}" if s in twins else "")
        # a curve repeating an earlier one: dashed, with open markers, so the one under it stays visible
        line = dict(color=color, width=2.5, dash="dash") if s in twins else dict(color=color, width=2)
        if focus is None or s == focus:
            data.append(dict(type="scatter", x=df[x].to_numpy(dtype=float), y=df["score"].to_numpy(dtype=float),
                             mode="markers", name=name, legendgroup=s, customdata=_custom(df),
                             hovertemplate=hover, marker=dict(size=7, color=color, opacity=0.35)))
            data.append(dict(type="scatter", x=env[x].to_numpy(dtype=float), y=env["score"].to_numpy(dtype=float),
                             mode="lines", legendgroup=s, showlegend=False, hoverinfo="skip", line=line))
        else:
            marker = dict(size=8, symbol="circle-open", color=color, line=dict(width=1.5)) if s in twins else \
                dict(size=4, color=color)
            data.append(dict(type="scatter", x=env[x].to_numpy(dtype=float), y=env["score"].to_numpy(dtype=float),
                             mode="lines+markers", name=name, legendgroup=s, customdata=_custom(env),
                             hovertemplate=hover, line=line, marker=marker))
    return data


BAND_POINTS = 40   # envelope points of the open rule that get a bootstrap interval (memoized per setting)


def _interval_band(run: RunData, strategy: str, x: str) -> list[dict]:
    """A shaded 95% band (paired bootstrap over dev samples) around the open rule's envelope."""
    return run.memo(("band", strategy, x), lambda: _build_interval_band(run, strategy, x))


def _build_interval_band(run: RunData, strategy: str, x: str) -> list[dict]:
    pts = run.sweeps()
    env = _own_front(pts[pts["strategy"] == strategy], x) if strategy in set(pts["strategy"]) else pts.iloc[:0]
    if len(env) > BAND_POINTS:
        env = env.iloc[spread(len(env), BAND_POINTS)]
    if env.empty or env[x].isna().all():
        return []
    ivs = [run.intervals(strategy, json.loads(p))[0] for p in env["params"]]
    xs = env[x].to_numpy(dtype=float).tolist()
    color = COLORS.get(strategy, "#334155")
    return [
        dict(type="scatter", x=xs, y=[i.low for i in ivs], mode="lines", line=dict(width=0),
             showlegend=False, hoverinfo="skip", legendgroup=strategy),
        dict(type="scatter", x=xs, y=[i.high for i in ivs], mode="lines", line=dict(width=0),
             fill="tonexty", fillcolor=_rgba(color, 0.15), name=f"{strategy_title(strategy)}: 95% interval",
             hoverinfo="skip", legendgroup=strategy)]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def tradeoff_figure(run: RunData, strategies: list[str], current: dict[str, dict], *, x: str = "layer_speedup",
                    target_x: float | None = None, best: pd.DataFrame | None = None,
                    focus: str | None = None) -> go.Figure:
    """Score against speed-up: each strategy's sweep (faint points + its envelope), the budgeted
    exits and the Oracle as references, the Pareto frontier over all strategies, the current
    settings as big markers, and the best setting per strategy at the target.

    Every swept point carries customdata [strategy, params-json, title, setting] so a click can load it.
    """
    pts = run.sweeps()
    if x not in pts or pts[x].isna().all():
        x = "layer_speedup"
    data = list(_static_traces(run, tuple(sorted(strategies)), x, focus))
    shapes = [dict(type="line", xref="paper", x0=0, x1=1, y0=run.full_score, y1=run.full_score,
                   line=dict(color="#475569", dash="dot", width=1))]
    notes = [dict(xref="paper", x=1, y=run.full_score, yanchor="top", xanchor="right", showarrow=False,
                  text=f"full model {run.full_score:.4f}", font=dict(size=11, color="#475569"))]
    if target_x is not None:
        shapes.append(dict(type="line", yref="paper", y0=0, y1=1, x0=target_x, x1=target_x,
                           line=dict(color="#64748b", dash="dot", width=1)))
        notes.append(dict(yref="paper", y=0, x=target_x, xanchor="left", yanchor="bottom", showarrow=False,
                          text=" target", font=dict(size=11, color="#64748b")))
    if focus is not None:
        data += _interval_band(run, focus, x)
    if best is not None and not best.empty:
        best = _one_per_point(best, x)
        data.append(dict(type="scatter", x=best[x].tolist(), y=best["score"].tolist(), mode="markers",
                         name="Best at target", hovertemplate=_hover(x),
                         customdata=[[s, p, t, d] for s, p, t, d in
                                     zip(best["strategy"], best["params"], best["titles"], best["setting"])],
                         marker=dict(size=15, symbol="diamond-open", color="#0f172a", line=dict(width=2)),
                         **({"error_y": dict(type="data", symmetric=False, thickness=1.5, width=4, color="#0f172a",
                                            array=(best["score_high"] - best["score"]).tolist(),
                                            arrayminus=(best["score"] - best["score_low"]).tolist())}
                            if "score_low" in best else {})))
    taken = {}  # where a current marker already sits: a second one there becomes a wider ring around it
    for s, ev in (sorted(current.items(), key=lambda kv: kv[0] != focus)):  # current settings last, on top
        xv = ev.get(x)
        if xv is None:
            continue
        big = s == focus
        spot = (round(float(xv), 9), round(float(ev["score"]), 9))
        ring = taken.get(spot, 0)
        taken[spot] = ring + 1
        size = (20 if big else 13) + 8 * ring
        data.append(dict(
            type="scatter", x=[xv], y=[ev["score"]], mode="markers", legendgroup=s, showlegend=False,
            name=f"{strategy_title(s)}: current",
            marker=dict(size=size, color=COLORS.get(s, "#334155"), symbol="circle-open" if ring else "circle",
                        line=dict(color=COLORS.get(s, "#334155") if ring else "#0f172a" if big else "white",
                                  width=3 if big or ring else 2)),
            hovertemplate=f"<b>{strategy_title(s)} (current)</b><br>{describe_params(ev['params'])}"
                          "<br>score %{y:.4f}<br>%{x:.3f}<extra></extra>"))
    lay = dict(**layout(), height=520, clickmode="event+select", hovermode="closest", dragmode="zoom",
                  shapes=shapes, annotations=notes,
                  xaxis=dict(title=dict(text=AXES[x])),
                  yaxis=dict(title=dict(text=f"{metric_name(run.metric)} on the dev set")))
    return _fig(data, lay)


def _one_per_point(best: pd.DataFrame, x: str) -> pd.DataFrame:
    """The goal table's rows with one row per (speed-up, score) point: rules whose best setting lands on the
    same point share one diamond (and one error bar), titled with all their names ("Entropy = Max-prob")."""
    spot = list(zip(best[x].round(9), best["score"].round(9)))
    titles = {}
    for k, s in zip(spot, best["strategy"]):
        titles.setdefault(k, []).append(strategy_title(s))
    keep = ~pd.Series(spot, index=best.index).duplicated().to_numpy()
    out = best[keep].copy()
    out["titles"] = [" = ".join(titles[k]) for k, kept in zip(spot, keep) if kept]
    return out


def home_figure(run: RunData, threshold: float | None = None) -> go.Figure:
    """For a newcomer: each exit's score, and where an entropy rule lets the samples out."""
    L = run.L
    threshold = home_threshold(run) if threshold is None else threshold
    ev = run.evaluate("entropy", {"threshold": threshold})
    share = np.bincount(ev["exit_layer"], minlength=L + 1)[1:] / run.cache.N
    layers = np.arange(1, L + 1)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=layers, y=share * 100, name=f"% of samples that stop here (entropy < {threshold:.2f})",
                         marker_color="rgba(37,99,235,0.35)"), secondary_y=False)
    fig.add_trace(go.Scatter(x=layers, y=run.per_exit, mode="lines+markers",
                             name=f"{metric_name(run.metric)} if every sample stopped here",
                             line=dict(color="#0f172a", width=2.5)), secondary_y=True)
    fig.update_layout(**layout(), height=340, bargap=0.3)
    fig.update_xaxes(title_text="Layer (exit)", tickmode="linear", dtick=1)
    fig.update_yaxes(title_text="% of samples", secondary_y=False)
    fig.update_yaxes(title_text=metric_name(run.metric), secondary_y=True, showgrid=False, tickformat=".2f",
                     tickmode="auto")
    return fig


def sample_figure(run: RunData, i: int, exits: pd.DataFrame) -> go.Figure:
    """Three strips over the same layer axis: the layers x classes heatmap of the probabilities, the
    per-layer signals the rules read, and where each rule lets the sample out."""
    c = run.cache
    L = run.L
    sig = sample_signals(run, i)
    layers = np.arange(1, L + 1)
    n_ex = max(len(exits), 1)
    heights = np.array([34 * c.K + 30, 230, 24 * n_ex + 30], dtype=float)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        row_heights=list(heights / heights.sum()),
                        subplot_titles=("Probabilities (✓ = label)", "Signals the rules read",
                                        "Where each rule exits"))  # short: a phone's plot is ~250 px wide
    fig.update_annotations(x=0, xanchor="left", font=dict(size=13))  # titles start at the plot's left edge
    probs = c.probs[i].T                                             # [K, L]
    fig.add_trace(go.Heatmap(
        z=probs, x=layers, y=[plot_text(n) + (" ✓" if k == c.labels[i] else "") for k, n in enumerate(c.label_names)],
        zmin=0, zmax=1, colorscale="Blues", showscale=False,
        text=np.round(probs, 2), texttemplate="%{text:.2f}" if L * c.K <= 300 else None,
        hovertemplate="layer %{x}<br>%{y}: %{z:.3f}<extra></extra>"), row=1, col=1)
    styles = {"entropy": ("#2563eb", None), "max-prob": ("#0891b2", None), "vote share": ("#db2777", None),
              "divergence to earlier (mean KD)": ("#ea580c", "dot"), "learned confidence": ("#ca8a04", "dash")}
    for col, (color, dash) in styles.items():
        if col in sig:
            fig.add_trace(go.Scatter(x=layers, y=sig[col], mode="lines+markers", name=col,
                                     line=dict(color=color, dash=dash, width=2), marker=dict(size=6)),
                          row=2, col=1)
    if not exits.empty:
        ex = exits.iloc[::-1]                                        # first rule on top
        fig.add_trace(go.Scatter(
            x=ex["exit layer"], y=ex["title"], mode="markers", showlegend=False, name="exit",
            marker=dict(symbol="diamond", size=13, color=["#16a34a" if r else "#dc2626" for r in ex["right"]],
                        line=dict(color="white", width=1)),
            customdata=np.stack([ex["setting"], np.where(ex["right"], "right", "wrong"),
                                 [plot_text(p) for p in ex["prediction"]]], axis=-1),
            hovertemplate="<b>%{y}</b> exits at layer %{x}<br>%{customdata[0]}<br>"
                          "predicts %{customdata[2]} (%{customdata[1]})<extra></extra>"), row=3, col=1)
        for layer, title in zip(ex["exit layer"], ex["title"]):
            fig.add_shape(type="line", x0=0.5, x1=layer, y0=title, y1=title, row=3, col=1,
                          line=dict(color="#cbd5e1", width=2))
    # first class on top; categorical, so label names made of digits ("0", "1") stay names, not numbers
    fig.update_yaxes(autorange="reversed", type="category", row=1, col=1)
    fig.update_yaxes(title_text="value", row=2, col=1)
    fig.update_yaxes(showgrid=False, row=3, col=1)
    fig.update_xaxes(tickmode="linear", dtick=1, range=[0.5, L + 0.5])
    fig.update_xaxes(title_text="Layer", row=3, col=1)
    fig.update_layout(**layout(), height=int(heights.sum() + 140))
    top = fig.layout.yaxis2.domain[1]
    fig.update_layout(legend=dict(orientation="v", x=1.01, xanchor="left", y=top, yanchor="top",
                                  font=dict(size=12)))
    for ann in fig.layout.annotations:
        ann.update(x=0, xanchor="left", font=dict(size=13, color="#334155"))
    return fig


def samples_scatter(df: pd.DataFrame, L: int, *, current: int | None = None, limit: int = 1500,
                    seed: int = 0) -> go.Figure:
    """Every (filtered) sample as a point: exit layer (jittered) against max-prob at its exit; the open
    sample ringed. customdata[0] is the sample's position in the cache, for click-to-open."""
    if len(df) > limit:
        df = df.sample(limit, random_state=seed)
    jitter = np.random.default_rng(seed).uniform(-0.28, 0.28, len(df))
    data = []
    for ok, name, color in ((True, "right at exit", "#16a34a"), (False, "wrong at exit", "#dc2626")):
        mask = (df["right"] == ok).to_numpy()
        d = df[mask]
        data.append(dict(
            type="scatter", x=(d["exit layer"].to_numpy() + jitter[mask]).tolist(), y=d["max-prob at exit"].tolist(),
            mode="markers", name=name,
            marker=dict(size=8, color=color, opacity=0.6, line=dict(color="white", width=0.5)),
            customdata=[[int(i), int(r), plot_text(str(t)[:90])] for i, r, t in zip(d.index, d["row"], d["text"])],
            hovertemplate="row %{customdata[1]}<br>%{customdata[2]}<br>max-prob %{y:.3f}<extra></extra>"))
    if current is not None and current in df.index:
        k = df.index.get_loc(current)
        data.append(dict(type="scatter", x=[float(df["exit layer"].iloc[k] + jitter[k])],
                         y=[float(df["max-prob at exit"].iloc[k])], mode="markers", name="open sample",
                         hoverinfo="skip", marker=dict(size=18, color="rgba(0,0,0,0)",
                                                       line=dict(color="#0f172a", width=2.5))))
    lay = dict(**layout(), height=320, clickmode="event+select", hovermode="closest",
                  xaxis=dict(title=dict(text="Exit layer (jittered)"), tickmode="linear", dtick=1, range=[0.5, L + 0.5]),
                  yaxis=dict(title=dict(text="Max-prob at exit")))
    return _fig(data, lay)


def per_exit_figure(runs: list[RunData]) -> go.Figure:
    fig = go.Figure()
    for k, r in enumerate(runs):
        color = distinct_colors(len(runs))[k]  # apart for 30 runs
        layers = np.arange(1, r.L + 1)
        best = int(r.per_exit.argmax())
        fig.add_trace(go.Scatter(x=layers, y=r.per_exit, mode="lines+markers", name=r.name,
                                 line=dict(color=color, width=2.5), legendgroup=r.name,
                                 hovertemplate=f"{r.name}<br>exit %{{x}}: %{{y:.4f}}<extra></extra>"))
        fig.add_trace(go.Scatter(x=[best + 1], y=[r.per_exit[best]], mode="markers", showlegend=False,
                                 legendgroup=r.name, hoverinfo="skip",
                                 marker=dict(symbol="star", size=14, color=color, line=dict(color="white", width=1))))
    run_metrics = sorted({r.metric for r in runs})
    fig.update_layout(**layout(), height=380, xaxis=dict(title="Exit layer", tickmode="linear", dtick=1),
                      yaxis_title=" / ".join(metric_name(m) for m in run_metrics) + " of each exit on its own")
    return fig


def strategy_across_runs_figure(runs: list[RunData], strategy: str, x: str = "layer_speedup") -> go.Figure:
    fig = go.Figure()
    for k, r in enumerate(runs):
        pts = r.sweeps()
        df = pts[pts["strategy"] == strategy]
        if df.empty or df[x].isna().all():
            continue
        env = _own_front(df, x)
        color = distinct_colors(len(runs))[k]  # apart for 30 runs
        fig.add_trace(go.Scatter(x=df[x], y=df["score"], mode="markers", legendgroup=r.name, showlegend=False,
                                 marker=dict(size=6, color=color, opacity=0.3), hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=env[x], y=env["score"], mode="lines+markers", name=r.name,
                                 legendgroup=r.name, line=dict(color=color, width=2.5), marker=dict(size=6),
                                 customdata=[describe_params(json.loads(p)) for p in env["params"]],
                                 hovertemplate=f"{r.name}<br>%{{customdata}}<br>score %{{y:.4f}}"
                                               "<br>%{x:.3f}<extra></extra>"))
    fig.update_layout(**layout(), height=380, xaxis_title=AXES[x], yaxis_title="Score on the dev set",
                      title=dict(text=strategy_title(strategy), x=0.0, y=0.98, font=dict(size=14)))
    return fig


# ---- Train: the live panel ----------------------------------------------------------------------
def exit_colors(L: int) -> list[str]:
    """One colour per exit, deep blue (exit 1) through magenta to orange (exit L): ordered and distinct."""
    from plotly.colors import sample_colorscale

    if L <= 1:
        return ["#1d4ed8"]
    return sample_colorscale("Plasma", [0.85 * m / (L - 1) for m in range(L)])


def losses_figure(df: pd.DataFrame) -> go.Figure:
    """Each exit's training loss (CE) over steps, and the total objective (dashed)."""
    fig = go.Figure()
    if not df.empty:
        total = df.drop_duplicates("step")
        colors = exit_colors(int(df["exit"].max()))
        for m, grp in df.groupby("exit"):
            fig.add_trace(go.Scatter(x=grp["step"], y=grp["exit_loss"], mode="lines+markers", name=f"exit {m}",
                                     line=dict(color=colors[m - 1], width=2), marker=dict(size=4)))
        fig.add_trace(go.Scatter(x=total["step"], y=total["loss"], mode="lines", name="objective",
                                 line=dict(color="#0f172a", width=2, dash="dash")))
    fig.update_layout(**layout(white=True), height=320, xaxis_title="Step", yaxis_title="Loss",
                      title=dict(text="Loss of each exit", x=0, y=0.98, font=dict(size=14)))
    fig.update_layout(margin=dict(l=10, r=10, t=70, b=10))
    return fig


def scores_figure(df: pd.DataFrame, metric: str | None = None) -> go.Figure:
    """Per-exit dev score after each epoch: one line per epoch (darker = later)."""
    fig = go.Figure()
    epochs = sorted(df["epoch"].dropna().unique()) if not df.empty else []
    for k, e in enumerate(epochs):
        grp = df[df["epoch"] == e]
        shade = 0.35 + 0.65 * (k + 1) / len(epochs)
        fig.add_trace(go.Scatter(x=grp["exit"], y=grp["score"], mode="lines+markers", name=f"epoch {int(e)}",
                                 line=dict(color=f"rgba(37,99,235,{shade:.2f})", width=2.5),
                                 marker=dict(size=7)))
    fig.update_layout(**layout(white=True), height=320, xaxis=dict(title="Exit layer", tickmode="linear", dtick=1),
                      yaxis_title=f"Dev {metric or 'score'}",
                      title=dict(text="Dev score of each exit, per epoch", x=0, y=0.98, font=dict(size=14)))
    fig.update_layout(margin=dict(l=10, r=10, t=70, b=10))
    return fig


def omega_heatmap(record: dict, title: str = "") -> go.Figure:
    """An Ω record as exits x terms (the Train page's latest Ω; Compare's last Ω of a run, `title` its
    name); terms an exit does not have (weight 0 by construction) are blank."""
    om = np.asarray(record["omega"], dtype=float)                      # [L, T]
    terms = record.get("terms") or [f"term {j + 1}" for j in range(om.shape[1])]
    shown = np.where(om > 0, om, np.nan)
    live = om[om > 0]
    digits = 4 if live.size and live.max() - live.min() < 0.01 else 3   # early on Ω moves in the 4th digit
    fig = go.Figure(go.Heatmap(
        z=shown, x=terms, y=[f"exit {m + 1}" for m in range(om.shape[0])], colorscale="Viridis",
        text=np.where(om > 0, np.char.mod(f"%.{digits}f", om), ""), texttemplate="%{text}" if om.size <= 200 else None,
        hovertemplate="%{y}, %{x}: %{z:.4f}<extra></extra>", colorbar=dict(thickness=10), hoverongaps=False))
    subs = [f"step {record.get('step', '?')}, epoch {record.get('epoch', '?')}; rows sum to 1"]
    if (om == 0).any():  # e.g. the diagonal: an exit does not distill from itself
        subs.append("blank: a term the exit does not have")  # its own line: a phone clipped one long line
    head = title or "Ω now: each exit's loss weights"
    extra = 18 if (om == 0).any() else 0
    fig.update_layout(**layout(top=64 + extra, white=True), height=144 + extra + 30 * om.shape[0],
                      title=dict(text=head + "".join(f"<br>{subtitle(t)}" for t in subs),
                                 x=0, font=dict(size=14)))
    fig.update_yaxes(autorange="reversed")
    return fig


def omega_frame(records: list[dict]) -> pd.DataFrame:
    """Ω records as rows (step, exit, term, weight), leaving out terms an exit never has."""
    rows = []
    for r in records:
        om = np.asarray(r["omega"], dtype=float)
        terms = r.get("terms") or [f"term {j + 1}" for j in range(om.shape[1])]
        for m in range(om.shape[0]):
            for j, t in enumerate(terms):
                rows.append({"step": r.get("step"), "exit": m + 1, "term": t, "weight": float(om[m, j])})
    df = pd.DataFrame(rows, columns=["step", "exit", "term", "weight"])
    if df.empty:
        return df
    alive = df.groupby(["exit", "term"])["weight"].transform("max") > 0
    return df[alive]


def omega_lines_figure(records: list[dict], *, cols: int = 3) -> go.Figure:
    """Ω over steps: one small panel per exit, one line per term (CE and each teacher's KD)."""
    df = omega_frame(records)
    L = int(df["exit"].max()) if not df.empty else 1
    cols = max(1, min(cols, L))
    rows = math.ceil(L / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes=True, shared_yaxes=True,
                        subplot_titles=[f"exit {m}" for m in range(1, L + 1)],
                        vertical_spacing=0.12 if rows > 1 else 0.1, horizontal_spacing=0.07)
    order = list(dict.fromkeys(t for r in records for t in (r.get("terms") or [])))
    terms = sorted(dict.fromkeys(df["term"]), key=lambda t: order.index(t) if t in order else len(order)) \
        if not df.empty else []
    colors = exit_colors(L)
    shown = set()
    for j, t in enumerate(terms):
        teacher = t.split(":")[1] if ":" in t else ""
        color = ("#0f172a" if t == "ce" else colors[int(teacher) - 1] if teacher.isdigit() and int(teacher) <= L
                 else "#64748b")
        for m in range(1, L + 1):
            grp = df[(df["exit"] == m) & (df["term"] == t)]
            if grp.empty:
                continue
            fig.add_trace(go.Scatter(x=grp["step"], y=grp["weight"], mode="lines", name=t, legendgroup=t,
                                     showlegend=t not in shown,
                                     line=dict(color=color, width=2.5 if t == "ce" else 1.6,
                                               dash=None if t == "ce" else "solid"),
                                     hovertemplate=f"exit {m}, {t}<br>step %{{x}}: %{{y:.4f}}<extra></extra>"),
                          row=(m - 1) // cols + 1, col=(m - 1) % cols + 1)
            shown.add(t)
    # a short title (the key and the caption say the rest) and at most 3 ticks per small panel: on a phone
    # a long title was clipped and the panels' step ticks ran into each other
    fig.update_layout(**layout(top=60, white=True, legend=False), height=70 + 190 * rows,
                      title=dict(text="Ω over training steps", x=0, y=0.99, font=dict(size=14)))
    fig.update_xaxes(nticks=3)
    return fig


# ---- Ω over steps against its data-free drift (Compare and Train) --------------------------------
def omega_ce_history(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(steps [S], own-CE weights [S, L]) from a run's Ω records, in step order."""
    recs = sorted((r for r in records if r.get("omega") is not None), key=lambda r: int(r.get("step") or 0))
    if not recs:
        return np.zeros(0, dtype=int), np.zeros((0, 0))
    steps = np.array([int(r.get("step") or 0) for r in recs])
    return steps, np.array([np.asarray(r["omega"], dtype=float)[:, 0] for r in recs])


def omega_steps_figure(records: list[dict], config: dict, title: str = "") -> go.Figure:
    """Own-CE weight of every exit over steps, with the data-free drift dashed (when Ω was learned)."""
    steps, ce = omega_ce_history(records)
    fig = go.Figure()
    if not len(steps):
        fig.update_layout(**layout(top=60, white=True), height=300, title=dict(text=f"{title}: no Ω records", x=0))
        return fig
    num_exits = ce.shape[1]
    colors = exit_colors(num_exits)
    try:
        drift = drift_for_run(config or {}, int(steps.max()), record=sorted(set(steps.tolist())),
                              num_exits=num_exits)
    except (TypeError, ValueError):  # a config without the fields a drift needs
        drift = None
    for m in range(num_exits):
        fig.add_trace(go.Scatter(x=steps, y=ce[:, m], mode="lines", name=f"exit {m + 1}",
                                 line=dict(color=colors[m], width=2), legendgroup=f"e{m}",
                                 hovertemplate=f"exit {m + 1}, step %{{x}}: %{{y:.4f}}<extra></extra>"))
        if drift is not None:
            fig.add_trace(go.Scatter(x=steps, y=[drift[int(s)][m, 0] for s in steps], mode="lines",
                                     name="data-free drift" if m == 0 else f"drift, exit {m + 1}",
                                     showlegend=m == 0, legendgroup="drift",
                                     line=dict(color=colors[m], width=1.5, dash="dash"),
                                     hovertemplate=f"data-free drift, exit {m + 1}, step %{{x}}: "
                                                   "%{y:.4f}<extra></extra>"))
    sub = ("dashed: the same Ω updates fed no data" if drift is not None
           else "fixed weights: nothing is learned")
    small = subtitle(sub)
    # the key goes under the chart (narrow.key_outside + legend_html): above it, it sat on this subtitle
    fig.update_layout(**layout(top=60 if title else 36, white=True, legend=False), height=340,
                      xaxis_title="training step", yaxis_title="own-CE weight in Ω",
                      title=dict(text=f"{title}<br>{small}" if title else small, x=0, font=dict(size=14)))
    fig.update_xaxes(nticks=6)
    return fig


# ---- Compare: seed groups -------------------------------------------------------------------------
def seed_figure(runs: list):
    """Last-exit score per seed group: every seed as a point, and the mean +- s.d. as a bar."""
    fig = go.Figure()
    for k, (name, members) in enumerate(seed_groups(runs).items()):
        vals = np.array([float(r.per_exit[-1]) for r in members])
        fig.add_trace(go.Scatter(x=[name] * len(vals), y=vals, mode="markers", showlegend=False,
                                 marker=dict(size=9, color="#64748b", opacity=0.7),
                                 text=[r.name for r in members], hovertemplate="%{text}: %{y:.4f}<extra></extra>"))
        if len(vals) > 1:
            fig.add_trace(go.Scatter(x=[name], y=[vals.mean()], mode="markers", showlegend=False,
                                     marker=dict(size=14, symbol="line-ew-open", color="#0f172a",
                                                 line=dict(width=3)),
                                     error_y=dict(type="data", array=[vals.std(ddof=1)], thickness=2, width=10),
                                     hovertemplate=f"{name}: mean %{{y:.4f}} +- {vals.std(ddof=1):.4f} "
                                                   f"over {len(vals)} seeds<extra></extra>"))
    fig.update_layout(**layout(top=30, legend=False), height=340, yaxis_title="Last exit score (dev set)",
                      xaxis_title="Run group (runs that differ only in seed)")
    return fig


# ---- Playground ------------------------------------------------------------------------------------
def probs_figure(res: PlaygroundResult) -> go.Figure:
    """Layers x classes heatmap of the probabilities computed before the exit (layer 1 on top); the
    exit row is outlined. The layers after the exit never ran, so they have no row."""
    m, skipped = res.exit_layer, res.L - res.exit_layer
    title = (f"Probabilities at each exit that ran<br>stopped at layer {m} of {res.L}"
             + (f" (layers {m + 1}-{res.L} skipped)" if skipped > 1 else
                f" (layer {res.L} skipped)" if skipped == 1 else " (no layer skipped)"))
    return heatmap(res.probs, res.label_names, exit_layer=m, label=res.label, title=title)


def full_figure(res: PlaygroundResult) -> go.Figure:
    """The same heatmap for the all-layers run: what every exit says, the skipped ones included."""
    return heatmap(res.full_probs, res.label_names, exit_layer=res.exit_layer, label=res.label,
                   title=f"Every exit, from the all-layers run<br>(the early exit stopped at layer {res.exit_layer})")


def heatmap(probs: np.ndarray, label_names: list[str], *, exit_layer: int | None = None, label: str = "",
            title: str = "") -> go.Figure:
    """Layers x classes probabilities, one number per cell. Everything sits inside the plot's own width
    (the exit is named on its row's tick label, no colour bar when the cells carry their numbers), so
    the cells keep their room on a 390 px phone."""
    p = np.asarray(probs)                                                   # [rows, K]
    m, k = p.shape
    numbers = m * k <= 400
    ticks = [f"layer {i}" for i in range(1, m + 1)]
    if exit_layer is not None and 1 <= exit_layer <= m:
        ticks[exit_layer - 1] = (f"<span style='color:#dc2626'><b>exit {exit_layer} → "
                                 f"{plot_text(label)}</b></span>")
    fig = go.Figure(go.Heatmap(
        z=p, x=[plot_text(n) for n in label_names], y=list(range(1, m + 1)), zmin=0, zmax=1,
        colorscale="Blues", showscale=not numbers,
        text=np.round(p, 3), texttemplate="%{text:.3f}" if numbers else None,
        hovertemplate="layer %{y}<br>%{x}: %{z:.4f}<extra></extra>", colorbar=dict(thickness=10, title="p")))
    if exit_layer is not None and 1 <= exit_layer <= m:
        r = exit_layer
        fig.add_shape(type="rect", x0=-0.5, x1=k - 0.5, y0=r - 0.5, y1=r + 0.5, line=dict(color="#dc2626", width=3))
    fig.update_layout(**layout(top=84, legend=False, white=True), height=max(200, 100 + 40 * m),
                      title=dict(text=title, x=0, y=1, yref="container", yanchor="top", pad=dict(t=18),
                                 font=dict(size=14)))  # two title lines above the class names
    fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=list(range(1, m + 1)), ticktext=ticks)
    fig.update_xaxes(type="category", side="top")  # label names made of digits stay names (the shape uses positions)
    return fig


def timing_figure(res: PlaygroundResult) -> go.Figure:
    """Two bars: median early-exit latency and median all-layers latency (batch 1)."""
    names = [f"early exit (layer {res.exit_layer})", f"all {res.L} layers"]
    vals = [res.latency_ms, res.full_ms]
    fig = go.Figure(go.Bar(x=vals, y=names, orientation="h", marker_color=["#2563eb", "#94a3b8"],
                           text=[f"{v:.2f} ms" for v in vals], textposition="auto",
                           hovertemplate="%{y}: %{x:.3f} ms<extra></extra>"))
    fig.update_layout(**layout(top=10, legend=False, white=True), height=150,
                      xaxis_title="ms (median, batch size 1)")
    fig.update_yaxes(autorange="reversed")
    return fig
